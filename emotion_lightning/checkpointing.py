"""Checkpoints that survive a killed process: whole files only, and the random state to resume exactly."""

import random
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from emotion_lightning.atomic import atomic_path


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, but through a temporary file and a rename: a process killed while
    saving leaves the previous checkpoint intact instead of a truncated one."""

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        with atomic_path(path) as temporary:
            super().save_checkpoint(checkpoint, temporary, storage_options)


def random_states() -> dict:
    """Every random generator training draws from (shuffling, crops, dropout), in types that Lightning's
    `weights_only` checkpoint loading accepts (no numpy arrays)."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(), "numpy": (kind, keys.tolist(), position, has_gauss, cached),
            "python": random.getstate()}


def restore_random_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    kind, keys, position, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))
    random.setstate(states["python"])


def resume_checkpoint(ckpt_path: str | None, run_dir: Path) -> str | None:
    """The checkpoint to resume from: an explicit path, 'last' (this run dir's last.ckpt, which must
    exist), or, when none is given, this run dir's last.ckpt if an earlier attempt left one."""
    last = run_dir / "checkpoints" / "last.ckpt"
    if ckpt_path == "last":
        if not last.is_file():
            raise FileNotFoundError(f"ckpt_path=last: {last} does not exist; pass hydra.run.dir=<the run dir to resume>")
        return str(last)
    if ckpt_path:
        if not Path(ckpt_path).is_file():
            raise FileNotFoundError(f"ckpt_path={ckpt_path} does not exist")
        return str(ckpt_path)
    return str(last) if last.is_file() else None
