"""The fast paths: batches cut on both data paths alike, batch augmentation measured, codec variants, the frozen
encoder's feature cache (keyed, rebuilt, atomic, and giving the audio path's logits)."""

import json

import numpy as np
import pytest
import torch

from emotion_lightning.data import array_store
from emotion_lightning.data.array_store import ArrayStore
from emotion_lightning.data.corpora import Ravdess
from emotion_lightning.data.datamodule import (ClipDataset, EmotionDataModule, ResidentCropMeans, ResidentRows, StoreStack,
                                               batch_dtype)
from emotion_lightning.data.splits import SpeakerIndependentSplit
from emotion_lightning.data.taxonomy import EMOTIONS
from emotion_lightning.data.transforms import AddNoise, Chain, Codec, Gain, Resample
from emotion_lightning.models.augment import BatchAugment, Step, split_chain
from emotion_lightning.models.feature_cache import frozen_features, whisper_windows
from emotion_lightning.models.pretrained import PretrainedEncoderClassifier
from tests.helpers.audio import tone
from tests.helpers.configs import TINY, emotion_map

RATE = 16000


def datamodule(data_dir, cache_dir, **settings) -> EmotionDataModule:
    corpora = {"ravdess": Ravdess(data_dir / "ravdess", emotion_map("ravdess"))}
    module = EmotionDataModule(corpora, list(EMOTIONS), SpeakerIndependentSplit(seed=0), clip_seconds=0.5,
                               batch_size=8, cache_dir=str(cache_dir), **settings)
    module.setup()
    return module


def epoch(module: EmotionDataModule, part: str, seed: int) -> list:
    torch.manual_seed(seed)
    return list(module._loader(part))


@pytest.mark.parametrize("codec", [None, Codec("mp3", [32, 64], p=0.5)])
def test_resident_and_memory_mapped_paths_cut_the_same_batches(codec, data_dir, tmp_path):
    resident = datamodule(data_dir, tmp_path, resident=True, train_codec=codec)
    mapped = datamodule(data_dir, tmp_path, resident=False, train_codec=codec)
    for part in ("train", "val", "test"):
        first, second = epoch(resident, part, 5), epoch(mapped, part, 5)
        assert resident.datasets[part].resident is not None and mapped.datasets[part].resident is None
        assert len(first) == len(second) > 1
        for (clips, labels), (clips_again, labels_again) in zip(first, second):
            assert clips.shape == (len(labels), 8000) and torch.equal(clips, clips_again)
            assert torch.equal(labels, labels_again)
    train = epoch(resident, "train", 5)
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(train, epoch(resident, "train", 6)))  # crops follow the seed


def test_random_crops_cover_the_clip_and_evaluation_takes_the_centre(data_dir, tmp_path):
    module = datamodule(data_dir, tmp_path, resident=True)
    dataset = module.datasets["train"]
    torch.manual_seed(0)
    clip = np.asarray(dataset.stack[dataset.rows[0]])
    starts = {int(np.flatnonzero(np.isclose(clip, float(dataset[0][0][0])))[0]) for _ in range(40)}
    assert len(starts) > 10 and max(starts) <= len(clip) - 8000
    val = module.datasets["val"]
    centre = np.asarray(val.stack[val.rows[0]])
    excess = len(centre) - 8000
    np.testing.assert_array_equal(val[0][0].numpy(), centre[excess // 2: excess // 2 + 8000])


def test_codec_variants_are_real_round_trips_picked_with_their_probability(data_dir, tmp_path):
    module = datamodule(data_dir, tmp_path, resident=False, train_codec=Codec("mp3", [32, 64], p=1.0))
    dataset = module.datasets["train"]
    codec_store = dataset.stack.stores[1]
    assert len(codec_store) == 2 * len(module.cache)
    row = int(dataset.rows[0])
    clean = module.cache[row]
    for variant in (2 * row, 2 * row + 1):
        assert len(codec_store[variant]) == len(clean) and not np.array_equal(codec_store[variant], clean)
    assert (dataset.source_rows(np.arange(len(dataset))) >= len(module.cache)).all()
    dataset.variants = (2, 0.0)
    assert (dataset.source_rows(np.arange(len(dataset))) < len(module.cache)).all()


def test_the_resident_rule_and_its_settings(data_dir, tmp_path):
    module = datamodule(data_dir, tmp_path, resident="auto", resident_fraction=1e-12)
    module._loader("train")
    assert module.datasets["train"].resident is None  # 1e-12 of free memory holds nothing
    module = datamodule(data_dir, tmp_path, resident="auto")
    module._loader("train")
    assert module.datasets["train"].resident is not None  # the fixture corpus fits in a quarter of free RAM
    with pytest.raises(ValueError, match="data.num_workers=0 or data.resident=false"):
        datamodule(data_dir, tmp_path, resident=True, num_workers=2)
    with pytest.raises(ValueError, match="data.resident='sometimes'"):
        datamodule(data_dir, tmp_path, resident="sometimes")


@pytest.mark.slow
def test_both_data_paths_give_the_same_metrics(compose_train, data_dir, tmp_path):
    from emotion_lightning.train import train

    reports = []
    for resident in ("true", "false"):
        cfg = compose_train([f"paths.data_dir={data_dir}", f"paths.cache_dir={tmp_path}/cache", "trainer.max_epochs=2",
                             "logger=none", "data.batch_size=16", "audio.clip_seconds=0.5", "augment=waveform",
                             f"data.resident={resident}", f"paths.output_dir={tmp_path}/{resident}", "seed=2"])
        reports.append(train(cfg))
    volatile = {"train_seconds", "versions"}
    first, second = ({k: v for k, v in report.items() if k not in volatile} for report in reports)
    assert first == second


# ---- batch augmentation, measured on known signals -------------------------------------------------------------

def speech_batch(count=8, seconds=1.0) -> torch.Tensor:
    return torch.stack([torch.from_numpy(tone(EMOTIONS[i % 8], seconds, RATE, seed=i)) * 0.5 for i in range(count)])


def augment(*steps) -> BatchAugment:
    return BatchAugment(list(steps), RATE).train()


@pytest.mark.parametrize("kind", ["white", "pink", "babble"])
@pytest.mark.parametrize("requested", [0.0, 10.0, 25.0])
def test_batch_noise_has_the_requested_snr(kind, requested):
    torch.manual_seed(0)
    clean = speech_batch()
    noisy = augment(Step("noise", {"kind": kind, "snr_db": requested, "talkers": 3}, 1.0))(clean)
    noise = (noisy - clean).double()
    measured = 10 * torch.log10(clean.double().square().mean(1) / noise.square().mean(1))
    assert torch.allclose(measured, torch.full_like(measured, requested), atol=0.05)


def test_babble_is_made_of_the_batch_s_other_clips_and_pink_falls_with_frequency():
    torch.manual_seed(0)
    clean = speech_batch(4)
    noise = augment(Step("noise", {"kind": "babble", "snr_db": 10, "talkers": 3}, 1.0))(clean) - clean
    voices = clean / clean.square().mean(1, keepdim=True).sqrt()
    for row in range(4):  # three talkers of four clips: all the others, none of itself
        others = voices[[i for i in range(4) if i != row]].sum(0)
        assert torch.allclose(noise[row] / noise[row].norm(), others / others.norm(), atol=1e-4)
    pink = augment(Step("noise", {"kind": "pink", "snr_db": 0, "talkers": 1}, 1.0))(torch.zeros(4, 16000) + 1e-3)
    spectrum = torch.fft.rfft(pink.double()).abs().square().mean(0)
    assert spectrum[50:500].mean() > 10 * spectrum[5000:8000].mean()


@pytest.mark.parametrize("gain", [-12.0, 6.0])
def test_batch_gain_changes_level_by_the_db_and_clips_at_full_scale(gain):
    clean = speech_batch() * 0.2
    louder = augment(Step("gain", {"db": gain, "clip": True}, 1.0))(clean)
    measured = 20 * torch.log10(louder.abs().amax(1) / clean.abs().amax(1))
    assert torch.allclose(measured, torch.full_like(measured, gain), atol=1e-3)
    clipped = augment(Step("gain", {"db": 40, "clip": True}, 1.0))(clean)
    assert clipped.abs().max() == 1.0 and (clipped.abs() == 1.0).float().mean() > 0.1


def test_band_limit_removes_energy_above_the_lower_nyquist_and_keeps_the_rest():
    torch.manual_seed(0)
    white = torch.randn(4, 16000)
    limited = augment(Step("band_limit", {"sample_rate": 8000}, 1.0))(white)
    before, after = (torch.fft.rfft(x.double()).abs().square() for x in (white, limited))
    frequencies = torch.fft.rfftfreq(16000, 1 / RATE)
    assert after[:, frequencies > 4000].sum() < 1e-12 * before[:, frequencies > 4000].sum()
    assert torch.allclose(after[:, frequencies < 3900].sum(), before[:, frequencies < 3900].sum(), rtol=1e-6)


def test_batch_augmentation_follows_p_the_seed_and_training_mode():
    clean = speech_batch(64, 0.1)
    steps = augment(Step("gain", {"db": [-10, 10], "clip": True}, 0.3))
    torch.manual_seed(1)
    first = steps(clean)
    changed = (first != clean).any(1).float().mean()
    assert 0.1 < changed < 0.5
    torch.manual_seed(1)
    assert torch.equal(steps(clean), first)
    assert torch.equal(steps.eval()(clean), clean)
    with pytest.raises(ValueError, match="feature_cache.enabled=false"):
        steps.train()(torch.zeros(2, 10, 3, 4))


def test_the_waveform_chain_splits_into_batch_steps_and_the_codec():
    chain = Chain([AddNoise(["white", "babble"], [0, 25], p=0.5), Gain([-10, 10], p=0.3), Resample([8000, 11025], p=0.2),
                   Codec("mp3", [32, 64], p=0.2)])
    batch, codec = split_chain(chain, RATE)
    assert [(s.kind, s.p) for s in batch.steps] == [("noise", 0.5), ("gain", 0.3), ("band_limit", 0.2)]
    assert codec.format == "mp3" and codec.p == 0.2
    assert split_chain(Chain([]), RATE) == (None, None)
    with pytest.raises(ValueError, match="at most one Codec"):
        split_chain(Chain([Codec("mp3"), Codec("opus")]), RATE)


# ---- the frozen encoder's feature cache -------------------------------------------------------------------------

def waveform_store(tmp_path, lengths, name="w") -> ArrayStore:
    clips = [torch.from_numpy(tone(EMOTIONS[i], n / RATE, RATE, seed=i)).numpy()[:n] for i, n in enumerate(lengths)]
    array_store.write(tmp_path / name, name, clips, "float32", (), {})
    return ArrayStore.open(tmp_path / name, name)


def tiny_whisper(**settings) -> PretrainedEncoderClassifier:
    torch.manual_seed(0)
    return PretrainedEncoderClassifier(num_classes=4, config=TINY["whisper"], clip_seconds=0.5, **settings).eval()


def test_cached_features_give_the_audio_path_s_logits_for_an_uncropped_clip(tmp_path):
    network = tiny_whisper()
    waves = waveform_store(tmp_path, [8000, 5000])  # exactly one window, and a shorter clip (zero-padded)
    for dtype, tolerance in (("float32", 1e-5), ("float16", 2e-2)):
        store, frames = frozen_features(network, waves, tmp_path / "cache", dtype=dtype)
        assert frames == 25 and store.dtype == np.dtype(dtype)
        for row in range(2):
            audio = torch.nn.functional.pad(torch.from_numpy(np.asarray(waves[row])), (0, 8000 - len(waves[row])))
            with torch.no_grad():
                from_audio = network(audio[None])
                from_cache = network(torch.from_numpy(np.asarray(store[row]))[None])
            assert torch.allclose(from_cache, from_audio, atol=tolerance), (dtype, from_cache - from_audio)


def test_under_mixed_precision_the_frozen_encoder_runs_in_float32_from_the_cache_and_from_audio(tmp_path):
    # the cache's one-off pass runs in float32; under bf16-mixed (or 16-mixed) the test's audio path does too
    network = tiny_whisper()
    waves = waveform_store(tmp_path, [8000])
    store, _ = frozen_features(network, waves, tmp_path / "cache", dtype="float32")
    audio, cached = torch.from_numpy(np.asarray(waves[0]))[None], torch.from_numpy(np.asarray(store[0]))[None]
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        hidden = network.encode(audio)
        from_audio, from_cache = network(audio), network(cached)
        states = network.encoder(network.whisper_mel(audio), output_hidden_states=True).hidden_states
        under_autocast = torch.stack([states[layer] for layer in network.layers], dim=2).float()
    assert hidden.dtype == torch.float32 and torch.allclose(hidden, cached, atol=1e-5)
    assert (under_autocast - cached).abs().max() > 1e-4  # the encoder under autocast: 10x further from the cache
    # the layer mix and head run in bfloat16 on both paths (as in training), on inputs equal to 1e-5: their logits
    # agree within a step of bfloat16's rounding (8 significant bits: 2^-8 relative, twice that allowed)
    torch.testing.assert_close(from_cache, from_audio, rtol=2 ** -7, atol=1e-3)


def test_long_clips_are_encoded_in_windows_and_cropped_in_frames(tmp_path):
    assert whisper_windows(8000, 25, 320) == (25, [(0, 25)])
    assert whisper_windows(8000 + 321, 25, 320) == (27, [(0, 25), (640, 2)])  # the last window ends at the clip's end
    network = tiny_whisper(layers=[0, 2])
    waves = waveform_store(tmp_path, [8000 + 321, 20000])
    store, _frames = frozen_features(network, waves, tmp_path / "cache", dtype="float32")
    assert store[0].shape == (27, 2, 32) and store[1].shape == (63, 2, 32)
    with torch.no_grad():
        first_window = network.encode(torch.from_numpy(np.asarray(waves[1][:8000]))[None])[0]
    assert torch.allclose(torch.from_numpy(np.asarray(store[1][:25])), first_window, atol=1e-5)


def test_validation_features_are_the_audio_path_s_for_long_clips_where_whole_clip_frames_are_not(tmp_path):
    network = tiny_whisper()
    waves = waveform_store(tmp_path, [8000 + 4001, 20000, 5000])  # longer than the 0.5 s crop twice, and shorter
    whole, frames = frozen_features(network, waves, tmp_path / "cache", dtype="float32")
    centre, _ = frozen_features(network, waves, tmp_path / "cache", dtype="float32", centre_crops=True)
    rows, labels = np.arange(3), np.array([0, 1, 2])
    audio = ClipDataset(waves, rows, labels, 8000, random_crop=False).__getitems__([0, 1, 2])[0]
    with torch.no_grad():
        from_audio = network(audio)  # what test and `eval part=val` compute
        from_centre = network(ClipDataset(centre, rows, labels, frames, random_crop=False).__getitems__([0, 1, 2])[0])
        from_whole = network(ClipDataset(whole, rows, labels, frames, random_crop=False).__getitems__([0, 1, 2])[0])
    assert centre[0].shape == (frames, 3, 32) and torch.allclose(from_centre, from_audio, atol=1e-5)
    assert not torch.allclose(from_whole[:2], from_audio[:2], atol=1e-3)  # frames of the whole clip's encoding
    assert whole.index["key"] != centre.index["key"]


def test_the_feature_cache_is_reused_rebuilt_when_its_key_changes_and_never_half_written(tmp_path, monkeypatch):
    waves = waveform_store(tmp_path, [8000, 9000])
    writes = []
    real_write = array_store.write
    monkeypatch.setattr(array_store, "write", lambda *args, **kw: writes.append(args[1]) or real_write(*args, **kw))
    network = tiny_whisper()
    first, _ = frozen_features(network, waves, tmp_path / "cache")
    frozen_features(network, waves, tmp_path / "cache")
    assert len(writes) == 1  # same encoder, layers, dtype and audio: opened, not rebuilt
    frozen_features(tiny_whisper(layers=[1, 2]), waves, tmp_path / "cache")
    frozen_features(network, waves, tmp_path / "cache", dtype="float32")
    with torch.no_grad():
        network.encoder.layers[0].fc1.weight.add_(0.1)  # other weights: another checkpoint
    frozen_features(network, waves, tmp_path / "cache")
    assert len(set(writes)) == len(writes) == 4

    def dies_half_way(directory, key, rows, *args, **kw):
        def two_rows():
            yield next(iter(rows))
            raise KeyboardInterrupt  # what kill -9 leaves: no index, and no data file under the final name
        return real_write(directory, key, two_rows(), *args, **kw)

    monkeypatch.setattr(array_store, "write", dies_half_way)
    with torch.no_grad():
        network.encoder.layers[0].fc1.weight.add_(0.1)
    with pytest.raises(KeyboardInterrupt):
        frozen_features(network, waves, tmp_path / "cache")
    assert sorted(p.suffix for p in (tmp_path / "cache" / "features").iterdir()) == [".f16", ".f16", ".f16", ".f32",
                                                                                   ".json", ".json", ".json", ".json"]
    monkeypatch.setattr(array_store, "write", real_write)
    rebuilt, _ = frozen_features(network, waves, tmp_path / "cache")
    assert json.loads((tmp_path / "cache" / "features" / f"{rebuilt.index['key']}.json").read_text())["lengths"] == [25, 29]


def test_float16_frames_are_widened_on_the_cpu_and_both_paths_cut_the_same_crops(tmp_path):
    waves = waveform_store(tmp_path, [8000 + 321, 20000, 5000])
    store, frames = frozen_features(tiny_whisper(), waves, tmp_path / "cache", dtype="float16")
    rows, labels = np.arange(3), np.array([0, 1, 2])
    resident = ClipDataset(store, rows, labels, frames, random_crop=False, crops=2)
    resident.make_resident(ResidentRows(StoreStack([store]), torch.device("cpu"), tail=frames))
    mapped = ClipDataset(store, rows, labels, frames, random_crop=False, crops=2)
    (from_resident, _), (from_map, _) = resident.__getitems__([0, 1, 2]), mapped.__getitems__([0, 1, 2])
    assert from_resident.dtype == from_map.dtype == torch.float32 and from_resident.shape == (3, 2, frames, 3, 32)
    assert torch.equal(from_resident, from_map)
    np.testing.assert_array_equal(from_map[1, 1].numpy(), store[1][63 - frames:].astype(np.float32))  # the end
    np.testing.assert_array_equal(from_map[2, 1].numpy(), store[2].astype(np.float32))  # one window: both crops
    assert batch_dtype(torch.float16, torch.device("cuda")) == torch.float16  # a GPU keeps the stored width


@pytest.mark.parametrize("random_crop", [True, False])
def test_crop_means_are_each_crop_s_mean_on_both_paths_and_give_the_head_s_logits(random_crop, tmp_path):
    waves = waveform_store(tmp_path, [8000 + 321, 20000, 5000])  # two windows, three windows, shorter than a crop
    network = tiny_whisper()
    store, frames = frozen_features(network, waves, tmp_path / "cache", dtype="float16")
    rows, labels = np.arange(3), np.array([0, 1, 2])
    whole = ClipDataset(store, rows, labels, frames, random_crop=random_crop)
    mapped = ClipDataset(store, rows, labels, frames, random_crop=random_crop, crop_means=True)
    resident = ClipDataset(store, rows, labels, frames, random_crop=random_crop, crop_means=True)
    resident.make_resident(ResidentCropMeans(StoreStack([store]), torch.device("cpu")))
    batches = []
    for dataset in (whole, mapped, resident):
        torch.manual_seed(3)  # the same crop starts on every path
        batches.append(dataset.__getitems__([0, 1, 2, 1])[0])
    crops, from_map, from_resident = batches
    assert crops.shape == (4, frames, 3, 32) and from_map.shape == from_resident.shape == (4, 1, 3, 32)
    expected = crops.mean(dim=1, keepdim=True)  # padding frames of the short clip count as zeros
    assert torch.allclose(from_map, expected, atol=1e-5) and torch.allclose(from_resident, expected, atol=1e-5)
    assert not torch.allclose(from_map[2], crops[2, :1], atol=1e-3)  # a mean, not a frame
    with torch.no_grad():
        logits = network(crops)
        assert torch.allclose(network(from_resident), logits, atol=1e-5)
        assert torch.allclose(network(from_map), logits, atol=1e-5)
    with pytest.raises(ValueError, match="ResidentCropMeans"):
        whole.make_resident(ResidentCropMeans(StoreStack([store]), torch.device("cpu")))


def test_crop_means_by_hand_for_empty_short_and_long_rows(tmp_path):
    rows = [np.arange(6, dtype=np.float32).reshape(3, 2), np.zeros((0, 2), np.float32),
            np.arange(10, dtype=np.float32).reshape(5, 2) * 10]
    array_store.write(tmp_path, "rows", rows, "float32", (2,), {})
    stack = StoreStack([ArrayStore.open(tmp_path, "rows")])
    means = ResidentCropMeans(stack, torch.device("cpu"))
    crops = means.gather(np.array([0, 1, 2, 2, 2]), np.array([0, 0, 0, 1, 2]), 4)
    expected = [[(0 + 2 + 4) / 4, (1 + 3 + 5) / 4],  # 3 rows in a crop of 4: the missing row counts as zeros
                [0, 0],  # an empty row
                [(0 + 20 + 40 + 60) / 4, (10 + 30 + 50 + 70) / 4], [(20 + 40 + 60 + 80) / 4, (30 + 50 + 70 + 90) / 4],
                [(40 + 60 + 80) / 4, (50 + 70 + 90) / 4]]  # a start past the last full crop: padded again
    assert crops.shape == (5, 1, 2) and torch.allclose(crops[:, 0], torch.tensor(expected))
    with pytest.raises(ValueError, match="one crop per clip"):
        ClipDataset(stack, np.arange(3), np.zeros(3), 4, random_crop=False, crops=2, crop_means=True)


def test_the_feature_cache_refuses_what_it_cannot_serve(tmp_path):
    waves = waveform_store(tmp_path, [8000])
    with pytest.raises(ValueError, match="feature_cache.dtype='bfloat16'"):
        frozen_features(tiny_whisper(), waves, tmp_path / "cache", dtype="bfloat16")
    with pytest.raises(ValueError, match="frozen encoders only"):
        frozen_features(tiny_whisper(freeze_encoder=False), waves, tmp_path / "cache")
    with pytest.raises(ValueError, match=r"model.network.layers=\[7\]"):
        tiny_whisper(layers=[7])


def test_the_frozen_encoder_pass_runs_on_the_job_s_own_device(compose_train, monkeypatch):
    # a machine with 2 GPUs (patched torch.cuda): the one-off feature pass, before any Trainer, follows the trainer
    from types import SimpleNamespace

    from emotion_lightning.training import build
    from tests.helpers.configs import TINY_WHISPER_OVERRIDE

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    whisper = ["model=whisper", "model.network.checkpoint=null", f"model.network.config={TINY_WHISPER_OVERRIDE}",
               "audio.clip_seconds=0.5"]
    used = []

    def record(network, cache, cache_dir, device, **options):
        used.append(device)
        raise StopIteration  # the device is all this test needs

    monkeypatch.setattr(build, "frozen_features", record)
    cases = [(["trainer=cpu"], {}, "cpu"),  # trainer=cpu on a GPU machine: features from the CPU, as its test runs
             (["trainer=gpu", "trainer.devices=[1]"], {}, "cuda:1"),  # a sweep job given GPU 1, not GPU 0
             (["trainer=ddp", "trainer.accelerator=gpu"], {"LOCAL_RANK": "1"}, "cuda:1")]  # DDP rank 1's GPU
    for overrides, environment, expected in cases:
        cfg = compose_train([*whisper, *overrides])
        for name, value in environment.items():
            monkeypatch.setenv(name, value)
        with pytest.raises(StopIteration):
            build.use_feature_cache(cfg, build.build_model(cfg), datamodule=SimpleNamespace(cache=None))
        assert used[-1] == expected, overrides
