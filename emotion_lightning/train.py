"""Train a model and test its best checkpoint: `python -m emotion_lightning.train [overrides]`."""

import logging
import time
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

import emotion_lightning  # noqa: F401  (registers the `len` resolver used by the configs)
from emotion_lightning.atomic import write_text
from emotion_lightning.classical import FeatureClassifier
from emotion_lightning.checkpointing import AtomicCheckpointIO, resume_checkpoint
from emotion_lightning.data import splits
from emotion_lightning.evaluation import save_report, test_report
from emotion_lightning.failures import record_failure
from emotion_lightning.run_info import config_choices, library_versions
from emotion_lightning.tracking import build_loggers, finish_wandb, log_report

log = logging.getLogger(__name__)


def best_epoch(checkpoint_path: str) -> int | None:
    """1-based epoch at which the best checkpoint was saved."""
    if not checkpoint_path:
        return None
    return int(torch.load(checkpoint_path, map_location="cpu", weights_only=False)["epoch"]) + 1


def condition_facts(cfg: DictConfig) -> dict:
    """How the test audio was degraded (`robustness`) and the training audio augmented (`augment`)."""
    robustness, augment = cfg.get("robustness") or {}, cfg.get("augment") or {}
    return {"condition": robustness.get("label", "clean"), "snr_db": robustness.get("snr_db"),
            "augment": augment.get("name", "none")}


def prepare_data(cfg: DictConfig, **overrides):
    """The DataModule, set up: a missing corpus or an impossible split fails here, before any model.

    The robustness condition degrades the test clips; augmentation's waveform transforms the training clips.
    """
    robustness, augment = cfg.get("robustness"), cfg.get("augment")
    transforms = {
        "test_transform": instantiate(robustness.chain) if robustness else None,
        "test_transform_seed": robustness.seed if robustness else 0,
        "train_transform": instantiate(augment.waveform) if augment and augment.waveform else None,
    }
    datamodule = instantiate(cfg.data, split=instantiate(cfg.split), **transforms, **overrides)
    datamodule.setup("fit")
    split_table = splits.summary(datamodule.manifest, datamodule.assignment)
    write_text(Path(cfg.paths.output_dir) / "split_summary.csv", split_table.to_csv(index=False))
    log.info("clips per part:\n%s", split_table.to_string(index=False))
    return datamodule


def fit_and_test_lightning(cfg: DictConfig, model, datamodule, loggers: list) -> dict:
    """Fit on train, select on val, test the best checkpoint; facts about the fit for metrics.json."""
    model.run_config = OmegaConf.to_container(cfg, resolve=True)
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


def augment_model(model, augment: DictConfig | None) -> None:
    """Hand SpecAugment and mixup to a trainable deep model; refuse augmentation where it cannot apply."""
    if not augment or augment.get("name", "none") == "none":
        return
    if isinstance(model, FeatureClassifier) or not model.trainable:
        raise ValueError(f"augment={augment.name} needs a model trained by gradient descent; "
                         f"{type(model).__name__} is fitted on clean features (use augment=none)")
    spec_augment = instantiate(augment.spec_augment) if augment.get("spec_augment") else None
    model.set_augmentation(spec_augment, augment.get("mixup_alpha", 0.0))


def train(cfg: DictConfig) -> dict:
    """Train and test the configured model; write metrics.json and plots to the run dir."""
    L.seed_everything(cfg.seed, workers=True)
    choices = config_choices()
    datamodule = prepare_data(cfg)
    model = instantiate(cfg.model)
    augment_model(model, cfg.get("augment"))
    loggers = build_loggers(cfg, OmegaConf.to_container(cfg, resolve=True))
    if isinstance(model, FeatureClassifier):
        fit_facts = fit_and_test_classical(model, datamodule)
    else:
        fit_facts = fit_and_test_lightning(cfg, model, datamodule, loggers)
    report = {
        **test_report(model, datamodule),
        "model": choices.get("model", model.name), "params": model.num_parameters,
        "data": choices.get("data", "custom"), "split": choices.get("split", type(datamodule.split).__name__),
        "seed": cfg.seed, **condition_facts(cfg), **fit_facts,
        "skipped_files": len(datamodule.skipped), "choices": choices, "versions": library_versions(),
    }
    save_report(Path(cfg.paths.output_dir), report)
    log_report(loggers, report, Path(cfg.paths.output_dir))
    return report


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    # A failed job leaves failure.json and re-raises: Hydra's launchers still run the sweep's other jobs,
    # then the command exits non-zero with the first error, so a sweep with a failure never looks clean.
    failed = True
    try:
        report = train(cfg)
        failed = False
    except Exception as error:
        log.error("job failed; recorded in %s", record_failure(cfg.paths.output_dir, error))
        raise
    finally:
        finish_wandb(failed)
    # The validation score, for Hydra sweepers that optimise a value (e.g. Optuna): never tune on test.
    return report.get(f"best_{cfg.monitor}") or report["test_ua"]


if __name__ == "__main__":
    main()
