"""Predict emotions of audio files: `python -m emotion_lightning.predict ckpt=PATH audio=FILE_OR_DIR [output=...]`.

Writes one JSON (atomically) with the model's settings and, per requested file, emotion, confidence, per-class
probabilities and the per-window timeline (`"emotion": null, "no_speech": true` without speech), or the error
that made the file unusable. Exit status: 0 every file answered, 1 some failed, 2 nothing could run (every
file failed, or a setting such as ckpt= stopped the run before any file).
"""

import json
import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from emotion_lightning.data.atomic import write_text
from emotion_lightning.inference.predictor import input_files, predictor_from_config
from emotion_lightning.training.commands import check_command_line, command
from emotion_lightning.training.resolvers import config_dir

log = logging.getLogger(__name__)
ALL_ANSWERED, SOME_FAILED, NOTHING_RAN = 0, 1, 2


def predict(cfg: DictConfig) -> dict:
    files = input_files(cfg.audio)
    predictor = predictor_from_config(cfg)
    results = predictor.predict_files(files, progress=cfg.progress)
    failed = sum("error" in r for r in results)
    no_speech = sum(bool(r.get("no_speech")) for r in results)
    report = {**predictor.describe(), "checkpoint": str(Path(cfg.ckpt).resolve()), "files": len(results),
              "failed": failed, "no_speech": no_speech, "predictions": results}
    write_text(cfg.output, json.dumps(report, indent=2) + "\n")
    for result in results:  # the one place a file's verdict or error is printed
        if "error" in result:
            log.warning("%s: %s", result["file"], result["error"])
        elif result["no_speech"]:
            log.info("%s: no speech", result["file"])
        else:
            log.info("%s: %s (%.2f)", result["file"], result["emotion"], result["confidence"])
    log.info("wrote %s (%d files: %d answered, %d of them without speech, %d failed)", cfg.output, len(results),
             len(results) - failed, no_speech, failed)
    return report


def exit_status(report: dict) -> int:
    """0 when every file was answered (no speech is an answer), 1 when some failed, 2 when all did."""
    if not report["failed"]:
        return ALL_ANSWERED
    return SOME_FAILED if report["failed"] < report["files"] else NOTHING_RAN


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="predict")
def main(cfg: DictConfig) -> None:
    with command(status=NOTHING_RAN):  # a setting that stops every file: ckpt, backend, vad, ...
        report = predict(cfg)
    sys.exit(exit_status(report))


if __name__ == "__main__":
    check_command_line(status=NOTHING_RAN)
    main()
