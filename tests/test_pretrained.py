"""Pretrained speech encoders: tiny random configs for every family, the real Whisper tiny.en when present."""

import io
import logging
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from transformers import (AutoConfig, AutoModel, WhisperFeatureExtractor, WhisperForConditionalGeneration,
                          WhisperModel)
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from emotion_lightning.models.encoders import load_encoder
from emotion_lightning.models.pretrained import PretrainedEncoderClassifier
from emotion_lightning.data.taxonomy import EMOTIONS
from tests.helpers.configs import TINY
from tests.helpers.audio import tone
from tests.helpers.training import overfit_losses

SHARED_MODELS = Path(__file__).resolve().parents[2] / "shared" / "models"
@pytest.mark.parametrize("family", sorted(TINY))
def test_every_encoder_family_classifies_waveforms(family):
    torch.manual_seed(0)
    network = PretrainedEncoderClassifier(num_classes=5, config=TINY[family], clip_seconds=1.0)
    assert network(torch.randn(3, 16000)).shape == (3, 5)
    assert network.layer_weights.shape == (3,)  # embeddings + 2 layers


@pytest.mark.parametrize("family", ["wav2vec2", "whisper"])
def test_frozen_encoder_trains_only_the_layer_mix_and_head(family):
    network = PretrainedEncoderClassifier(num_classes=4, config=TINY[family], clip_seconds=1.0, freeze_encoder=True)
    trainable = {name.split(".")[0] for name, p in network.named_parameters() if p.requires_grad}
    assert trainable == {"layer_weights", "head"}
    network.train()
    assert not network.encoder.training  # frozen encoder keeps dropout off


def test_fine_tuning_updates_the_transformer_but_not_the_cnn_feature_encoder():
    network = PretrainedEncoderClassifier(num_classes=4, config=TINY["wav2vec2"], clip_seconds=1.0, freeze_encoder=False)
    network(torch.randn(2, 16000)).sum().backward()
    assert all(p.grad is None for p in network.encoder.feature_extractor.parameters())
    assert network.encoder.encoder.layers[0].attention.q_proj.weight.grad is not None


@pytest.mark.parametrize("family", ["whisper", "wav2vec2"])
def test_a_fine_tuned_layer_subset_leaves_no_trainable_parameter_without_a_gradient(family):
    # what DDP demands of every trainable parameter (else: find_unused_parameters); layers above the mix's top are
    # frozen, and with them Whisper's top layer norm, which only the last hidden state passes through
    network = PretrainedEncoderClassifier(num_classes=4, config=TINY[family], clip_seconds=1.0, freeze_encoder=False,
                                          layers=[0, 1])
    network(torch.randn(2, 16000)).sum().backward()
    without = [name for name, p in network.named_parameters() if p.requires_grad and p.grad is None]
    assert without == [] or family == "wav2vec2" and without == ["encoder.masked_spec_embed"]
    frozen = {name for name, p in network.named_parameters() if not p.requires_grad}
    assert any(".layers.1." in name for name in frozen) and not any(".layers.0." in name for name in frozen if
                                                                     "feature_extractor" not in name)
    assert ("encoder.layer_norm.weight" in frozen) == (family == "whisper")


def test_tiny_whisper_overfits_a_batch():
    torch.manual_seed(0)
    network = PretrainedEncoderClassifier(num_classes=4, config=TINY["whisper"], clip_seconds=1.0,
                                          freeze_encoder=False, dropout=0.0)
    labels = torch.arange(8) % 4  # one pitch per class: white noise alone looks alike after time pooling
    waveform = torch.stack([torch.from_numpy(tone(EMOTIONS[int(y)], 1.0, 16000, seed=i)) for i, y in enumerate(labels)])
    losses = overfit_losses(network, waveform, labels, steps=40)
    assert losses[-1] < 0.2 * losses[0]


def test_missing_checkpoint_says_how_to_provide_one(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"model.network.checkpoint=.*--local-dir DIR"):
        PretrainedEncoderClassifier(checkpoint=str(tmp_path / "wav2vec2-base"))
    with pytest.raises(ValueError, match="give checkpoint"):
        PretrainedEncoderClassifier()


@pytest.fixture(scope="module")
def whisper_tiny_en():
    path = SHARED_MODELS / "whisper-tiny.en"
    if not path.is_dir():
        pytest.skip(f"real Whisper tiny.en not found at {path}")
    return path


def test_real_whisper_front_end_matches_the_transformers_feature_extractor(whisper_tiny_en):
    network = PretrainedEncoderClassifier(checkpoint=str(whisper_tiny_en))
    waveform = np.random.default_rng(0).standard_normal(48000).astype(np.float32) * 0.1
    reference = WhisperFeatureExtractor.from_pretrained(whisper_tiny_en)._torch_extract_fbank_features(waveform[None])
    ours = network.whisper_mel(torch.from_numpy(waveform)[None]).numpy()
    np.testing.assert_allclose(ours, reference, atol=1e-5)
    assert network.encoder.embed_positions.num_embeddings == 150  # 3 s instead of the 30 s window
    assert network(torch.from_numpy(waveform)[None]).shape == (1, 8)


# ---- Whisper checkpoints load their encoder alone ----------------------------------------------------------------

def tiny_whisper_config():
    config = dict(TINY["whisper"])
    return AutoConfig.for_model(config.pop("model_type"), **config)


@contextmanager
def transformers_log():
    """What transformers logs meanwhile (its loggers do not propagate to the root logger)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logging.getLogger("transformers").addHandler(handler)
    try:
        yield stream
    finally:
        logging.getLogger("transformers").removeHandler(handler)


@pytest.mark.parametrize("kind", ["full model (model.encoder.*)", "encoder alone (WhisperEncoder)"])
def test_a_whisper_checkpoint_builds_its_encoder_alone_from_float16_storage(kind, tmp_path):
    torch.manual_seed(0)
    saved = (WhisperForConditionalGeneration(tiny_whisper_config()) if kind.startswith("full") else
             WhisperEncoder(tiny_whisper_config())).half()
    saved.save_pretrained(tmp_path)
    network = PretrainedEncoderClassifier(num_classes=4, checkpoint=str(tmp_path), clip_seconds=1.0)
    names = [name for name, _ in network.named_modules()] + [name for name, _ in network.named_parameters()]
    assert not [name for name in names if "decoder" in name]
    expected = saved.get_encoder() if kind.startswith("full") else saved
    assert network.encoder.conv1.weight.dtype == torch.float32
    assert torch.equal(network.encoder.layers[1].fc1.weight, expected.layers[1].fc1.weight.float())
    assert network(torch.randn(2, 16000)).shape == (2, 4)


def test_an_encoder_only_folder_loads_without_a_warning(tmp_path):
    # the layout of ../shared/models/whisper-base: WhisperModel's config, the encoder's weights alone, float16
    torch.manual_seed(0)
    model = WhisperModel(tiny_whisper_config())
    model.config.save_pretrained(tmp_path)
    save_file({key: value.half().contiguous() for key, value in model.state_dict().items() if key.startswith("encoder.")},
              str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    with transformers_log() as plain:
        AutoModel.from_pretrained(tmp_path)
    assert "decoder" in plain.getvalue()  # what transformers says of the decoder it initialises at random
    with transformers_log() as ours:
        encoder = load_encoder(str(tmp_path), None)
    assert ours.getvalue() == "" and isinstance(encoder, WhisperEncoder)
    assert torch.equal(encoder.layers[0].fc2.weight, model.encoder.layers[0].fc2.weight.half().float())


def test_real_whisper_base_encoder_only_folder_loads_without_a_warning():
    path = SHARED_MODELS / "whisper-base"
    if not path.is_dir():
        pytest.skip(f"real Whisper base not found at {path}")
    with transformers_log() as said:
        encoder = load_encoder(str(path), None)
    assert said.getvalue() == "" and isinstance(encoder, WhisperEncoder)
    assert (len(encoder.layers), encoder.config.d_model) == (6, 512)
    assert sum(p.numel() for p in encoder.parameters()) == 20_590_592  # the encoder's 20.6M, nothing else
