"""Evaluate a checkpoint without training: `python -m emotion_lightning.eval ckpt_path=... [data=...] [split=...]`."""

import logging
from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

import emotion_lightning  # noqa: F401  (registers the `len` resolver used by the configs)
from emotion_lightning.evaluation import save_report, test_report
from emotion_lightning.module import EmotionClassifier
from emotion_lightning.run_info import config_choices, library_versions
from emotion_lightning.train import condition_facts, prepare_data

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> dict:
    """Test the checkpoint on the configured data and split; metrics.json adds per-group breakdowns."""
    model = EmotionClassifier.from_checkpoint(cfg.ckpt_path)
    trained = model.run_config
    # Labels are indexed by the checkpoint's classes, and clips cut as the model was trained.
    datamodule = prepare_data(cfg, classes=model.classes, sample_rate=trained["audio"]["sample_rate"],
                              clip_seconds=trained["audio"]["clip_seconds"])
    trainer = instantiate(cfg.trainer, logger=False, callbacks=[])
    trainer.test(model, datamodule=datamodule)
    choices = config_choices()
    report = {
        **test_report(model, datamodule),
        "ckpt_path": str(Path(cfg.ckpt_path).resolve()), "model": trained.get("model", {}).get("name", "model"),
        "params": model.num_parameters, "data": choices.get("data", "custom"),
        "split": choices.get("split", type(datamodule.split).__name__), "seed": cfg.seed,
        **condition_facts(cfg), "augment": trained.get("augment", {}).get("name", "none"),
        "trained_on": {"data": trained["data"].get("include") or sorted(trained["data"]["corpora"]),
                       "seed": trained.get("seed")},
        "choices": choices, "versions": library_versions(),
    }
    save_report(Path(cfg.paths.output_dir), report)
    return report


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> float:
    return evaluate(cfg)["test_ua"]


if __name__ == "__main__":
    main()
