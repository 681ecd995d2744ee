import json
import threading
import time

import numpy as np
import pytest
import soundfile as sf

from emotion_lightning.data import array_store
from emotion_lightning.data.array_store import ArrayStore
from emotion_lightning.data.audio import AudioError, load
from emotion_lightning.data.waveform_cache import WaveformCache, cache_key
from tests.helpers.audio import tone, write_clip


def test_load_mixes_stereo_to_mono_and_resamples(tmp_path):
    left = tone("angry", 1.0, 48000, 0)
    sf.write(str(tmp_path / "stereo.wav"), np.stack([left, -left * 0.5], axis=1), 48000)
    waveform = load(tmp_path / "stereo.wav", 16000)
    assert waveform.dtype == np.float32 and waveform.shape == (16000,)
    expected = 0.25 * tone("angry", 1.0, 16000, 0)  # mean of left and -left/2 (the noise differs)
    assert np.corrcoef(waveform[100:-100], expected[100:-100])[0, 1] > 0.99


def test_real_48k_ravdess_wavs_resample_to_the_model_rate(shared_ravdess):
    originals = sorted((shared_ravdess.parent / "ravdess_wav48k").rglob("*.wav"))
    assert originals, "ravdess_wav48k holds the untouched 48 kHz WAVs"
    for path in originals:
        info = sf.info(str(path))
        assert info.samplerate == 48000
        waveform = load(path, 16000)
        assert abs(len(waveform) - info.frames / 3) <= 1
        # the shared 16 kHz FLAC of the same clip is the same recording
        flac = next(shared_ravdess.rglob(path.stem + ".flac"))
        reference = load(flac, 16000)
        n = min(len(reference), len(waveform))
        assert np.corrcoef(waveform[:n], reference[:n])[0, 1] > 0.99


def test_load_refuses_nan_samples(tmp_path):
    sf.write(str(tmp_path / "nan.wav"), np.array([0.0, np.nan, 0.1], np.float32), 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN"):
        load(tmp_path / "nan.wav", 16000)


def test_cache_returns_the_decoded_waveforms_and_records_failures(tmp_path):
    paths = [write_clip(tmp_path / f"{i}.wav", "sad", seconds=0.1 * (i + 1), sample_rate=8000, seed=i)
             for i in range(3)]
    (tmp_path / "bad.wav").write_bytes(b"RIFF0000WAVEjunk")
    names = [str(p) for p in paths] + [str(tmp_path / "bad.wav")]
    cache = WaveformCache.open_or_build(names, 16000, tmp_path / "cache")
    assert len(cache) == 4 and list(cache.failed) == [str(tmp_path / "bad.wav")]
    for i, path in enumerate(paths):
        np.testing.assert_array_equal(cache[i], load(path, 16000))
        assert len(cache[i]) == round(0.1 * (i + 1) * 16000)
    assert len(cache[3]) == 0


def test_cache_is_reused_and_a_killed_build_is_redone(tmp_path, monkeypatch):
    paths = [str(write_clip(tmp_path / "a.wav", "happy"))]
    cache = WaveformCache.open_or_build(paths, 16000, tmp_path / "cache")
    key = cache_key(paths, 16000)
    index_path = tmp_path / "cache" / "waveforms" / f"{key}.json"
    assert json.loads(index_path.read_text())["lengths"] == [len(cache[0])]

    from emotion_lightning.data import waveform_cache
    builds = []
    monkeypatch.setattr(waveform_cache, "build", lambda *args: builds.append(args))
    WaveformCache.open_or_build(paths, 16000, tmp_path / "cache")
    assert builds == []  # complete cache: opened, not rebuilt
    index_path.unlink()  # what a build killed before its last rename leaves
    with pytest.raises(Exception):
        WaveformCache.open_or_build(paths, 16000, tmp_path / "cache")  # stub build wrote nothing
    assert len(builds) == 1


def test_processes_asking_for_the_same_store_at_once_build_it_once(tmp_path):
    # DDP ranks, SLURM tasks or parallel jobs starting together on one cache dir: one builds, the others wait for it
    builds = []

    def build():
        builds.append(1)
        time.sleep(0.3)
        array_store.write(tmp_path, "k", [np.ones((3, 2), np.float32)], "float32", (2,), {})

    stores = []
    workers = [threading.Thread(target=lambda: stores.append(ArrayStore.open_or_build(tmp_path, "k", "float32", build)))
               for _ in range(3)]  # each opens its own lock file, as separate processes do
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert len(builds) == 1 and len(stores) == 3 and all(np.asarray(store[0]).sum() == 6 for store in stores)


def test_cache_key_depends_on_rate_and_file_contents(tmp_path):
    path = write_clip(tmp_path / "a.wav", "happy")
    key = cache_key([str(path)], 16000)
    assert cache_key([str(path)], 22050) != key
    write_clip(path, "sad", seconds=0.7)
    assert cache_key([str(path)], 16000) != key


def test_one_cache_for_every_spelling_of_the_same_files(tmp_path, monkeypatch):
    """`../shared/data/...`, its absolute spelling and a symlinked folder are one set of files: one cache."""
    data = tmp_path / "data"
    path = write_clip(data / "a.wav", "happy")
    (tmp_path / "link").symlink_to(data)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    spellings = [[str(path)], ["../data/a.wav"], [str(tmp_path / "link" / "a.wav")]]
    assert len({cache_key(paths, 16000) for paths in spellings}) == 1
    caches = [WaveformCache.open_or_build(paths, 16000, tmp_path / "cache") for paths in spellings]
    assert len(list((tmp_path / "cache" / "waveforms").glob("*.f32"))) == 1
    assert all(cache.paths == [str(path.resolve())] for cache in caches)
