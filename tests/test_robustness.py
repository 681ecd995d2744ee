"""Robustness conditions and augmentation: each transform measured on known signals, per-clip determinism,
the config group, SpecAugment and mixup."""

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from emotion_lightning.data.corpora import Ravdess
from emotion_lightning.data.datamodule import EmotionDataModule
from emotion_lightning.data.splits import SpeakerIndependentSplit
from emotion_lightning.models.features import LogMelFrontend, SpecAugment
from emotion_lightning.models.module import EmotionClassifier
from emotion_lightning.models.cnn import SimpleCNN
from emotion_lightning.data.transforms import AddNoise, Chain, ClipContext, Codec, Gain, Resample, power, snr_db
from emotion_lightning.data.taxonomy import EMOTIONS
from tests.helpers.configs import emotion_map

RATE = 16000


def speech_like(seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    """A harmonic tone with a syllable-rate envelope and some broadband noise, peak well below full scale."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2
    harmonics = sum(np.sin(2 * np.pi * 180 * k * t) / k for k in range(1, 12))
    return (0.08 * envelope * harmonics + 0.005 * rng.standard_normal(len(t))).astype(np.float32)


def context(others=()) -> ClipContext:
    return ClipContext(RATE, lambda rng, count: [o for o in others][:count])


@pytest.mark.parametrize("kind", ["white", "pink", "babble"])
@pytest.mark.parametrize("requested", [0.0, 10.0, 25.0])
def test_added_noise_has_the_requested_snr(kind, requested):
    clip = speech_like()
    others = [speech_like(seed=s) * (s + 1) for s in range(1, 7)]
    noisy = AddNoise(kind, snr_db=requested).apply(clip, np.random.default_rng(0), context(others))
    assert noisy.shape == clip.shape and noisy.dtype == np.float32
    assert abs(snr_db(clip, noisy - clip) - requested) < 0.5


def test_pink_noise_falls_with_frequency_and_white_does_not():
    silence_free = speech_like()
    spectra = {}
    for kind in ("white", "pink"):
        noise = AddNoise(kind, 0.0).apply(silence_free, np.random.default_rng(1), context()) - silence_free
        spectrum = np.abs(np.fft.rfft(noise)) ** 2
        frequencies = np.fft.rfftfreq(len(noise), 1 / RATE)
        spectra[kind] = spectrum[(frequencies > 100) & (frequencies < 500)].mean() / \
            spectrum[(frequencies > 4000) & (frequencies < 8000)].mean()
    assert spectra["pink"] > 8 * spectra["white"]  # 1/f: ~13 dB more low than high band energy
    assert 0.5 < spectra["white"] < 2


def test_noise_on_a_silent_clip_stays_finite():
    silent = np.zeros(RATE, dtype=np.float32)
    out = AddNoise("white", 10).apply(silent, np.random.default_rng(0), context())
    assert np.isfinite(out).all() and 0 < np.abs(out).max() < 1e-3


@pytest.mark.parametrize("gain", [-20.0, 6.0, 20.0])
def test_gain_changes_rms_by_the_requested_db_before_clipping(gain):
    clip = speech_like() * 0.05  # quiet enough that +20 dB does not clip
    louder = Gain(gain).apply(clip, np.random.default_rng(0), context())
    assert 10 * np.log10(power(louder) / power(clip)) == pytest.approx(gain, abs=0.01)


def test_gain_clips_at_full_scale_like_a_recorder():
    clip = speech_like() * 2  # peak ~0.3: +20 dB drives its peaks far past full scale
    louder = Gain(20).apply(clip, np.random.default_rng(0), context())
    assert np.abs(louder).max() == pytest.approx(1.0)
    assert (np.abs(louder) >= 1.0).mean() > 0.05
    assert 10 * np.log10(power(louder) / power(clip)) < 19  # clipping holds the level down
    unclipped = Gain(20, clip=False).apply(clip, np.random.default_rng(0), context())
    assert np.abs(unclipped).max() > 2


@pytest.mark.parametrize("bitrate", [64, 128])
def test_mp3_is_a_real_lossy_round_trip_of_the_same_length(bitrate):
    codec = Codec("mp3", bitrate)
    clip = speech_like(3.0)
    encoded = codec.encode(clip, RATE, bitrate)
    assert encoded[:3] == b"ID3" or encoded[0] == 0xFF  # an MP3 stream
    measured_kbps = len(encoded) * 8 / 3.0 / 1000
    assert bitrate * 0.95 < measured_kbps < bitrate * 1.15
    decoded = codec.decode(encoded)
    assert abs(len(decoded) - len(clip)) <= 1152  # within one MP3 frame
    out = codec.apply(clip, np.random.default_rng(0), context())
    assert out.shape == clip.shape
    error = power(out - clip) / power(clip)
    assert 1e-6 < error < 0.1  # changed, yet still the same signal (aligned: no encoder delay left)


def test_lower_mp3_bitrate_loses_more_and_opus_round_trips():
    clip = speech_like(3.0)
    errors = {kbps: power(Codec("mp3", kbps).apply(clip, np.random.default_rng(0), context()) - clip)
              for kbps in (32, 128)}
    assert errors[32] > errors[128]
    opus = Codec("opus", 16).apply(clip, np.random.default_rng(0), context())
    assert opus.shape == clip.shape and power(opus - clip) > 1e-6


def test_codec_settings_outside_the_format_say_what_is_allowed():
    with pytest.raises(ValueError, match="outside what mp3 offers at 16000 Hz"):
        Codec("mp3", 320).apply(speech_like(), np.random.default_rng(0), context())
    with pytest.raises(ValueError, match="format='aac'"):
        Codec("aac")
    with pytest.raises(ValueError, match="Opus encodes only at"):
        Codec("opus", 16).apply(speech_like(), np.random.default_rng(0), ClipContext(22050, context().other_clips))


def test_resampling_removes_energy_above_the_lower_nyquist():
    noise = np.random.default_rng(0).standard_normal(2 * RATE).astype(np.float32) * 0.1
    out = Resample(8000).apply(noise, np.random.default_rng(0), context())
    assert out.shape == noise.shape
    frequencies = np.fft.rfftfreq(len(out), 1 / RATE)
    before, after = np.abs(np.fft.rfft(noise)) ** 2, np.abs(np.fft.rfft(out)) ** 2
    high, low = frequencies > 4100, frequencies < 3500
    assert after[high].sum() / before[high].sum() < 1e-4  # > 40 dB down above 4 kHz
    assert after[low].sum() / before[low].sum() == pytest.approx(1.0, abs=0.02)


def test_chain_applies_each_transform_with_its_probability():
    clip = speech_like(0.5)
    never = Chain([Gain(6, p=0.0)])
    assert np.array_equal(never(clip, np.random.default_rng(0), context()), clip)
    sometimes = Chain([Gain(6, p=0.5)])
    applied = sum(not np.array_equal(sometimes(clip, np.random.default_rng(s), context()), clip) for s in range(200))
    assert 70 < applied < 130
    assert not Chain([]) and Chain([Gain(1)])


def test_ranges_draw_a_new_value_per_clip():
    clip = speech_like(0.5) * 0.01
    gain = Gain([-10, 10])
    levels = {round(10 * np.log10(power(gain.apply(clip, np.random.default_rng(s), context())) / power(clip)), 3)
              for s in range(20)}
    assert len(levels) == 20 and all(-10 <= level <= 10 for level in levels)


def ravdess_datamodule(data_dir, cache_dir, **transforms) -> EmotionDataModule:
    corpora = {"ravdess": Ravdess(data_dir / "ravdess", emotion_map("ravdess"))}
    datamodule = EmotionDataModule(corpora, list(EMOTIONS), SpeakerIndependentSplit(seed=0), clip_seconds=0.5,
                                   cache_dir=str(cache_dir), **transforms)
    datamodule.setup()
    return datamodule


def test_test_condition_is_the_same_for_each_clip_run_to_run(data_dir, tmp_path):
    noise = Chain([AddNoise(["white", "babble"], snr_db=[0, 20])])
    clean = ravdess_datamodule(data_dir, tmp_path).datasets["test"]
    first = ravdess_datamodule(data_dir, tmp_path, test_transform=noise, test_transform_seed=0).datasets["test"]
    again = ravdess_datamodule(data_dir, tmp_path, test_transform=noise, test_transform_seed=0).datasets["test"]
    other = ravdess_datamodule(data_dir, tmp_path, test_transform=noise, test_transform_seed=1).datasets["test"]
    for index in range(len(first)):
        assert torch.equal(first[index][0], again[index][0])
        assert torch.equal(first[index][0], first[index][0])  # reading a clip twice gives the same noise
        assert not torch.equal(first[index][0], clean[index][0])
        assert not torch.equal(first[index][0], other[index][0])
        assert first[index][1] == clean[index][1]


def test_augmentation_touches_training_clips_only_and_follows_the_torch_seed(data_dir, tmp_path):
    """Codec variants reach training clips only; the batch augmentation acts in training steps only (its
    measurements are in test_throughput.py)."""
    datamodule = ravdess_datamodule(data_dir, tmp_path, train_codec=Codec("mp3", 64, p=1.0))
    clean = ravdess_datamodule(data_dir, tmp_path)
    assert torch.equal(datamodule.datasets["test"][0][0], clean.datasets["test"][0][0])
    assert torch.equal(datamodule.datasets["val"][0][0], clean.datasets["val"][0][0])
    torch.manual_seed(3)
    first = datamodule.datasets["train"][0][0]
    torch.manual_seed(3)
    assert not torch.equal(clean.datasets["train"][0][0], first)  # same crop, through MP3
    torch.manual_seed(3)
    assert torch.equal(datamodule.datasets["train"][0][0], first)
    assert not torch.equal(datamodule.datasets["train"][0][0], first)


def test_spec_augment_masks_bands_in_training_only():
    features = torch.randn(4, 1, 64, 94)
    masking = SpecAugment(freq_masks=2, freq_width=8, time_masks=2, time_width=10).train()
    torch.manual_seed(0)
    masked = masking(features)
    zeroed = (masked == 0).float().mean().item()
    assert 0 < zeroed < 0.5
    assert torch.equal(masking.eval()(features), features)
    with pytest.raises(ValueError, match="expects"):
        masking.train()(torch.randn(4, 94))


def test_training_with_spec_augment_and_mixup_still_learns():
    torch.manual_seed(0)
    model = EmotionClassifier(SimpleCNN(num_classes=4), classes=list("abcd"), frontend=LogMelFrontend(),
                              spec_augment=SpecAugment(), mixup_alpha=0.2)
    t = torch.arange(8000) / 16000
    labels = torch.arange(4).repeat(4)
    waveform = torch.sin(2 * torch.pi * 200 * (1 + labels[:, None]) * t) * 0.3 + 0.01 * torch.randn(16, 8000)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    losses = []
    for step in range(30):
        loss = model.training_step((waveform, labels), step)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5])


def test_augmentation_settings_that_cannot_apply_are_refused():
    from emotion_lightning.models.waveform_cnn import WaveformCNN
    with pytest.raises(ValueError, match="no log-mel front-end"):
        EmotionClassifier(WaveformCNN(num_classes=4), classes=list("abcd"), spec_augment=SpecAugment())
    with pytest.raises(ValueError, match="mixup_alpha"):
        EmotionClassifier(WaveformCNN(num_classes=4), classes=list("abcd"), mixup_alpha=-1)
    with pytest.raises(ValueError, match="kind="):
        AddNoise("brown")
    with pytest.raises(ValueError, match="p=2"):
        Gain(3, p=2)


def test_a_classical_model_is_tested_under_the_condition_not_on_clean_features(compose_train, data_dir, tmp_path):
    # it describes whole clips from a cache of clean waveforms: the condition used to be skipped entirely
    from emotion_lightning.training.build import build_datamodule, build_model

    results = {}
    for condition in ("clean", "noise_babble"):
        cfg = compose_train(["model=svm", f"robustness={condition}", f"paths.data_dir={data_dir}",
                             f"paths.cache_dir={tmp_path}/cache"])
        datamodule, model = build_datamodule(cfg), build_model(cfg)
        model.fit_and_test(datamodule)
        results[condition] = model.test_results
    test = datamodule.datasets["test"]
    clean, degraded = np.asarray(test.stack[test.rows[0]]), test.degraded_whole(0)
    assert len(degraded) == len(clean) and not np.allclose(degraded, clean)  # the whole clip, degraded
    np.testing.assert_array_equal(degraded, test.degraded_whole(0))  # seeded per clip
    assert results["noise_babble"]["confusion_matrix"] != results["clean"]["confusion_matrix"]


def test_train_wires_augmentation_to_training_clips_and_the_condition_to_test_clips(compose_train, data_dir, tmp_path):
    from emotion_lightning.training.build import build_datamodule, build_model
    from emotion_lightning.training.run_facts import condition_facts

    cfg = compose_train(["augment=full", "robustness=noise_babble", f"paths.data_dir={data_dir}",
                         f"paths.cache_dir={tmp_path}/cache"])
    datamodule = build_datamodule(cfg)
    model = build_model(cfg)
    test_chain = datamodule.datasets["test"].transform
    assert [step.kind for step in model.batch_augment.steps] == ["noise", "gain", "band_limit"]
    assert datamodule.train_codec.format == "mp3" and datamodule.datasets["train"].variants == (3, 0.2)
    assert datamodule.datasets["train"].transform is None
    assert [(type(t).__name__, t.kind, t.snr_db) for t in test_chain.transforms] == [("AddNoise", "babble", 10)]
    assert datamodule.datasets["val"].transform is None and datamodule.datasets["test"].transform_seed == 0
    assert condition_facts(cfg) == {"condition": "noise_babble_10dB", "snr_db": 10, "augment": "full"}
    with pytest.raises(ValueError, match="augment=waveform needs a model trained by gradient descent"):
        build_model(compose_train(["model=svm", "augment=waveform"]))
