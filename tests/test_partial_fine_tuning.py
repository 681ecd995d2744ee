"""Partial fine-tuning of Whisper from a cached layer: the lower k layers frozen and their output cached once,
epochs running the layers above it, with the audio path's results."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from emotion_lightning.data import array_store
from emotion_lightning.data.array_store import ArrayStore
from emotion_lightning.data.datamodule import ClipDataset
from emotion_lightning.data.errors import SettingError
from emotion_lightning.data.taxonomy import EMOTIONS
from emotion_lightning.models.feature_cache import frozen_features
from emotion_lightning.models.pretrained import PretrainedEncoderClassifier
from tests.helpers.audio import tone
from tests.helpers.configs import TINY, TINY_WHISPER_OVERRIDE

RATE, K = 16000, 1
THREE_LAYERS = {**TINY["whisper"], "encoder_layers": 3}  # one frozen layer below K's state, two trained above


def partial_whisper(**settings) -> PretrainedEncoderClassifier:
    torch.manual_seed(0)
    return PretrainedEncoderClassifier(num_classes=4, config=THREE_LAYERS, clip_seconds=0.5, freeze_encoder=False,
                                       frozen_layers=K, dropout=0.0, **settings).eval()


def waveform_store(tmp_path, lengths) -> ArrayStore:
    clips = [tone(EMOTIONS[i], n / RATE, RATE, seed=i)[:n] for i, n in enumerate(lengths)]
    array_store.write(tmp_path / "w", "w", clips, "float32", (), {})
    return ArrayStore.open(tmp_path / "w", "w")


def test_the_cache_holds_layer_k_s_states_as_the_encoder_computes_them(tmp_path):
    network = partial_whisper()
    waves = waveform_store(tmp_path, [8000, 20000])  # one window, and a clip encoded in three
    store, frames = frozen_features(network, waves, tmp_path / "cache", dtype="float32")
    assert network.cached_layers == [K] and network.layers == [1, 2, 3] and store[0].shape == (frames, 1, 32)
    with torch.no_grad():
        for row, clip in ((0, waves[0]), (1, waves[1][:8000])):
            own = network.encoder(network.whisper_mel(torch.from_numpy(np.asarray(clip))[None]),
                                  output_hidden_states=True).hidden_states[K][0]
            assert torch.allclose(torch.from_numpy(np.asarray(store[row][:frames, 0])), own, atol=1e-5)


def test_the_layers_above_k_give_the_encoder_s_own_hidden_states():
    network = partial_whisper()
    with torch.no_grad():
        hidden = network.encoder(network.whisper_mel(torch.randn(2, 8000)), output_hidden_states=True).hidden_states
        assert torch.allclose(network.upper(hidden[K]), torch.stack(hidden[K:], dim=2), atol=1e-5)


def test_cached_path_logits_equal_the_audio_path_s_for_an_uncropped_clip(tmp_path):
    network = partial_whisper()
    waves = waveform_store(tmp_path, [8000, 5000])  # exactly one crop, and a shorter clip (zero-padded)
    for dtype, tolerance in (("float32", 1e-5), ("float16", 2e-2)):
        store, frames = frozen_features(network, waves, tmp_path / "cache", dtype=dtype)
        clips = ClipDataset(waves, np.arange(2), np.zeros(2), 8000, random_crop=False).__getitems__([0, 1])[0]
        states = ClipDataset(store, np.arange(2), np.zeros(2), frames, random_crop=False).__getitems__([0, 1])[0]
        with torch.no_grad():
            from_audio, from_cache = network(clips), network(states)
        assert torch.allclose(from_cache, from_audio, atol=tolerance), (dtype, from_cache - from_audio)


def test_only_the_layers_above_k_the_mix_and_the_head_receive_gradients():
    network = partial_whisper().train()
    trainable = {"layer_weights", "encoder.layers.1", "encoder.layers.2", "encoder.layer_norm", "head"}
    hidden = network.encoder(network.whisper_mel(torch.randn(2, 8000)), output_hidden_states=True).hidden_states
    for inputs in (hidden[K].detach()[:, :, None], torch.randn(2, 8000)):  # the cached path and the audio path
        network.zero_grad()
        network(inputs).sum().backward()
        with_gradient = {name for name, p in network.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
        assert {re.match(r"encoder\.layers\.\d+|encoder\.\w+|\w+", name).group(0) for name in with_gradient} == trainable
        frozen = {name for name, p in network.named_parameters() if not p.requires_grad}
        assert frozen and all(name.startswith(("encoder.conv", "encoder.embed_positions", "encoder.layers.0."))
                              for name in frozen)
    assert not network.encoder.conv1.training and not network.encoder.layers[0].training  # its dropout stays off
    assert network.encoder.layers[1].training


def test_frame_masks_zero_spans_of_cached_frames_in_training_only():
    network = partial_whisper(frame_masks=2, frame_mask_width=5)
    states = torch.randn(8, 25, 32) + 3.0  # no zero frames of their own
    seen = []
    network.encoder.layers[1].register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    network.train()
    torch.manual_seed(1)
    network.upper(states)
    masked = (seen[-1] == 0).all(dim=2)  # whole frames set to 0
    assert masked.any() and masked.sum(dim=1).max() <= 10 and torch.equal(seen[-1][~masked], states[~masked])
    torch.manual_seed(1)
    network.upper(states)
    assert torch.equal(seen[-1], seen[-2])  # the masks follow the seed
    network.eval().upper(states)
    assert torch.equal(seen[-1], states)


def test_partial_settings_that_cannot_work_are_refused():
    with pytest.raises(SettingError, match="partial fine-tuning takes a Whisper"):
        PretrainedEncoderClassifier(config=TINY["wav2vec2"], freeze_encoder=False, frozen_layers=1)
    with pytest.raises(SettingError, match="freeze_encoder=false"):
        PretrainedEncoderClassifier(config=THREE_LAYERS, freeze_encoder=True, frozen_layers=1)
    with pytest.raises(SettingError, match="< 3"):
        PretrainedEncoderClassifier(config=THREE_LAYERS, freeze_encoder=False, frozen_layers=3)
    with pytest.raises(ValueError, match="caches hidden state 1 alone"):
        PretrainedEncoderClassifier(config=THREE_LAYERS, freeze_encoder=False, frozen_layers=1, layers=[0, 3])
    with pytest.raises(SettingError, match="frozen_layers too"):
        PretrainedEncoderClassifier(config=THREE_LAYERS, freeze_encoder=False, frame_masks=2)


@pytest.mark.parametrize("resident", ["true", "false"])
def test_a_partial_run_trains_from_the_cache_on_both_data_paths(resident, compose_train, data_dir, tmp_path):
    from emotion_lightning.training.build import build_datamodule, build_model, use_feature_cache

    overrides = ["model=whisper_partial", "model.network.checkpoint=null", "model.network.frozen_layers=1",
                 f"model.network.config={TINY_WHISPER_OVERRIDE}", "audio.clip_seconds=0.5", f"paths.data_dir={data_dir}",
                 f"paths.cache_dir={tmp_path}/cache", f"data.resident={resident}"]
    cfg = compose_train([*overrides, "augment=mixup"])
    datamodule = build_datamodule(cfg)
    model = build_model(cfg, datamodule)
    assert use_feature_cache(cfg, model, datamodule)
    loader = datamodule.train_dataloader()
    assert (datamodule.datasets["train"].resident is not None) == (resident == "true")
    states, labels = next(iter(loader))
    assert states.shape == (len(labels), 25, 1, 32)  # hidden state 1's frames of each crop, not their means
    model.log = lambda *args, **kwargs: None
    model.train().training_step((states, labels), 0).backward()
    assert model.network.encoder.layers[1].fc1.weight.grad is not None
    assert model.network.encoder.layers[0].fc1.weight.grad is None
    masked = compose_train([*overrides, "augment=specaugment"])  # Whisper's log-mel: never seen from the cache
    with pytest.raises(SettingError, match="model.network.frame_masks"):
        use_feature_cache(masked, build_model(masked, datamodule), datamodule)


def test_real_whisper_base_s_cached_layer_gives_the_audio_path_s_logits_from_float16_storage():
    path = Path(__file__).resolve().parents[2] / "shared" / "models" / "whisper-base"
    if not path.is_dir():
        pytest.skip(f"real Whisper base not found at {path}")
    torch.manual_seed(0)
    network = PretrainedEncoderClassifier(checkpoint=str(path), freeze_encoder=False, frozen_layers=4).eval()
    clip = torch.from_numpy(tone("angry", 3.0, RATE, seed=0))[None]  # exactly one 3 s crop
    with torch.no_grad():
        stored = network.encode(clip, network.cached_layers).half()  # what the feature cache keeps
        assert torch.allclose(network(stored.float()), network(clip), atol=1e-3)
