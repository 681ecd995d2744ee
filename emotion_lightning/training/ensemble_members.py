"""An ensemble's members found in sweep dirs (`model.sweeps`): the checkpoint that each finished run tested, for
every run that tested exactly this job's test clips. So `split.fold=3` takes all seeds of fold 3 and no run of
another fold, and one command builds the ensemble of every fold.

A run is matched on the test rows of its split.csv, not on its checkpoint: split.csv lists the test clips
themselves (a checkpoint records only its train and val clips) and is read without loading any weights. That the
members never trained on this job's test clips is checked again on their checkpoints (fit.py)."""

import json
import logging
from pathlib import Path

from omegaconf import DictConfig

from emotion_lightning.data.errors import SettingError
from emotion_lightning.data.splits import SPLIT_FILE, FileSplit, clip_keys
from emotion_lightning.evaluation.unfinished import read_unfinished
from emotion_lightning.training.run_facts import config_choices

log = logging.getLogger(__name__)


def tested_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint a finished run tested: the one its metrics.json names, else (runs from before it named one)
    its single best checkpoint, epoch*.ckpt, or last.ckpt where it tested its last weights; None if not found."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    if metrics.get("tested_checkpoint"):
        named = run_dir / metrics["tested_checkpoint"]
        return named if named.is_file() else None
    if metrics.get("tested_weights") == "last":
        last = run_dir / "checkpoints" / "last.ckpt"
        return last if last.is_file() else None
    best = list((run_dir / "checkpoints").glob("epoch*.ckpt"))
    return best[0] if len(best) == 1 else None


def tested_clips(run_dir: Path) -> set[str]:
    """The clip IDs a run tested, from the test rows of its split.csv (none if it has no split.csv)."""
    if not (run_dir / SPLIT_FILE).is_file():
        return set()
    table = FileSplit(str(run_dir / SPLIT_FILE)).read()
    test = table[table["part"] == "test"]
    return set(clip_keys(test["corpus"], test["file"]))


def sweep_members(sweep: str, test_clips: set[str], job: str) -> tuple[list[Path], str]:
    """The tested checkpoints of the finished runs under `sweep` (a run dir: metrics.json beside checkpoints/,
    at any depth) whose test clips are exactly `test_clips`, and what was found there in words. Failed and
    unfinished runs are logged and skipped; a sweep dir with no such run is an error (another split or fold)."""
    folder = Path(sweep)
    if not folder.is_dir():
        raise SettingError(f"model.sweeps: {sweep} does not exist (for {job}); give the sweep dirs whose runs to "
                           "ensemble, e.g. model.sweeps=[outputs/multiruns/NAME]")
    for skipped in read_unfinished(folder).itertuples():
        log.info("model.sweeps: skipping %s (%s: %s)", skipped.run_dir, skipped.status, skipped.error)
    runs = sorted(path.parent for path in folder.rglob("metrics.json") if (path.parent / "checkpoints").is_dir())
    matched = [run for run in runs if tested_clips(run) == test_clips]
    members = []
    for run in matched:
        checkpoint = tested_checkpoint(run)
        if checkpoint is None:
            log.warning("model.sweeps: skipping %s: its tested checkpoint is not in %s", run, run / "checkpoints")
        else:
            members.append(checkpoint)
    found = f"{sweep}: {len(runs)} finished run(s), {len(matched)} of them on this job's test clips"
    if not members:
        raise SettingError(f"model.sweeps: no member for {job} ({len(test_clips)} test clips) in {found}: give "
                           "sweep dirs of this split whose finished runs cover this fold")
    return members, found


def member_checkpoints(cfg: DictConfig, datamodule) -> list[str] | None:
    """An ensemble's `model.sweeps` resolved into its member checkpoints (sorted paths); None when the model is
    no ensemble or is given `model.checkpoints` (exactly one of the two is required)."""
    model = cfg.model
    if "sweeps" not in model:
        return None
    if (model.get("checkpoints") is None) == (model.get("sweeps") is None):
        raise SettingError("model=ensemble: give exactly one of model.checkpoints (trained .ckpt files) and "
                           "model.sweeps (sweep dirs whose runs of this job's split and fold become the members)")
    if model.sweeps is None:
        return None
    split = config_choices().get("split", type(datamodule.split).__name__)
    job = " ".join([f"split={split}"] + ([f"split.fold={cfg.split.fold}"] if "fold" in cfg.split else []))
    test_clips = set(datamodule.clip_ids("test"))
    found = [sweep_members(sweep, test_clips, job) for sweep in model.sweeps]
    members = sorted({str(path) for paths, _ in found for path in paths})
    if len(members) < 2:
        raise SettingError(f"model.sweeps: {len(members)} member for {job}, an ensemble needs at least two ("
                           f"{'; '.join(words for _, words in found)}): sweep more seeds, or add another sweep dir")
    log.info("model.sweeps: %d members for %s:\n  %s", len(members), job, "\n  ".join(members))
    return members
