import os
import shutil

import numpy as np
import pytest
import soundfile as sf
from hydra.utils import instantiate
from omegaconf import OmegaConf

from emotion_lightning.data import manifest as manifest_module
from emotion_lightning.data.corpora import Ravdess, Tess
from emotion_lightning.data.manifest import COLUMNS, load_manifest
from tests.helpers.audio import make_ravdess, make_tess, write_clip
from tests.helpers.configs import emotion_map


def test_manifest_has_one_row_per_clip_with_labels_and_audio_facts(data_dir, tmp_path):
    manifest, skipped = load_manifest([Ravdess(data_dir / "ravdess", emotion_map("ravdess"))], tmp_path)
    assert list(manifest.columns) == COLUMNS
    assert len(manifest) == 8 * 15 and skipped.empty  # 8 actors x (1 neutral + 7 emotions x 2 intensities)
    assert manifest["emotion"].value_counts().to_dict() == {
        e: (8 if e == "neutral" else 16) for e in ["neutral", "calm", "happy", "sad", "angry", "fearful",
                                                   "disgust", "surprised"]}
    row = manifest[manifest["path"].str.endswith("03-01-05-02-01-01-03.wav")].iloc[0]
    assert (row.speaker, row.gender, row.emotion, row.emotion_code, row.intensity) == (
        "ravdess:03", "male", "angry", "05", "strong")
    assert (row.sample_rate, row.channels) == (16000, 1)
    assert row.duration == pytest.approx(0.6)


def test_tess_manifest_covers_every_variant_folder(data_dir, tmp_path):
    manifest, skipped = load_manifest([Tess(data_dir / "tess", emotion_map("tess"))], tmp_path)
    assert skipped.empty
    assert len(manifest) == 2 * 7 * 5
    assert set(manifest["emotion"]) == {"angry", "disgust", "fearful", "happy", "neutral", "surprised", "sad"}
    assert set(manifest["sample_rate"]) == {24414}


def test_emotions_left_out_of_the_map_are_excluded_not_skipped(data_dir, tmp_path):
    mapping = {code: emotion for code, emotion in emotion_map("ravdess").items() if emotion != "calm"}
    manifest, skipped = load_manifest([Ravdess(data_dir / "ravdess", mapping)], tmp_path)
    assert "calm" not in set(manifest["emotion"]) and len(manifest) == 8 * 13 and skipped.empty


@pytest.mark.parametrize("extension, fmt, subtype", [
    (".flac", "FLAC", None), (".ogg", "OGG", "VORBIS"), (".opus", "OGG", "OPUS"), (".mp3", "MP3", None),
])
def test_compressed_formats_are_accepted(extension, fmt, subtype, tmp_path):
    root = tmp_path / "ravdess"
    write_clip(root / "Actor_01" / f"03-01-05-01-01-01-01{extension}", "angry", seconds=1.0, sample_rate=48000,
               fmt=fmt, subtype=subtype)
    manifest, skipped = load_manifest([Ravdess(root, emotion_map("ravdess"))], tmp_path / "cache")
    assert skipped.empty and len(manifest) == 1
    assert manifest["duration"].iloc[0] == pytest.approx(1.0, abs=0.08)


def test_bad_files_are_skipped_with_reasons_and_never_stop_the_build(tmp_path):
    root = make_ravdess(tmp_path / "ravdess", actors=[1, 2])
    actor = root / "Actor_01"
    (actor / "03-01-03-01-02-01-01.wav").write_bytes(b"")
    (actor / "03-01-04-01-02-01-01.wav").write_bytes(np.random.default_rng(0).bytes(4000))
    good = actor / "03-01-03-01-01-01-01.wav"
    (actor / "03-01-05-01-02-01-01.wav").write_bytes(good.read_bytes()[:30])  # truncated header
    (actor / "notes-about-actor.wav").write_bytes(good.read_bytes())
    manifest, skipped = load_manifest([Ravdess(root, emotion_map("ravdess"))], tmp_path / "cache")
    assert len(manifest) == 2 * 15
    reasons = dict(zip(skipped["path"].map(lambda p: os.path.basename(p)), skipped["reason"]))
    assert reasons["03-01-03-01-02-01-01.wav"] == "empty file (0 bytes)"
    assert reasons["03-01-04-01-02-01-01.wav"].startswith("unreadable audio header")
    assert reasons["03-01-05-01-02-01-01.wav"].startswith("unreadable audio header")
    assert reasons["notes-about-actor.wav"].startswith("file name:")


def test_manifest_is_cached_and_rebuilt_when_files_change(tmp_path, monkeypatch):
    root = make_ravdess(tmp_path / "ravdess", actors=[1])
    corpus = Ravdess(root, emotion_map("ravdess"))
    calls = []
    real_scan = manifest_module.scan
    monkeypatch.setattr(manifest_module, "scan", lambda corpora: calls.append(1) or real_scan(corpora))
    first, _ = load_manifest([corpus], tmp_path / "cache")
    again, _ = load_manifest([corpus], tmp_path / "cache")
    assert len(calls) == 1 and again.equals(first)
    shutil.copy(root / "Actor_01" / "03-01-05-01-01-01-01.wav", root / "Actor_01" / "03-01-05-01-01-02-01.wav")
    grown, _ = load_manifest([corpus], tmp_path / "cache")
    assert len(calls) == 2 and len(grown) == len(first) + 1


def test_combined_config_keeps_the_corpus_column(data_dir, tmp_path):
    corpora = {name: instantiate(OmegaConf.load(f"conf/corpus/{name}.yaml"), root=str(data_dir / name))
               for name in ("ravdess", "crema_d", "tess")}
    manifest, _ = load_manifest(list(corpora.values()), tmp_path)
    assert manifest.groupby("corpus").size().to_dict() == {"ravdess": 120, "crema_d": 72, "tess": 70}
    assert manifest["speaker"].nunique() == 8 + 6 + 2
    crema = manifest[manifest["corpus"] == "crema_d"]
    assert set(crema["gender"]) == {"male", "female"}


def test_stereo_48k_is_probed_with_its_real_rate(tmp_path):
    root = tmp_path / "ravdess" / "Actor_01"
    root.mkdir(parents=True)
    sf.write(str(root / "03-01-05-01-01-01-01.wav"), np.zeros((48000, 2), np.float32), 48000)
    manifest, _ = load_manifest([Ravdess(tmp_path / "ravdess", emotion_map("ravdess"))], tmp_path / "cache")
    assert (manifest["sample_rate"].iloc[0], manifest["channels"].iloc[0]) == (48000, 2)
