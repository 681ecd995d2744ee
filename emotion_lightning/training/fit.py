"""Fit on train, select on val, test: the Lightning path (the best checkpoint is tested) and the classical one
(scikit-learn fitted on train+val features). Each returns facts about the fit for metrics.json."""

import logging
import time
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from emotion_lightning.training.checkpoints import AtomicCheckpointIO, resume_checkpoint

log = logging.getLogger(__name__)


def best_epoch(checkpoint_path: str) -> int | None:
    """1-based epoch at which the best checkpoint was saved."""
    if not checkpoint_path:
        return None
    return int(torch.load(checkpoint_path, map_location="cpu", weights_only=False)["epoch"]) + 1


def fit_and_test_lightning(cfg: DictConfig, model, datamodule, loggers: list) -> dict:
    """Fit on train, select on val, test the best checkpoint."""
    model.set_class_weights(datamodule.class_weights())
    callbacks = list(instantiate(cfg.callbacks).values()) if cfg.get("callbacks") else []
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=[AtomicCheckpointIO()])

    resume_from = resume_checkpoint(cfg.get("ckpt_path"), Path(cfg.paths.output_dir))
    if resume_from:
        log.info("resuming from %s", resume_from)
    start = time.perf_counter()
    if model.trainable:
        trainer.fit(model, datamodule=datamodule, ckpt_path=resume_from)
    train_seconds = time.perf_counter() - start
    checkpoint = trainer.checkpoint_callback if model.trainable else None
    trainer.test(model, datamodule=datamodule, ckpt_path="best" if checkpoint else None)
    best_score = checkpoint.best_model_score if checkpoint else None
    return {
        "train_seconds": round(train_seconds, 2), "resumed_from": resume_from,
        "best_epoch": best_epoch(checkpoint.best_model_path) if checkpoint else None,
        "epochs_run": trainer.current_epoch,
        f"best_{cfg.monitor}": float(best_score) if best_score is not None else None,
    }


def fit_and_test_classical(model, datamodule) -> dict:
    start = time.perf_counter()
    model.fit_and_test(datamodule)
    return {"train_seconds": round(time.perf_counter() - start, 2)}
