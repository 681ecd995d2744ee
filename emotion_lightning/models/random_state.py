"""The random state a checkpoint carries, so that a resumed run continues with the same shuffles, crops and
dropout as an uninterrupted one."""

import random

import numpy as np
import torch


def random_states() -> dict:
    """Every random generator training draws from (shuffling, crops, dropout), in types that Lightning's
    `weights_only` checkpoint loading accepts (no numpy arrays)."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    states = {"torch": torch.get_rng_state(), "numpy": (kind, keys.tolist(), position, has_gauss, cached),
              "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # batch augmentation draws on the GPU
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_random_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    kind, keys, position, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
