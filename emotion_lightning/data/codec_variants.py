"""Lossy-codec augmentation from a cache: every clip encoded and decoded once per bitrate, picked per epoch.

An MP3 round trip of a 3 s clip takes about 15 ms here and an Opus one about 90 ms; at p=0.2 that alone would add
most of a ResNet epoch (960 clips) per epoch, on the same two cores the network trains on, so worker processes
cannot hide it. Encoding once per (clip, bitrate) costs one pass; epochs then only pick a row.
"""

import hashlib
import logging
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from emotion_lightning.data import array_store
from emotion_lightning.data.array_store import ArrayStore
from emotion_lightning.data.transforms import Codec, fit_length

log = logging.getLogger(__name__)


def bitrates(codec: Codec) -> list[float]:
    rates = codec.bitrate_kbps
    return [float(rates)] if isinstance(rates, (int, float)) else [float(r) for r in rates]


def codec_variants(cache: ArrayStore, sample_rate: int, codec: Codec, cache_dir: str | Path) -> ArrayStore:
    """Row `clip * len(bitrates) + v` is clip `clip` of `cache` through `codec` at its v-th bitrate, cut or
    padded to the clip's length (so a crop drawn for the clean clip fits its variants)."""
    rates = bitrates(codec)
    for rate in rates:
        codec.level(rate, sample_rate)  # a bitrate the format cannot give fails now, not after an hour of encoding
    key = hashlib.sha1(f"{cache.index['key']} {codec.format} {rates} {sample_rate}".encode()).hexdigest()[:16]
    directory = Path(cache_dir) / "codec_variants"

    def build():
        def rows():
            for row in tqdm(range(len(cache)), desc=f"{codec.format} at {rates} kbps (once)", unit="clip"):
                clip = np.asarray(cache[row], dtype=np.float32)
                for rate in rates:
                    yield fit_length(codec.decode(codec.encode(clip, sample_rate, rate)), len(clip)) if len(clip) \
                        else clip
        array_store.write(directory, key, rows(), "float32", (), {"format": codec.format, "bitrates": rates})

    store = ArrayStore.open_or_build(directory, key, "float32", build)
    log.info("codec variants: %s at %s kbps, %.1f MB", codec.format, rates, store.nbytes * 1e-6)
    return store
