"""Pretrained speech encoders from a local folder or hub id, or random ones from a config (tests, training from
scratch). A Whisper checkpoint gives its encoder alone: the decoder is never built, initialised or kept, so an
encoder-only folder loads without a "newly initialised" warning and a full checkpoint costs no decoder memory."""

import json
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn
from transformers import AutoConfig, AutoModel
from transformers.models.whisper.modeling_whisper import WhisperEncoder
from transformers.utils import cached_file

from emotion_lightning.data.errors import MissingFileError, SettingError

# where a Whisper checkpoint keeps its encoder: WhisperForConditionalGeneration, WhisperModel (and encoder-only
# folders in its layout), a WhisperEncoder saved on its own
ENCODER_PREFIXES = ("model.encoder.", "encoder.", "")


def load_encoder(checkpoint: str | None, config: dict | None) -> nn.Module:
    """The encoder of a checkpoint (a local folder or hub id), or a random one from `config` (a dict with
    `model_type` and the sizes). Whisper: a WhisperEncoder; other families: the transformers model itself."""
    if checkpoint is None:
        if not config:
            raise SettingError("model.network: give checkpoint (a local folder or hub id) or config (model_type + sizes)")
        config = dict(config)
        config = AutoConfig.for_model(config.pop("model_type"), **config)
        return WhisperEncoder(config) if config.model_type == "whisper" else AutoModel.from_config(config)
    try:
        config = AutoConfig.from_pretrained(checkpoint)
        if config.model_type == "whisper":
            return whisper_encoder(checkpoint, config)
        return AutoModel.from_pretrained(checkpoint, dtype=torch.float32)  # some checkpoints ship float16
    except (OSError, ValueError) as error:
        where = "the folder does not exist" if not Path(checkpoint).exists() and "/" in checkpoint and \
            Path(checkpoint).is_absolute() else "it is neither a readable local folder nor reachable on the hub"
        raise MissingFileError(
            f"cannot load the pretrained encoder model.network.checkpoint={checkpoint!r}: {where} ({error}). "
            "Download it on a machine with internet (e.g. `hf download facebook/wav2vec2-base "
            "--local-dir DIR`) and set model.network.checkpoint=DIR (or EMOTION_MODELS_DIR for the defaults)."
        ) from None


def weight_files(checkpoint: str) -> list[str]:
    """The checkpoint's safetensors files (one, or the shards its index names), fetched from the hub if need be;
    none when it ships no safetensors."""
    single = cached_file(checkpoint, "model.safetensors", _raise_exceptions_for_missing_entries=False)
    if single:
        return [single]
    index = cached_file(checkpoint, "model.safetensors.index.json", _raise_exceptions_for_missing_entries=False)
    if not index:
        return []
    shards = {file for key, file in json.loads(Path(index).read_text())["weight_map"].items() if "decoder" not in key}
    return [cached_file(checkpoint, shard) for shard in sorted(shards)]


def whisper_encoder(checkpoint: str, config) -> WhisperEncoder:
    """Whisper's encoder built from `config` on the meta device (no random initialisation) and given the
    checkpoint's encoder weights alone, in float32 whatever their storage."""
    files = weight_files(checkpoint)
    if not files:  # older checkpoints ship only pytorch_model.bin: the whole model, then its encoder
        return AutoModel.from_pretrained(checkpoint, dtype=torch.float32).get_encoder()
    keys = set()
    for file in files:
        with safe_open(file, "pt") as weights:
            keys.update(weights.keys())
    prefix = next((p for p in ENCODER_PREFIXES if f"{p}conv1.weight" in keys), None)
    if prefix is None:
        raise ValueError(f"{checkpoint} holds no Whisper encoder weights (no conv1.weight under {ENCODER_PREFIXES})")
    stored: dict[str, torch.Tensor] = {}
    for file in files:
        with safe_open(file, "pt") as weights:
            stored.update({key[len(prefix):]: weights.get_tensor(key) for key in weights.keys()
                           if key.startswith(prefix) and "decoder" not in key})
    with torch.device("meta"):
        encoder = WhisperEncoder(config)
    missing = sorted(set(encoder.state_dict()) - set(stored))
    if missing:
        raise ValueError(f"{checkpoint} holds no Whisper encoder weights for {missing[:4]}")
    encoder.load_state_dict({name: stored[name] for name in encoder.state_dict()}, assign=True)
    encoder.config.dtype = torch.float32  # as from_pretrained(dtype=float32) records it (feature caches keep their keys)
    return encoder.float().eval()
