"""Train a model and test its best checkpoint: `python -m emotion_lightning.train [overrides]`."""

import json
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
from emotion_lightning.data import splits
from emotion_lightning.plots import plot_confusion_matrix
from emotion_lightning.run_info import config_choices, library_versions

log = logging.getLogger(__name__)


def best_epoch(checkpoint_path: str) -> int | None:
    """1-based epoch at which the best checkpoint was saved."""
    if not checkpoint_path:
        return None
    return int(torch.load(checkpoint_path, map_location="cpu", weights_only=False)["epoch"]) + 1


def train(cfg: DictConfig) -> dict:
    """Fit on train, select on val, test the best checkpoint; write metrics.json and plots to the run dir."""
    L.seed_everything(cfg.seed, workers=True)
    run_dir = Path(cfg.paths.output_dir)
    choices = config_choices()

    # Data first: a missing corpus or an impossible split fails before any model is built.
    datamodule = instantiate(cfg.data, split=instantiate(cfg.split))
    datamodule.setup("fit")
    split_table = splits.summary(datamodule.manifest, datamodule.assignment)
    write_text(run_dir / "split_summary.csv", split_table.to_csv(index=False))
    log.info("clips per part:\n%s", split_table.to_string(index=False))

    model = instantiate(cfg.model)
    model.model_config = OmegaConf.to_container(cfg.model, resolve=True)
    model.set_class_weights(datamodule.class_weights())
    callbacks = list(instantiate(cfg.callbacks).values()) if cfg.get("callbacks") else []
    loggers = list(instantiate(cfg.logger).values()) if cfg.get("logger") else False
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)

    start = time.perf_counter()
    trainer.fit(model, datamodule=datamodule)
    train_seconds = time.perf_counter() - start
    checkpoint = trainer.checkpoint_callback
    trainer.test(model, datamodule=datamodule, ckpt_path="best" if checkpoint else None)

    results = model.test_results
    test_speakers = sorted(datamodule.manifest["speaker"][datamodule.assignment == "test"].unique())
    metrics = {
        "test_ua": results["ua"], "test_wa": results["wa"], "test_macro_f1": results["macro_f1"],
        "classes": model.classes, "confusion_matrix": results["confusion_matrix"],
        "per_class": results["per_class"],
        "model": choices.get("model", model.name), "params": model.num_parameters,
        "data": choices.get("data", "custom"), "split": choices.get("split", type(datamodule.split).__name__),
        "seed": cfg.seed, "train_seconds": round(train_seconds, 2),
        "best_epoch": best_epoch(checkpoint.best_model_path) if checkpoint else None,
        "epochs_run": trainer.current_epoch,
        f"best_{cfg.monitor}": float(checkpoint.best_model_score) if checkpoint and checkpoint.best_model_score
        is not None else None,
        "clips": {part: int((datamodule.assignment == part).sum()) for part in splits.PARTS},
        "test_speakers": test_speakers,
        "skipped_files": len(datamodule.skipped),
        "choices": choices, "versions": library_versions(),
    }
    write_text(run_dir / "metrics.json", json.dumps(metrics, indent=2))
    plot_confusion_matrix(results["confusion_matrix"], model.classes, run_dir / "confusion_matrix.png",
                          title=f"{metrics['model']} on {metrics['data']} ({metrics['split']}), "
                                f"UA {metrics['test_ua']:.3f}")
    log.info("test UA %.4f, WA %.4f, macro-F1 %.4f -> %s", metrics["test_ua"], metrics["test_wa"],
             metrics["test_macro_f1"], run_dir / "metrics.json")
    return metrics


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float:
    # The return value lets Hydra sweepers (e.g. Optuna) optimise the test-free validation score.
    return train(cfg)["test_ua"]


if __name__ == "__main__":
    main()
