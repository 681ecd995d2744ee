"""Experiment loggers of a job (CSV, TensorBoard, W&B): built from `logger` configs, given the run's config
and, for W&B, metrics.json as run summary and as an artifact with the result files; W&B runs closed per job, so jobs sharing a process
(sequential or pooled sweep workers) never log into one run."""

import sys
from pathlib import Path

from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger, WandbLogger
from omegaconf import DictConfig

SUMMARY_KEYS = ("test_ua", "test_wa", "test_macro_f1", "params", "train_seconds", "best_epoch", "epochs_run",
                "model", "augment", "data", "split", "condition", "snr_db", "seed")
RUN_FILES = ("metrics.json", "confusion_matrix.png", "split_summary.csv")


def build_loggers(cfg: DictConfig, run_config: dict) -> list[Logger]:
    """The configured loggers, each given the resolved run config (logged first, so a crashed run shows it)."""
    loggers = list(instantiate(cfg.logger).values()) if cfg.get("logger") else []
    for logger in loggers:
        logger.log_hyperparams(run_config)
    return loggers


def log_report(loggers: list[Logger], report: dict, run_dir: Path) -> None:
    """metrics.json's headline numbers into each W&B run's summary, and the run dir's result files."""
    for logger in loggers:
        if not isinstance(logger, WandbLogger):
            continue
        import wandb

        run = logger.experiment
        run.summary.update({key: report[key] for key in SUMMARY_KEYS if key in report})
        run.summary.update({f"test_f1_{name}": scores["f1"] for name, scores in report["per_class"].items()})
        # An artifact, not run.save: a copy of metrics.json inside the run dir would be read as a second run.
        artifact = wandb.Artifact(f"results-{run.id}", type="results", metadata={"run_dir": str(run_dir)})
        for name in RUN_FILES:
            if (run_dir / name).is_file():
                artifact.add_file(str(run_dir / name), name=name)
        run.log_artifact(artifact)


def finish_wandb(failed: bool) -> None:
    """Close this process's W&B run, if any (exit code 1 marks it failed in W&B)."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish(exit_code=int(failed))
