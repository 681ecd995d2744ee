"""What an exported model carries besides its graph (classes, audio rate and window, model name), and where
exports are written. Torch-free, so the ONNX path of the predictor never imports torch."""

from emotion_lightning.data.errors import SettingError

from pathlib import Path

METADATA_KEY = "emotion_lightning"  # where an export keeps classes and audio settings
FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}  # export formats and their file endings


def metadata(model) -> dict:
    """A trained EmotionClassifier's classes, audio rate and window, model name and calibration temperature (the
    exported graph gives the probabilities as trained; the predictor divides their logarithm by it)."""
    audio = model.run_config["audio"]
    return {"classes": model.classes, "sample_rate": int(audio["sample_rate"]),
            "clip_seconds": float(audio["clip_seconds"]), "model": model.run_config["model"].get("name", "model"),
            "temperature": float(getattr(model, "temperature", 1.0))}


def window_samples(info: dict) -> int:
    return int(round(info["clip_seconds"] * info["sample_rate"]))


def default_output(ckpt: str | Path, fmt: str) -> Path:
    """Beside the checkpoint: run/checkpoints/last.ckpt -> run/checkpoints/last.onnx."""
    if fmt not in FORMATS:
        raise SettingError(f"format={fmt!r}; use one of {sorted(FORMATS)}")
    ckpt = Path(ckpt)
    return ckpt.with_name(ckpt.stem + FORMATS[fmt])
