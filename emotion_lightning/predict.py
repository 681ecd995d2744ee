"""Predict emotions of audio files: `python -m emotion_lightning.predict ckpt=PATH audio=FILE_OR_DIR [output=...]`.

Writes one JSON (atomically) with the model's settings and, per file, emotion, confidence, per-class
probabilities and the per-window timeline, or the error that made the file unreadable.
"""

import json
import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from emotion_lightning.data.atomic import write_text
from emotion_lightning.inference.predictor import input_files, predictor_from_config
from emotion_lightning.training.commands import command

log = logging.getLogger(__name__)


def predict(cfg: DictConfig) -> dict:
    files = input_files(cfg.audio)
    predictor = predictor_from_config(cfg)
    results = predictor.predict_files(files, progress=cfg.progress)
    failed = sum("error" in r for r in results)
    report = {**predictor.describe(), "checkpoint": str(Path(cfg.ckpt).resolve()), "files": len(results),
              "failed": failed, "predictions": results}
    write_text(cfg.output, json.dumps(report, indent=2) + "\n")
    for result in results:
        verdict = result.get("error") or f"{result['emotion']} ({result['confidence']:.2f})"
        log.info("%s: %s", result["file"], verdict)
    log.info("wrote %s (%d files, %d unreadable)", cfg.output, len(results), failed)
    return report


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    with command():
        predict(cfg)


if __name__ == "__main__":
    main()
