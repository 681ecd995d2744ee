"""The random state a checkpoint carries, so that a resumed run continues with the same shuffles, crops and
dropout as an uninterrupted one: one state per process of a DDP job, each restored by the rank that saved it."""

import logging
import random

import numpy as np
import torch

log = logging.getLogger(__name__)


def random_states() -> dict:
    """Every random generator this process draws from (shuffling, crops, dropout), in types that Lightning's
    `weights_only` checkpoint loading accepts (no numpy arrays). On a GPU, only the generator of this process's
    own device: a run resumed with fewer (or other) visible GPUs restores it on whichever device it then has."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    states = {"torch": torch.get_rng_state(), "numpy": (kind, keys.tolist(), position, has_gauss, cached),
              "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # batch augmentation draws on the GPU
        states["cuda"] = torch.cuda.get_rng_state()
    return states


def restore_random_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    kind, keys, position, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))
    random.setstate(states["python"])
    cuda = states.get("cuda")
    if cuda is not None and torch.cuda.is_available():
        if isinstance(cuda, (list, tuple)):  # written before one state per process: one per GPU then visible
            cuda = cuda[min(torch.cuda.current_device(), len(cuda) - 1)]
        torch.cuda.set_rng_state(cuda)


def all_ranks_random_states() -> list[dict]:
    """Every rank's `random_states()`, by global rank (one entry without DDP): called by every rank, as Lightning
    builds a checkpoint on each before rank 0 writes it."""
    states = random_states()
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return [states]
    gathered = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, states)
    return gathered


def restore_rank_random_states(by_rank: list[dict], rank: int) -> None:
    """Restore this rank's saved states; a rank the checkpoint has none for (resumed over more processes than it
    was saved by) keeps its own seeded streams."""
    if rank < len(by_rank):
        restore_random_states(by_rank[rank])
    else:
        log.info("the checkpoint holds random states of %d processes: rank %d keeps its own seeded ones",
                 len(by_rank), rank)
