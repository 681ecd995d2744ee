"""Predict emotions of audio files: `python -m emotion_lightning.predict ckpt=PATH audio=FILE_OR_DIR [output=...]`.

Writes one JSON (atomically) with the model's settings and, per file, emotion, confidence, per-class
probabilities and the per-window timeline, or the error that made the file unreadable.
"""

import json
import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig, ListConfig

from emotion_lightning.atomic import write_text
from emotion_lightning.predictor import EmotionPredictor, audio_files

log = logging.getLogger(__name__)


def predictor_from_config(cfg: DictConfig) -> EmotionPredictor:
    """The predictor the shared settings (conf/_inference.yaml) describe; serve uses it too."""
    return EmotionPredictor.from_checkpoint(cfg.ckpt, backend=cfg.backend, device=cfg.device,
                                            window_seconds=cfg.window_seconds, hop_seconds=cfg.hop_seconds,
                                            batch_size=cfg.batch_size)


def input_files(audio) -> list[Path]:
    """`audio=` as files: a folder (recursively), one file, or a list of files."""
    if isinstance(audio, (list, ListConfig)):
        return [Path(p) for p in audio]
    path = Path(audio)
    if path.is_dir():
        return audio_files(path)
    if not path.exists():
        raise FileNotFoundError(f"audio={audio} does not exist; pass a file, a folder or a list [a.wav,b.flac]")
    return [path]


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
    predict(cfg)


if __name__ == "__main__":
    main()
