"""Decoded, resampled waveforms of every clip in one memory-mapped float32 file plus a JSON index.

Audio is decoded once per (files, sample rate); later runs and epochs only slice the memory map. The
index is written last, by rename, so a build killed half-way is never mistaken for a complete cache.
"""

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from emotion_lightning.data.atomic import atomic_path, write_text
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


class WaveformCache:
    """Read access to a built cache: `cache[i]` is the waveform of `paths[i]` (empty if it failed); `paths` and
    the keys of `failed` are resolved absolute paths."""

    def __init__(self, data_path: Path, index: dict):
        self.paths: list[str] = index["paths"]
        self.offsets = np.asarray(index["offsets"], dtype=np.int64)
        self.lengths = np.asarray(index["lengths"], dtype=np.int64)
        self.failed: dict[str, str] = index["failed"]
        self.sample_rate: int = index["sample_rate"]
        total = int(self.lengths.sum())
        # np.memmap cannot map an empty file, and an all-failed cache has no samples.
        self.data = np.memmap(data_path, dtype=np.float32, mode="c") if total else np.zeros(0, np.float32)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> np.ndarray:
        start = self.offsets[index]
        return self.data[start : start + self.lengths[index]]

    @classmethod
    def open_or_build(cls, paths: list[str], sample_rate: int, cache_dir: str | Path) -> "WaveformCache":
        cache_dir = Path(cache_dir) / "waveforms"
        paths = resolved(paths)
        key = cache_key(paths, sample_rate)
        data_path, index_path = cache_dir / f"{key}.f32", cache_dir / f"{key}.json"
        if not (index_path.is_file() and data_path.is_file()):
            build(paths, sample_rate, data_path, index_path)
        return cls(data_path, json.loads(index_path.read_text()))


def build(paths: list[str], sample_rate: int, data_path: Path, index_path: Path) -> None:
    """Decode every file into `data_path`; files that fail to decode are recorded, not fatal."""
    offsets, lengths, failed, position = [], [], {}, 0
    with atomic_path(data_path) as temporary, open(temporary, "wb") as out:
        for path in tqdm(paths, desc=f"decoding audio to {sample_rate} Hz", unit="file"):
            try:
                waveform = load(path, sample_rate)
            except AudioError as error:
                failed[path] = str(error)
                waveform = np.zeros(0, dtype=np.float32)
            out.write(waveform.tobytes())
            offsets.append(position)
            lengths.append(len(waveform))
            position += len(waveform)
    index = {"paths": paths, "offsets": offsets, "lengths": lengths, "failed": failed, "sample_rate": sample_rate}
    write_text(index_path, json.dumps(index))
    log.info("waveform cache: %d clips, %.1f MB, %d failed -> %s", len(paths), position * 4e-6, len(failed), data_path)
