"""A frozen encoder's hidden states, computed once per clip into an on-disk store (data/array_store.py).

A frozen encoder gives the same output for a clip every epoch, so the epochs need only its hidden states: the
store holds, per clip of the waveform cache, the cached layers' frames (frames, layers, width) in `dtype`
(float16 by default: half the disk and memory of float32, well within the head's precision). The cached layers
are the kept ones of a frozen encoder, or hidden state k alone when only the lower k layers are frozen (partial
fine-tuning: epochs run the layers above it; see models/pretrained.py). It is keyed by the
encoder (its config and a digest of its weights, so a fine-tuned or another checkpoint never reads stale
features), the layers cached, the dtype, the audio (the waveform cache's key, rate and clip length) and the kind of
device that computes them; another key builds another store. Training crops `crop_frames` frames of a clip's sequence, as the audio path crops samples. Validation reads a
second store, the encoding of each clip's centre crop alone (`centre_crops`): for a clip longer than the crop,
frames cut from the whole clip's encoding differ from the crop's own (the encoder's attention and normalisation see
other audio), and the checkpoint is chosen on validation scores that must equal what `eval part=val` and the
test's audio path compute.

Whisper's encoder here sees windows of `clip_seconds` (its positions are truncated to the clip): a longer clip is
encoded in consecutive windows, the last one aligned to the clip's end, and their frames are joined; a clip no
longer than the window gives exactly the audio path's hidden states. Other encoders read the whole clip at once.
"""

import hashlib
import json
import logging
import math
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from emotion_lightning.data import array_store
from emotion_lightning.data.array_store import ArrayStore, check_dtype
from emotion_lightning.data.datamodule import crop_starts
from emotion_lightning.models.pretrained import PretrainedEncoderClassifier

log = logging.getLogger(__name__)


def encoder_digest(network: PretrainedEncoderClassifier) -> str:
    """Config and weights of the encoder (and Whisper's truncated window): what its hidden states depend on."""
    digest = hashlib.sha1(json.dumps(network.encoder.config.to_dict(), sort_keys=True, default=str).encode())
    digest.update(f"{type(network.encoder).__name__} {getattr(network, 'input_frames', None)}".encode())
    for name, tensor in sorted(network.encoder.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def feature_key(network: PretrainedEncoderClassifier, audio_key: str, dtype: str, device: torch.device,
                centre_crops: bool = False) -> str:
    """The store's name. The device type is part of it: GPU kernels round differently, and a run must read the
    features its own kind of device computes."""
    fields = [encoder_digest(network), network.cached_layers, dtype, audio_key, network.sample_rate, network.clip_samples,
              device.type] + (["centre crops"] if centre_crops else [])
    return hashlib.sha1(json.dumps(fields).encode()).hexdigest()[:16]


@torch.no_grad()
def crop_frames(network: PretrainedEncoderClassifier) -> int:
    """Frames of one `clip_seconds` crop: what the audio path gives the head."""
    parameter = next(network.parameters())
    return network.encode(torch.zeros(1, network.clip_samples, device=parameter.device)).shape[1]


def whisper_windows(length: int, window_frames: int, samples_per_frame: int) -> tuple[int, list[tuple[int, int]]]:
    """A clip of `length` samples -> (its frames, [(window start sample, frames kept from the window's end)])."""
    frames = max(window_frames, math.ceil(length / samples_per_frame))
    windows = [(k * window_frames * samples_per_frame, window_frames) for k in range(frames // window_frames)]
    if frames % window_frames:
        windows.append(((frames - window_frames) * samples_per_frame, frames % window_frames))
    return frames, windows


@torch.no_grad()
def hidden_rows(network: PretrainedEncoderClassifier, cache: ArrayStore, batch_size: int, device: torch.device):
    """Yield each clip's cached hidden states (frames, layers, width) as float32 numpy, in the cache's order."""
    empty = np.zeros((0, len(network.cached_layers), network.width), np.float32)
    if not network.is_whisper:
        for row in tqdm(range(len(cache)), desc="frozen encoder features (once)", unit="clip"):
            clip = torch.from_numpy(np.asarray(cache[row], dtype=np.float32))
            if not len(clip):
                yield empty
                continue
            clip = torch.nn.functional.pad(clip, (0, max(0, network.clip_samples - len(clip))))
            yield network.encode(clip[None].to(device), network.cached_layers)[0].float().cpu().numpy()
        return
    window_frames, per_frame, samples = crop_frames(network), 2 * network.whisper_mel.hop_length, network.clip_samples
    chunk = max(1, batch_size // 2)  # clips per encoder batch (most RAVDESS clips take two windows)
    progress = tqdm(total=len(cache), desc="frozen whisper features (once)", unit="clip")
    for first in range(0, len(cache), chunk):
        plans, windows = [], []
        for row in range(first, min(first + chunk, len(cache))):
            clip = np.asarray(cache[row], dtype=np.float32)
            frames, plan = whisper_windows(len(clip), window_frames, per_frame) if len(clip) else (0, [])
            padded = np.pad(clip, (0, max(0, (plan[-1][0] + samples if plan else 0) - len(clip))))
            windows += [padded[start:start + samples] for start, _keep in plan]
            plans.append(plan)
        encoded = [network.encode(torch.from_numpy(np.stack(windows[i:i + batch_size])).to(device),
                                  network.cached_layers).float().cpu()
                   for i in range(0, len(windows), batch_size)] if windows else []
        hidden = torch.cat(encoded).numpy() if encoded else None
        position = 0
        for plan in plans:
            parts = [hidden[position + i, window_frames - keep:] for i, (_start, keep) in enumerate(plan)]
            position += len(plan)
            yield np.concatenate(parts) if parts else empty
        progress.update(len(plans))
    progress.close()


@torch.no_grad()
def centre_crop_rows(network: PretrainedEncoderClassifier, cache: ArrayStore, batch_size: int, device: torch.device):
    """Yield each clip's cached hidden states of its centre `clip_seconds` crop (zero-padded at the end when shorter),
    in the cache's order: exactly what the audio path gives validation and test (ClipDataset's centre crop)."""
    samples = network.clip_samples
    empty = np.zeros((0, len(network.cached_layers), network.width), np.float32)
    progress = tqdm(total=len(cache), desc="frozen encoder features of centre crops (once)", unit="clip")
    for first in range(0, len(cache), batch_size):
        clips = [np.asarray(cache[row], dtype=np.float32) for row in range(first, min(first + batch_size, len(cache)))]
        starts = crop_starts(np.array([len(clip) for clip in clips]), samples, random_crop=False)
        crops = [clip[start:start + samples] for clip, start in zip(clips, starts)]
        batch = np.stack([np.pad(crop, (0, samples - len(crop))) for crop in crops])
        hidden = network.encode(torch.from_numpy(batch).to(device), network.cached_layers).float().cpu().numpy()
        yield from (row if len(clip) else empty for clip, row in zip(clips, hidden))
        progress.update(len(clips))
    progress.close()


def frozen_features(network: PretrainedEncoderClassifier, cache: ArrayStore, cache_dir: str | Path,
                    dtype: str = "float16", batch_size: int = 16, device: str = "auto",
                    centre_crops: bool = False) -> tuple[ArrayStore, int]:
    """The feature store of `network`'s frozen encoder (or frozen lower layers) over every clip of `cache` (built on first use), and the
    frames of one crop. `centre_crops`: each row is the encoding of the clip's centre crop alone (validation's
    features, equal to the audio path's), not the whole clip's frames (training's, cropped at random)."""
    if network.cached_layers is None:
        raise ValueError("the feature cache serves frozen encoders only; a fine-tuned encoder changes every step "
                         "(set feature_cache.enabled=false, model.network.freeze_encoder=true, or freeze the lower "
                         "layers alone: model.network.frozen_layers=k)")
    check_dtype(dtype, "feature_cache.dtype")
    device = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                          "cpu" if device == "auto" else device)
    key = feature_key(network, cache.index["key"], dtype, device, centre_crops)
    directory = Path(cache_dir) / "features"
    was_training, home = network.training, next(network.parameters()).device

    def build():
        def rows():
            encoded = centre_crop_rows if centre_crops else hidden_rows
            for row in encoded(network, cache, batch_size, device):
                stored = row.astype(dtype)
                if not np.isfinite(stored).all():
                    raise ValueError(f"encoder features exceed {dtype}'s range; set feature_cache.dtype=float32")
                yield stored
        network.to(device).eval()
        try:
            array_store.write(directory, key, rows(), dtype, (len(network.cached_layers), network.width),
                              {"layers": network.cached_layers, "clip_samples": network.clip_samples})
        finally:
            network.to(home).train(was_training)

    store = ArrayStore.open_or_build(directory, key, dtype, build)
    log.info("frozen encoder features: %d clips, %.1f MB %s -> %s", len(store), store.nbytes * 1e-6, dtype, directory)
    return store, crop_frames(network)
