"""Decoded, resampled waveforms of every clip in one memory-mapped float32 store (see array_store.py).

Audio is decoded once per (files, sample rate); later runs and epochs only slice the memory map.
"""

import hashlib
import logging
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from emotion_lightning.data import array_store
from emotion_lightning.data.array_store import ArrayStore
from emotion_lightning.data.audio import AudioError, load

log = logging.getLogger(__name__)


def resolved(paths: list[str]) -> list[str]:
    """Absolute paths with symlinks and `..` resolved: `../shared/data/x.wav` and its absolute spelling are one
    file, so they share one cache instead of each building its own copy of the same audio."""
    return [str(Path(path).resolve()) for path in paths]


def cache_key(paths: list[str], sample_rate: int) -> str:
    """Key of the cache of `paths` (resolved first) at `sample_rate`: changes when any file's size or mtime does."""
    digest = hashlib.sha1(f"float32 mono {sample_rate} Hz\n".encode())
    for path in resolved(paths):
        stat = Path(path).stat()
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


class WaveformCache(ArrayStore):
    """Read access to a built cache: `cache[i]` is the waveform of `paths[i]` (empty if it failed); `paths` and
    the keys of `failed` are resolved absolute paths."""

    def __init__(self, data_path: Path, index: dict):
        super().__init__(data_path, index)
        self.paths: list[str] = index["paths"]
        self.failed: dict[str, str] = index["failed"]
        self.sample_rate: int = index["sample_rate"]
        self.key: str = data_path.stem

    @classmethod
    def open_or_build(cls, paths: list[str], sample_rate: int, cache_dir: str | Path) -> "WaveformCache":
        paths = resolved(paths)
        directory, key = Path(cache_dir) / "waveforms", cache_key(paths, sample_rate)
        return super().open_or_build(directory, key, "float32", lambda: build(paths, sample_rate, directory, key))


def build(paths: list[str], sample_rate: int, directory: Path, key: str) -> None:
    """Decode every file into the store; files that fail to decode are recorded (as empty rows), not fatal."""
    meta = {"paths": paths, "failed": {}, "sample_rate": sample_rate}

    def waveforms():
        for path in tqdm(paths, desc=f"decoding audio to {sample_rate} Hz", unit="file"):
            try:
                yield load(path, sample_rate)
            except AudioError as error:
                meta["failed"][path] = str(error)
                yield np.zeros(0, dtype=np.float32)

    data_path = array_store.write(directory, key, waveforms(), "float32", (), meta)
    log.info("waveform cache: %d clips, %.1f MB, %d failed -> %s", len(paths), data_path.stat().st_size * 1e-6,
             len(meta["failed"]), data_path)
