"""Checkpoints that survive a killed process (whole files only), and which one a run resumes from."""

import os
from pathlib import Path

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from emotion_lightning.data.atomic import atomic_path
from emotion_lightning.data.errors import MissingFileError


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, but through a temporary file and a rename: a process killed while
    saving leaves the previous checkpoint intact instead of a truncated one."""

    swept = False

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        if not self.swept:  # temporaries a killed earlier attempt left (a whole checkpoint's size each)
            for stale in Path(path).parent.glob(".*.ckpt.*.tmp"):
                stale.unlink(missing_ok=True)
            self.swept = True
        with atomic_path(path) as temporary:
            super().save_checkpoint(checkpoint, temporary, storage_options)


class LastEveryEpochCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint, but `save_last` rewrites last.ckpt after every validation, as it did before
    Lightning 2.6. Since 2.6 last.ckpt is written only when a top-k checkpoint is saved at the same step, i.e. when
    the monitored score improves: a run killed after some epochs without improvement would resume from its best
    epoch instead of its last one and train every epoch since then again (all 20 of a fine-tuning whose best epoch
    was its first)."""

    def on_train_epoch_end(self, trainer, pl_module):  # where it saves when validation runs once an epoch
        due = not self._should_skip_saving_checkpoint(trainer) and self._should_save_on_train_epoch_end(trainer)
        super().on_train_epoch_end(trainer, pl_module)
        self._save_last_if_missed(trainer, due)

    def on_validation_end(self, trainer, pl_module):  # where it saves otherwise
        due = not self._should_skip_saving_checkpoint(trainer) and not self._should_save_on_train_epoch_end(trainer)
        super().on_validation_end(trainer, pl_module)
        self._save_last_if_missed(trainer, due)

    def _save_last_if_missed(self, trainer, due: bool) -> None:
        if due and self.save_last and self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


BEST_LINK = "best.ckpt"  # in a run's checkpoints/: the checkpoint its test scored, with its calibration


def link_best(best_path: str | Path) -> Path:
    """`checkpoints/best.ckpt`, a relative symbolic link to the tested checkpoint, so commands that take a
    checkpoint can name one file whatever epoch won (replaced through a temporary link and a rename)."""
    best_path = Path(best_path)
    link = best_path.parent / BEST_LINK
    temporary = best_path.parent / f".{BEST_LINK}.{os.getpid()}.tmp"
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(best_path.name)
    temporary.replace(link)
    return link


def store_temperature(path: str | Path, temperature: float) -> None:
    """Record a fitted temperature in a written checkpoint (rewritten whole, through a temporary file)."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    checkpoint["temperature"] = float(temperature)
    with atomic_path(path) as temporary:
        torch.save(checkpoint, temporary)


def resume_checkpoint(ckpt: str | None, run_dir: Path) -> str | None:
    """The checkpoint to resume from: an explicit path, 'last' (this run dir's last.ckpt, which must
    exist), or, when none is given, this run dir's last.ckpt if an earlier attempt left one."""
    last = run_dir / "checkpoints" / "last.ckpt"
    if ckpt == "last":
        if not last.is_file():
            raise MissingFileError(f"ckpt=last: {last} does not exist; pass hydra.run.dir=<the run dir to resume>")
        return str(last)
    if ckpt:
        if not Path(ckpt).is_file():
            raise MissingFileError(f"ckpt={ckpt} does not exist")
        return str(ckpt)
    return str(last) if last.is_file() else None
