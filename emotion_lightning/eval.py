"""Evaluate a checkpoint without training: `python -m emotion_lightning.eval ckpt_path=... [data=...] [split=...]`."""

import logging
from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

import emotion_lightning  # noqa: F401  (registers the config resolvers)
from emotion_lightning.evaluation.test_results import save_report, test_report
from emotion_lightning.models.module import EmotionClassifier
from emotion_lightning.training.build import build_datamodule
from emotion_lightning.training.commands import command
from emotion_lightning.training.run_facts import run_record

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> dict:
    """Test the checkpoint on the configured data and split; metrics.json adds per-group breakdowns."""
    model = EmotionClassifier.from_checkpoint(cfg.ckpt_path)
    trained = model.run_config
    # Labels are indexed by the checkpoint's classes, and clips cut as the model was trained.
    datamodule = build_datamodule(cfg, classes=model.classes, sample_rate=trained["audio"]["sample_rate"],
                                  clip_seconds=trained["audio"]["clip_seconds"])
    trainer = instantiate(cfg.trainer, logger=False, callbacks=[])
    trainer.test(model, datamodule=datamodule)
    report = run_record(
        cfg, test_report(model, datamodule), model, datamodule,
        ckpt_path=str(Path(cfg.ckpt_path).resolve()), model=trained.get("model", {}).get("name", "model"),
        augment=trained.get("augment", {}).get("name", "none"),
        trained_on={"data": trained["data"].get("include") or sorted(trained["data"]["corpora"]),
                    "seed": trained.get("seed")})
    save_report(Path(cfg.paths.output_dir), report)
    return report


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> float:
    with command():
        return evaluate(cfg)["test_ua"]


if __name__ == "__main__":
    main()
