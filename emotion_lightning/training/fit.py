"""Fit on train, select on val, test: the Lightning path (the best checkpoint is tested) and the classical one
(scikit-learn fitted on train+val features). Each returns facts about the fit for metrics.json."""

import json
import logging
import time
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from emotion_lightning.data.errors import SettingError
from emotion_lightning.evaluation.calibration import fit_temperature
from emotion_lightning.evaluation.identity import comparable, describe_differences, differences, result_settings
from emotion_lightning.training.checkpoints import (AtomicCheckpointIO, link_best, resume_checkpoint,
                                                     store_temperature)
from emotion_lightning.training.distributed import check_can_launch, wait_for_other_ranks
from emotion_lightning.training.run_facts import config_choices, resolved_config

log = logging.getLogger(__name__)


def best_epoch(checkpoint_path: str) -> int | None:
    """1-based epoch at which the best checkpoint was saved."""
    if not checkpoint_path:
        return None
    return int(torch.load(checkpoint_path, map_location="cpu", weights_only=False)["epoch"]) + 1


def tested_checkpoint_path(path: str, run_dir: Path) -> str:
    """The tested checkpoint's path relative to the run dir (so it holds when the run dir moves), else as it is."""
    return Path(path).relative_to(run_dir).as_posix() if Path(path).is_relative_to(run_dir) else str(path)


def check_same_run(cfg: DictConfig, resume_from: str) -> None:
    """Refuse to resume a checkpoint written under other result-changing settings (it would continue that run
    and report it under these settings), naming the settings that differ; `force_resume=true` overrides."""
    saved = torch.load(resume_from, map_location="cpu", weights_only=False).get("run_config")
    if saved is None:
        found = [("run_config", "this run's", "none (not written by emotion_lightning.train)")]
    else:
        found = differences(result_settings(resolved_config(cfg)), result_settings(saved))
    if not found:
        return
    listing = describe_differences(found, "here", "in the checkpoint")
    if cfg.get("force_resume"):
        log.warning("force_resume=true: resuming %s although its settings differ:\n%s", resume_from, listing)
        return
    if cfg.get("ckpt") not in (None, "last"):  # named by the user: another run's, never to be deleted here
        given, fresh = f"ckpt={cfg.ckpt}", "leave out ckpt to start fresh, or give a checkpoint of a "\
            "run with these settings"
    else:
        given = f"{resume_from} (this run dir's last checkpoint)"
        fresh = f"start fresh in a new run dir (leave out hydra.run.dir, or give another), or delete " \
            f"{Path(resume_from).parent}"
    raise SettingError(
        f"not resuming {given}: it was written by a run with other settings, and resuming would report that run "
        f"under this run's settings. Settings that differ:\n{listing}\n"
        f"To fix: {fresh}; to resume it anyway, add force_resume=true.")


def checked_resume(cfg: DictConfig) -> str | None:
    """The checkpoint this run resumes from, checked to be of the same run. Called first thing in a job, so a
    refused restart leaves the run dir as it was (loggers and split files are not yet rewritten)."""
    resume_from = resume_checkpoint(cfg.get("ckpt"), Path(cfg.paths.output_dir))
    if resume_from:
        check_same_run(cfg, resume_from)
    return resume_from


def finished_record(cfg: DictConfig) -> dict | None:
    """This run dir's metrics.json when an earlier attempt finished the run under the same settings (none when a
    checkpoint is named): a sweep run again skips its finished jobs instead of testing them again."""
    path = Path(cfg.paths.output_dir) / "metrics.json"
    if cfg.get("ckpt") or not path.is_file():
        return None
    record = json.loads(path.read_text())
    stored = comparable(record.get("settings", {}))  # written before some setting joined IGNORED or ADDED_LATER
    return None if differences(result_settings(resolved_config(cfg)), stored) else record


def seen_clips(model, datamodule, part: str = "test") -> dict[str, int] | None:
    """How many clips of this run's `part` were in the checkpoint's train and val parts; None when it does not
    record them."""
    if model.trained_clips is None:
        return None
    clips = set(datamodule.clip_ids(part))
    return {seen: len(clips & set(model.trained_clips.get(seen, []))) for seen in ("train", "val")}


def check_members_never_saw_the_test(model, datamodule) -> None:
    """An ensemble's members must not have trained or validated on this run's test clips (as eval refuses for a
    checkpoint): members of another split, seed or fold would inflate its score."""
    for index, member in enumerate(getattr(model.network, "members", [])):
        seen = seen_clips(member, datamodule)
        if seen is None:
            log.warning("model.checkpoints[%d] records no clip IDs: cannot check that it never saw the test clips",
                        index)
        elif sum(seen.values()):
            raise SettingError(
                f"model.checkpoints[{index}] trained or validated on {sum(seen.values())} of this split's "
                f"{len(datamodule.clip_ids('test'))} test clips, so the ensemble's test score would be inflated; "
                "ensemble checkpoints trained on this run's split (the same split, split.fold and seed as the members)")


CALIBRATIONS = ("temperature", "none")


def unfit_for_temperature(model, datamodule) -> str | None:
    """Why the validation pass just run cannot fit a temperature, if it cannot: a smoke test's few batches, or an
    ensemble's members that trained on these validation clips (their probabilities there are too sure)."""
    scored, clips = len(model.val_scores[1]), len(datamodule.clip_ids("val"))
    if scored < clips:
        return f"validation scored {scored} of {clips} clips (fast_dev_run or limit_val_batches)"
    for index, member in enumerate(getattr(model.network, "members", [])):
        if (seen := seen_clips(member, datamodule, "val")) and seen["train"]:
            return f"model.checkpoints[{index}] trained on {seen['train']} of this run's validation clips"
    return None


def calibrate(cfg: DictConfig, trainer, model, datamodule, best_path: str) -> float | None:
    """Temperature scaling: one temperature fitted on the validation clips with the best checkpoint's weights
    (validation is what chose that checkpoint; test is never looked at), stored in the checkpoint, so test, eval,
    predict and export all report probabilities divided by it. An ensemble of checkpoints (not trainable) fits one
    on its averaged probabilities and holds it for its test: it has no checkpoint of its own. None when turned off
    or nothing was checkpointed."""
    method = cfg.get("calibration", "none")
    if method not in CALIBRATIONS:
        raise SettingError(f"calibration={method!r}; use one of {', '.join(CALIBRATIONS)}")
    if method == "none" or (model.trainable and not best_path):
        return None
    trainer.validate(model, datamodule=datamodule, ckpt_path=best_path or None, verbose=False)
    if reason := unfit_for_temperature(model, datamodule):
        log.warning("no temperature fitted: %s", reason)
        return None
    temperature = fit_temperature(*model.val_scores)  # every rank gathered the same clips: the same value
    if best_path:
        if trainer.is_global_zero:
            store_temperature(best_path, temperature)
        trainer.strategy.barrier()  # the test below reads the checkpoint back
    else:
        model.temperature = temperature
    log.info("temperature %.3f fitted on %d validation clips", temperature, len(model.val_scores[1]))
    return temperature


def fit_and_test_lightning(cfg: DictConfig, model, datamodule, loggers: list, resume_from: str | None = None) -> dict:
    """Fit on train, select on val, test the best checkpoint (the last weights when there is none: a
    `fast_dev_run` smoke test saves no checkpoint)."""
    check_members_never_saw_the_test(model, datamodule)
    model.set_class_weights(datamodule.class_weights())
    model.set_training_data({part: datamodule.clip_ids(part) for part in ("train", "val")}, config_choices())
    callbacks = list(instantiate(cfg.callbacks).values()) if cfg.get("callbacks") else []
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=[AtomicCheckpointIO()])
    check_can_launch(trainer)

    resume_from = resume_from if model.trainable else None
    if resume_from:
        log.info("resuming from %s", resume_from)
    start = time.perf_counter()
    if model.trainable:
        trainer.fit(model, datamodule=datamodule, ckpt_path=resume_from)
    train_seconds = time.perf_counter() - start
    checkpoint = trainer.checkpoint_callback if model.trainable else None
    best_path = checkpoint.best_model_path if checkpoint else ""
    if model.trainable and not best_path:
        log.warning("no best checkpoint was saved (fast_dev_run, or no validation score): testing the last weights")
    temperature = calibrate(cfg, trainer, model, datamodule, best_path)
    if best_path and trainer.is_global_zero:
        link_best(best_path)
    trainer.test(model, datamodule=datamodule, ckpt_path="best" if best_path else None)
    wait_for_other_ranks(trainer)
    best_score = checkpoint.best_model_score if best_path else None
    return {
        "train_seconds": round(train_seconds, 2), "resumed_from": resume_from,
        "tested_weights": ("best" if best_path else "last") if model.trainable else None,
        # which file that is, in the run dir where it is there (model.sweeps ensembles take it as a member)
        "tested_checkpoint": tested_checkpoint_path(best_path, Path(cfg.paths.output_dir)) if best_path else None,
        "best_epoch": best_epoch(best_path), "epochs_run": trainer.current_epoch,
        "temperature_fitted_on": "val" if temperature is not None else None,
        f"best_{cfg.monitor}": float(best_score) if best_score is not None else None,
    }


def fit_and_test_classical(model, datamodule) -> dict:
    start = time.perf_counter()
    model.fit_and_test(datamodule)
    return {"train_seconds": round(time.perf_counter() - start, 2)}
