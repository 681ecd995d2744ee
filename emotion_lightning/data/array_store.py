"""Rows of arrays of varying length (a clip's samples, an encoder's frames) in one memory-mapped file + a JSON index.

The waveform cache, the codec variants of training clips and the frozen-encoder features are all such stores:
built once, then only sliced (by the per-item path) or copied whole to the device (by the resident path). The
index is written last, by rename, so a build killed half-way is redone, never read; a changed key names new files.
"""

import json
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from emotion_lightning.data.atomic import atomic_path, exclusive, write_text

SUFFIXES = {"float32": "f32", "float16": "f16"}


def check_dtype(dtype: str, setting: str) -> np.dtype:
    if str(dtype) not in SUFFIXES:
        raise ValueError(f"{setting}={dtype!r}; use one of {list(SUFFIXES)}")
    return np.dtype(str(dtype))


class ArrayStore:
    """`store[i]` is row i: an array of shape (length_i, *item_shape) sliced from the memory map."""

    def __init__(self, data_path: Path, index: dict):
        self.index = index
        self.offsets = np.asarray(index["offsets"], dtype=np.int64)
        self.lengths = np.asarray(index["lengths"], dtype=np.int64)
        self.dtype = np.dtype(index.get("dtype", "float32"))
        self.item_shape = tuple(index.get("item_shape", ()))
        total = int(self.lengths.sum())
        # np.memmap cannot map an empty file, and a store of failed clips has no rows.
        self.data = np.memmap(data_path, dtype=self.dtype, mode="c").reshape(-1, *self.item_shape) if total \
            else np.zeros((0, *self.item_shape), self.dtype)

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, index: int) -> np.ndarray:
        start = self.offsets[index]
        return self.data[start:start + self.lengths[index]]

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes)

    @classmethod
    def open(cls, directory: Path, key: str, dtype: str = "float32") -> "ArrayStore | None":
        """The store built under `key`, or None when it is absent or was never finished."""
        data_path, index_path = paths(directory, key, dtype)
        if not (index_path.is_file() and data_path.is_file()):
            return None
        return cls(data_path, json.loads(index_path.read_text()))

    @classmethod
    def open_or_build(cls, directory: Path, key: str, dtype: str, build: Callable[[], object]):
        """Open the store under `key`, calling `build()` first when it is absent or unfinished. One process builds
        it; others asking for it meanwhile (DDP ranks, SLURM tasks, parallel jobs) wait and open what it wrote."""
        store = cls.open(directory, key, dtype)
        if store is not None:
            return store
        lock = Path(directory) / f".{key}.lock"
        try:
            with exclusive(lock):
                store = cls.open(directory, key, dtype)
                if store is None:
                    build()
                    store = cls.open(directory, key, dtype)
        finally:
            lock.unlink(missing_ok=True)  # whoever waited re-checks for the store before building
        if store is None:
            raise RuntimeError(f"building the store {key} under {directory} wrote no complete store")
        return store


def paths(directory: Path, key: str, dtype: str) -> tuple[Path, Path]:
    return Path(directory) / f"{key}.{SUFFIXES[str(dtype)]}", Path(directory) / f"{key}.json"


def write(directory: Path, key: str, rows: Iterable[np.ndarray], dtype: str, item_shape: tuple, meta: dict) -> Path:
    """Write `rows` (each of shape (length, *item_shape)) then the index. `meta` is read after the last row, so
    the row generator may fill it in (e.g. the files that failed to decode)."""
    dtype = np.dtype(str(dtype))
    data_path, index_path = paths(directory, key, str(dtype))
    offsets, lengths, position = [], [], 0
    with atomic_path(data_path) as temporary, open(temporary, "wb") as out:
        for row in rows:
            row = np.ascontiguousarray(row, dtype=dtype)
            if row.shape[1:] != tuple(item_shape):
                raise ValueError(f"store {key}: a row of shape {row.shape} in a store of items {tuple(item_shape)}")
            out.write(row.tobytes())
            offsets.append(position)
            lengths.append(len(row))
            position += len(row)
    index = {**meta, "key": key, "offsets": offsets, "lengths": lengths, "dtype": dtype.name,
             "item_shape": list(item_shape)}
    write_text(index_path, json.dumps(index))
    return data_path
