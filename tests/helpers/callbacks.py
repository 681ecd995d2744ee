"""Callbacks that tests add to a run (`+callbacks.NAME._target_=tests.helpers.callbacks.CLASS`)."""

import json
from pathlib import Path

import lightning as L
import torch


class RecordRandomDraws(L.Callback):
    """Writes `<folder>/rank<k>.json` as training starts: the next uniform draws of torch's generator in rank k
    (what the first batch's random crops take), read from a copy so that the run itself is unchanged, and the
    training clips (dataset positions) its sampler gives it in the first epoch."""

    def __init__(self, folder: str):
        self.folder = Path(folder)

    def on_train_start(self, trainer, pl_module):
        generator = torch.Generator()
        generator.set_state(torch.get_rng_state())
        draws = torch.rand(4, dtype=torch.float64, generator=generator).tolist()
        clips = [int(index) for index in trainer.train_dataloader.sampler]  # this rank's shard of the epoch
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / f"rank{trainer.global_rank}.json").write_text(json.dumps({"draws": draws, "clips": clips}))
