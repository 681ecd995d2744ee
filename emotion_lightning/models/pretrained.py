"""Pretrained speech encoders from transformers (Wav2Vec2, HuBERT, WavLM, Whisper) with a pooled head.

The classifier reads every hidden layer, mixes them with learned softmax weights (lower layers carry
more prosody and speaker detail than the top one), pools over time (the mean, or attention pooling) and
classifies with a small MLP.
The encoder is frozen or fine-tuned; a Wav2Vec2-style CNN feature encoder always stays frozen.
"""

import logging
import re

import numpy as np
import torch
from torch import nn
from torchaudio.transforms import TimeMasking
from transformers import WhisperFeatureExtractor

from emotion_lightning.data.errors import SettingError
from emotion_lightning.models.encoders import load_encoder

log = logging.getLogger(__name__)


class WhisperLogMel(nn.Module):
    """Whisper's log-mel features (n_fft 400, hop 160; floor at max - 8; scaled) computed in torch, so
    they run on the model's device. Matches transformers' WhisperFeatureExtractor."""

    def __init__(self, mel_filters: np.ndarray, n_fft: int = 400, hop_length: int = 160):
        super().__init__()
        self.n_fft, self.hop_length = n_fft, hop_length
        self.register_buffer("mel_filters", torch.as_tensor(mel_filters, dtype=torch.float32), persistent=False)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=waveform.device.type, enabled=False):
            stft = torch.stft(waveform.float(), self.n_fft, self.hop_length, window=self.window, return_complex=True)
            power = (stft[..., :-1].abs() ** 2).contiguous()
            log_mel = torch.clamp(self.mel_filters.T @ power, min=1e-10).log10()
            log_mel = torch.maximum(log_mel, log_mel.amax(dim=(1, 2), keepdim=True) - 8.0)
            return (log_mel + 4.0) / 4.0


class PretrainedEncoderClassifier(nn.Module):
    """Waveform (batch, samples) -> logits, through a pretrained speech encoder.

    Whisper: its log-mel front-end is part of this module. Its encoder expects 30 s (3000 frames);
    `whisper_pad_to_30s=false` (default) truncates the positional embeddings to `clip_seconds` instead,
    about 10x less compute for 3 s clips; `true` pads every clip to 30 s as in speech recognition.

    `layers` picks the hidden states the mix reads (0 = the embeddings; default all). The input is a waveform
    batch (batch, samples), or the hidden states a feature cache stores (models/feature_cache.py), (batch, frames,
    layers, width): a frozen encoder's kept ones, so epochs then run only the mix and the head.

    Partial fine-tuning (Whisper, `freeze_encoder=false`, `frozen_layers=k`): the log-mel convolutions, positions
    and the lower k layers stay frozen; the feature cache stores hidden state k alone (batch, frames, 1, width),
    and epochs run layers k+1.., the layer mix and the head on it. The mix then reads hidden states k.. only
    (lower ones would multiply the cache, and they reach layer k anyway). In training, `frame_masks` spans of
    up to `frame_mask_width` frames of those cached states are set to 0 (time masking on the states, as SpecAugment
    does on a log-mel, which the cached path never sees).
    """

    def __init__(self, num_classes: int = 8, checkpoint: str | None = None, config: dict | None = None,
                 freeze_encoder: bool = True, clip_seconds: float = 3.0, sample_rate: int = 16000,
                 whisper_pad_to_30s: bool = False, head_hidden: int = 256, dropout: float = 0.1,
                 layers: list[int] | None = None, pooling: str = "mean", encoder_lr_scale: float = 1.0,
                 layer_decay: float = 1.0, frozen_layers: int | None = None, frame_masks: int = 0,
                 frame_mask_width: int = 10):
        super().__init__()
        if encoder_lr_scale <= 0 or not 0 < layer_decay <= 1:
            raise SettingError(f"model.network.encoder_lr_scale={encoder_lr_scale} must be > 0 and "
                               f"model.network.layer_decay={layer_decay} in (0, 1]")
        self.encoder_lr_scale, self.layer_decay = encoder_lr_scale, layer_decay
        self.log_mel_augment: nn.Module | None = None  # SpecAugment on Whisper's log-mel (fine-tuning only)
        if sample_rate != 16000:
            raise SettingError(f"pretrained speech encoders take 16 kHz audio; set audio.sample_rate=16000 (got {sample_rate})")
        model = load_encoder(checkpoint, config)
        if hasattr(model.config, "layerdrop"):
            model.config.layerdrop = 0.0  # skipped layers would drop hidden states from the layer mix
        self.is_whisper = model.config.model_type == "whisper"
        self.freeze_encoder = freeze_encoder
        if self.is_whisper:
            self.encoder = model  # the encoder alone (models/encoders.py)
            extractor = WhisperFeatureExtractor(feature_size=model.config.num_mel_bins)
            self.whisper_mel = WhisperLogMel(extractor.mel_filters, extractor.n_fft, extractor.hop_length)
            frames = 3000 if whisper_pad_to_30s else int(round(clip_seconds * sample_rate / extractor.hop_length))
            self._fit_whisper_positions(frames)
        else:
            self.encoder = model
            if hasattr(model, "freeze_feature_encoder"):
                model.freeze_feature_encoder()  # the CNN feature encoder stays as pretrained (as in the earlier project)
        if freeze_encoder:
            self.encoder.requires_grad_(False)
        available = self.encoder.config.num_hidden_layers + 1  # the embeddings plus every layer
        self.frozen_layers = self._check_partial(frozen_layers, frame_masks, available - 1)
        lowest = self.frozen_layers or 0
        self.layers = list(range(lowest, available)) if layers is None else [int(layer) for layer in layers]
        if not self.layers or any(not lowest <= layer < available for layer in self.layers):
            below = f"; model.network.frozen_layers={lowest} caches hidden state {lowest} alone" if lowest else ""
            raise ValueError(f"model.network.layers={layers}: pick hidden states among {lowest}..{available - 1} "
                             f"(0 = the embeddings{below}), or null for all")
        self._freeze_layers_above(max(self.layers))
        if self.frozen_layers is not None:
            self._freeze_layers_below(self.frozen_layers)
        # what a feature cache stores for this network: none when the whole encoder is fine-tuned
        self.cached_layers = self.layers if freeze_encoder else None if self.frozen_layers is None \
            else [self.frozen_layers]
        self.frame_masks = nn.Sequential(*[TimeMasking(frame_mask_width, iid_masks=True) for _ in range(frame_masks)])
        self.width = self.encoder.config.hidden_size if not self.is_whisper else self.encoder.config.d_model
        self.sample_rate, self.clip_samples = sample_rate, int(round(clip_seconds * sample_rate))
        if pooling not in ("mean", "attention"):
            raise SettingError(f"model.network.pooling={pooling!r}; use mean or attention")
        self.pooling = pooling
        self.layer_weights = nn.Parameter(torch.zeros(len(self.layers)))
        # attention pooling: a learned score per frame, softmax over time (frames that carry emotion weigh more)
        self.attention = nn.Sequential(nn.Linear(self.width, 128), nn.Tanh(), nn.Linear(128, 1)) \
            if pooling == "attention" else None
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.width, head_hidden), nn.GELU(),
                                  nn.Dropout(dropout), nn.Linear(head_hidden, num_classes))
        # from_pretrained returns the encoder in eval mode and Lightning keeps the modes it finds: set them here
        # (a fine-tuned encoder trains with its config's dropout, and a Wav2Vec2-family one with its own time
        # masking, mask_time_prob; a frozen one stays in eval)
        self.train()

    def _fit_whisper_positions(self, frames: int) -> None:
        """Keep the first frames/2 positional embeddings (the convolutions halve the frame rate)."""
        positions = frames // 2
        table = self.encoder.embed_positions.weight.data[:positions].clone()
        self.encoder.embed_positions = nn.Embedding(positions, table.shape[1], _weight=table)
        self.encoder.embed_positions.requires_grad_(False)
        self.encoder.config.max_source_positions = positions
        self.input_frames = 2 * positions

    def _check_partial(self, frozen_layers: int | None, frame_masks: int, depth: int) -> int | None:
        if frozen_layers is None:
            if frame_masks:
                raise SettingError("model.network.frame_masks masks the cached hidden states of partial fine-tuning; "
                                   "set model.network.frozen_layers too (or use augment=specaugment on a fine-tuned "
                                   "Whisper)")
            return None
        if not self.is_whisper or self.freeze_encoder or not 0 <= frozen_layers < depth:
            raise SettingError(f"model.network.frozen_layers={frozen_layers}: partial fine-tuning takes a Whisper "
                               f"encoder with freeze_encoder=false and 0 <= frozen_layers < {depth} (its layers); "
                               "freeze_encoder=true freezes them all")
        return int(frozen_layers)

    def augment_log_mel(self, spec_augment: nn.Module) -> None:
        """Mask Whisper's log-mel in training steps (SpecAugment). Only a fine-tuned encoder sees it: a frozen
        one's hidden states come from the feature cache of the clean clips."""
        if not self.is_whisper or self.freeze_encoder:
            raise SettingError("augment.spec_augment on a pretrained encoder masks Whisper's own log-mel, which only a "
                               "fine-tuned Whisper sees (model=whisper_finetune); a frozen encoder reads its feature "
                               "cache: use augment=mixup or augment=none")
        self.log_mel_augment = spec_augment

    def _layer_stack(self) -> tuple[str, int, str | None]:
        """The encoder's transformer layers: (their ModuleList's name, how many, the prefix of a layer norm applied
        on top of the last one, or None). The norm follows the layers in Whisper and in "stable layer norm" (large)
        wav2vec 2.0 models; the base Wav2Vec2/HuBERT/WavLM encoders apply it before the first layer."""
        stack = next(name for name, module in self.encoder.named_modules()
                     if name.split(".")[-1] == "layers" and isinstance(module, nn.ModuleList))
        on_top = self.is_whisper or getattr(self.encoder.config, "do_stable_layer_norm", False)
        return stack, len(self.encoder.get_submodule(stack)), f"{stack[:-len('layers')]}layer_norm." if on_top else None

    def _freeze_layers_above(self, top: int) -> None:
        """Hidden state k is layer k's input: when the mix reads none above `top`, layers `top`.. (and a norm on top)
        never reach the loss. Frozen, they take no optimizer state, and DDP, which needs a gradient for every
        trainable parameter, runs without find_unused_parameters (the encoder still computes them: truncating it
        would move Whisper's top layer norm onto a lower state)."""
        stack, depth, top_norm = self._layer_stack()
        if top >= depth:
            return
        for name, parameter in self.encoder.named_parameters():
            index = re.match(rf"{re.escape(stack)}\.(\d+)\.", name)
            if (index and int(index.group(1)) >= top) or (top_norm and name.startswith(top_norm)):
                parameter.requires_grad_(False)

    def _freeze_layers_below(self, lowest: int) -> None:
        """Partial fine-tuning: the convolutions, positions and layers below `lowest` stay as pretrained."""
        stack, _depth, top_norm = self._layer_stack()
        for name, parameter in self.encoder.named_parameters():
            index = re.match(rf"{re.escape(stack)}\.(\d+)\.", name)
            if not (index and int(index.group(1)) >= lowest or top_norm and name.startswith(top_norm)):
                parameter.requires_grad_(False)

    def parameter_groups(self, lr: float) -> list[dict]:
        """The trainable parameters in groups of one learning rate each: the layer mix and the head at `lr`, the
        encoder at `lr * encoder_lr_scale`, less `layer_decay` for each layer further from the top (layer-wise
        learning-rate decay: the lower layers hold the general acoustics that fine-tuning should keep)."""
        if self.encoder_lr_scale == 1 and self.layer_decay == 1:  # one rate: one group, as before these settings
            return [{"params": list(self.parameters()), "lr": lr}]
        stack, depth, top_norm = self._layer_stack()
        top_norm = f"encoder.{top_norm}" if top_norm else None
        groups: dict[float, list[nn.Parameter]] = {}
        for name, parameter in self.named_parameters():
            if not parameter.requires_grad:
                continue
            scale = 1.0
            if name.startswith("encoder."):
                index = re.match(rf"encoder\.{re.escape(stack)}\.(\d+)\.", name)
                # layer k is level k + 1; below the first: embeddings and convolutions; the final layer norm on top
                level = int(index.group(1)) + 1 if index else depth if top_norm and name.startswith(top_norm) else 0
                scale = self.encoder_lr_scale * self.layer_decay ** (depth - level)
            groups.setdefault(lr * scale, []).append(parameter)
        return [{"params": params, "lr": group_lr} for group_lr, params in sorted(groups.items(), reverse=True)]

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze_encoder or self.frozen_layers is not None:
            self.encoder.eval()  # a frozen encoder (or frozen part) keeps its dropout off
        if self.frozen_layers is not None:
            self.encoder.layers[self.frozen_layers:].train(mode)
            self.encoder.layer_norm.train(mode)
        return self

    def encode(self, waveform: torch.Tensor, layers: list[int] | None = None) -> torch.Tensor:
        """Waveform (batch, samples) -> the hidden states `layers` (default: the kept ones), (batch, frames, layers,
        width). A frozen encoder runs in float32 whatever the trainer's precision (16-mixed, bf16-mixed): its
        feature cache is computed in float32 once, and the audio path (test, eval, predict) must give the same."""
        if not self.freeze_encoder:
            return self._encode(waveform, layers)
        with torch.autocast(device_type=waveform.device.type, enabled=False):
            return self._encode(waveform.float(), layers)

    def _encode(self, waveform: torch.Tensor, layers: list[int] | None = None) -> torch.Tensor:
        if self.is_whisper:
            features = self.whisper_mel(waveform)
            if self.training and self.log_mel_augment is not None:
                features = self.log_mel_augment(features.unsqueeze(1)).squeeze(1)  # masks set to 0: a quiet band
            features = nn.functional.pad(features, (0, max(0, self.input_frames - features.shape[-1])))
            outputs = self.encoder(features[..., :self.input_frames], output_hidden_states=True)
        else:
            normalised = (waveform - waveform.mean(dim=1, keepdim=True)) / (waveform.std(dim=1, keepdim=True) + 1e-7)
            outputs = self.encoder(normalised, output_hidden_states=True)
        return torch.stack([outputs.hidden_states[layer] for layer in (self.layers if layers is None else layers)], dim=2)

    def upper(self, state: torch.Tensor) -> torch.Tensor:
        """Partial fine-tuning: hidden state k (batch, frames, width) -> the kept hidden states (batch, frames,
        layers, width), through layers k+1.. and Whisper's final layer norm, as the encoder computes them."""
        if self.training and len(self.frame_masks):
            state = self.frame_masks(state.transpose(1, 2)).transpose(1, 2)  # masks over frames, per clip
        top, depth = max(self.layers), len(self.encoder.layers)
        state = state.to(self.encoder.layer_norm.weight.dtype)
        states = {self.frozen_layers: state}
        for index in range(self.frozen_layers, min(top, depth)):
            state = self.encoder.layers[index](state, None)
            states[index + 1] = state
        if top == depth:
            states[depth] = self.encoder.layer_norm(state)  # the last hidden state is the normed one
        return torch.stack([states[layer] for layer in self.layers], dim=2)

    def classify(self, hidden: torch.Tensor) -> torch.Tensor:
        """Kept hidden states (batch, frames, layers, width) -> logits: softmax-weighted layer mix, pooled over
        time, head."""
        mix = torch.softmax(self.layer_weights, dim=0)
        if self.attention is None:
            # The mean over time commutes with the layer mix: pooling first makes the mix act on (batch, layers,
            # width), and backward never touches the frames (3-4x faster epochs from the feature cache). The feature
            # cache's batches of a mean-pooling head are already each crop's mean (one frame: data/datamodule.py).
            pooled = hidden.to(mix.dtype).mean(dim=1)  # (mean(dtype=float32) on float16 is 4x slower on CPU)
            return self.head((mix[None, :, None] * pooled).sum(dim=1))
        mixed = torch.einsum("btlw,l->btw", hidden.to(mix.dtype), mix)
        weights = torch.softmax(self.attention(mixed).squeeze(-1), dim=1)
        return self.head((weights[..., None] * mixed).sum(dim=1))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if inputs.dim() != 4:
            return self.classify(self.encode(inputs))
        return self.classify(inputs if self.frozen_layers is None else self.upper(inputs[:, :, 0]))
