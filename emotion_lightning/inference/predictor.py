"""`EmotionPredictor`: emotions of files, folders or arrays from a checkpoint (PyTorch) or an ONNX export.

Audio is decoded by `emotion_lightning.data.audio.load` (any rate, mixed to mono), cut into the model's
training window with overlap (`windows.py`), run in batches, and summarised per file: emotion,
confidence and per-class probabilities (the mean over windows) plus the per-window timeline.
The ONNX path imports neither torch nor torchaudio, so a deployment can run on onnxruntime alone.
"""

import itertools
import json
import logging
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from emotion_lightning.data.audio import (AUDIO_EXTENSIONS, FFMPEG_EXTENSIONS, AudioError, find_audio_files, load,
                                    to_model_rate)
from emotion_lightning.data.errors import MissingFileError, SettingError
from emotion_lightning.inference.metadata import METADATA_KEY, default_output, metadata
from emotion_lightning.inference.windows import cut, window_starts

log = logging.getLogger(__name__)
PREDICT_EXTENSIONS = AUDIO_EXTENSIONS + FFMPEG_EXTENSIONS


def check_device(device: str) -> None:
    if device not in ("cpu", "cuda", "auto"):
        raise SettingError(f"device={device!r}; use cpu, cuda or auto")


def resolve_device(device: str) -> str:
    """cpu, cuda or auto (cuda when a GPU is visible) for the PyTorch backend."""
    import torch

    check_device(device)
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise SettingError("device=cuda but PyTorch sees no CUDA GPU here; use device=cpu or device=auto")
    return device


class TorchBackend:
    """A checkpoint's front-end + network + softmax in PyTorch."""

    def __init__(self, model, device: str = "cpu"):
        import torch

        from emotion_lightning.inference.export import ProbabilityGraph

        self.torch, self.device = torch, resolve_device(device)
        self.graph = ProbabilityGraph(model).to(self.device).eval()

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            return self.graph(self.torch.from_numpy(windows).to(self.device)).float().cpu().numpy()


class OnnxBackend:
    """An ONNX export run by onnxruntime; `info` holds the classes and audio settings stored in the file."""

    def __init__(self, path: str | Path, device: str = "cpu", threads: int = 0):
        import onnxruntime

        check_device(device)
        if not Path(path).is_file():
            raise MissingFileError(f"ONNX model {path} does not exist; write it with "
                                   "`python -m emotion_lightning.export ckpt=... format=onnx`")
        providers = ["CPUExecutionProvider"]
        if device in ("cuda", "auto") and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        elif device == "cuda":
            raise SettingError("device=cuda with backend=onnx needs onnxruntime-gpu (pip install onnxruntime-gpu)")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(str(path), options, providers=providers)
        stored = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if stored is None:
            raise SettingError(f"{path} was not written by emotion_lightning.export (no class metadata); export the "
                               "checkpoint with `python -m emotion_lightning.export ckpt=... format=onnx`")
        self.info = json.loads(stored)
        self.window = self.session.get_inputs()[0].shape[1]

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"waveform": np.ascontiguousarray(windows, dtype=np.float32)})[0]


class EmotionPredictor:
    """Emotion of any recording: overlapping model windows, batched, averaged into one answer per file."""

    def __init__(self, backend, classes: list[str], sample_rate: int, window_seconds: float,
                 hop_seconds: float | None = None, batch_size: int = 16, model_name: str = "model"):
        self.backend, self.classes, self.sample_rate = backend, list(classes), int(sample_rate)
        self.window = int(round(window_seconds * self.sample_rate))
        self.hop = int(round((hop_seconds if hop_seconds else window_seconds / 2) * self.sample_rate))
        window_starts(self.window, self.window, self.hop)  # refuses a bad window or hop now, not on first use
        if batch_size < 1:
            raise SettingError(f"batch_size={batch_size}; use 1 or more windows per forward pass")
        self.batch_size, self.model_name = batch_size, model_name

    @classmethod
    def from_checkpoint(cls, path: str | Path, backend: str = "torch", device: str = "cpu",
                        window_seconds: float | None = None, hop_seconds: float | None = None,
                        batch_size: int = 16) -> "EmotionPredictor":
        """From a training checkpoint (.ckpt) or an ONNX export (.onnx).

        backend=onnx with a .ckpt exports it beside the checkpoint on first use (and again when the
        checkpoint is newer), then runs onnxruntime.
        """
        path = Path(path)
        if path.suffix == ".onnx":
            return cls.from_onnx(path, device, window_seconds, hop_seconds, batch_size)
        if backend not in ("torch", "onnx"):
            raise SettingError(f"backend={backend!r}; use torch or onnx")
        if not path.is_file():
            raise MissingFileError(f"checkpoint {path} does not exist; pass the .ckpt in a run dir's checkpoints/")
        if backend == "onnx":
            exported = ensure_onnx_export(path)
            return cls.from_onnx(exported, device, window_seconds, hop_seconds, batch_size)
        from emotion_lightning.models.module import EmotionClassifier

        model = EmotionClassifier.from_checkpoint(path)
        info = metadata(model)
        return cls(TorchBackend(model, device), info["classes"], info["sample_rate"],
                   window_seconds or info["clip_seconds"], hop_seconds, batch_size, info["model"])

    @classmethod
    def from_onnx(cls, path: str | Path, device: str = "cpu", window_seconds: float | None = None,
                  hop_seconds: float | None = None, batch_size: int = 16, threads: int = 0) -> "EmotionPredictor":
        backend = OnnxBackend(path, device, threads)
        info = backend.info
        if window_seconds and int(round(window_seconds * info["sample_rate"])) != backend.window:
            raise SettingError(f"window_seconds={window_seconds}: the ONNX export of {path} takes "
                               f"{info['clip_seconds']} s windows; leave window_seconds unset or use backend=torch")
        return cls(backend, info["classes"], info["sample_rate"], info["clip_seconds"], hop_seconds, batch_size,
                   info["model"])

    # --- public API -------------------------------------------------------------------------------
    def predict_array(self, waveform, sample_rate: int) -> dict:
        """Emotion of an in-memory recording: (samples,) or (samples, channels) at `sample_rate`."""
        mono = to_model_rate(np.asarray(waveform), int(sample_rate), self.sample_rate)
        return self._predict_waveforms([mono])[0]

    def predict_file(self, path: str | Path) -> dict:
        """Emotion of one file; raises AudioError when it cannot be decoded."""
        return {"file": str(path), **self._predict_waveforms([load(path, self.sample_rate)])[0]}

    def predict_files(self, paths: list[str | Path], progress: bool = False) -> list[dict]:
        """Emotions of many files in input order, in batches of windows across files. An unreadable file
        gives `{"file": ..., "error": ...}` and the others go on."""
        results: list[dict | None] = [None] * len(paths)
        pending: list[tuple[int, np.ndarray]] = []
        pending_windows = 0
        for index, path in enumerate(tqdm(paths, desc="predict", unit="file", disable=not progress)):
            try:
                waveform = load(path, self.sample_rate)
            except AudioError as error:
                log.warning("skipped %s: %s", path, error)
                results[index] = {"file": str(path), "error": str(error)}
                continue
            pending.append((index, waveform))
            pending_windows += len(window_starts(len(waveform), self.window, self.hop))
            if pending_windows >= self.batch_size:
                self._fill(results, pending, paths)
                pending, pending_windows = [], 0
        self._fill(results, pending, paths)
        return results

    def predict_directory(self, folder: str | Path, progress: bool = False) -> list[dict]:
        """Every audio file under `folder` (recursively, sorted by path)."""
        return self.predict_files(audio_files(folder), progress)

    # --- internals --------------------------------------------------------------------------------
    def _fill(self, results: list, pending: list[tuple[int, np.ndarray]], paths: list) -> None:
        summaries = self._predict_waveforms([waveform for _, waveform in pending])
        for (index, _), summary in zip(pending, summaries):
            results[index] = {"file": str(paths[index]), **summary}

    def _predict_waveforms(self, waveforms: list[np.ndarray]) -> list[dict]:
        """Window every waveform, run all windows in batches of `batch_size`, summarise per waveform."""
        if not waveforms:
            return []
        starts = [window_starts(len(w), self.window, self.hop) for w in waveforms]
        rows = itertools.chain.from_iterable(cut(w, s, self.window) for w, s in zip(waveforms, starts))
        batches = []
        while batch := list(itertools.islice(rows, self.batch_size)):
            batches.append(self.backend(np.stack(batch)))
        probabilities = np.concatenate(batches).astype(np.float64)
        summaries, offset = [], 0
        for waveform, file_starts in zip(waveforms, starts):
            file_probabilities = probabilities[offset:offset + len(file_starts)]
            offset += len(file_starts)
            summaries.append(self._summary(len(waveform), file_starts, file_probabilities))
        return summaries

    def _summary(self, num_samples: int, starts: list[int], probabilities: np.ndarray) -> dict:
        """Aggregate = mean of the window probabilities; plus one timeline entry per window."""
        rate = self.sample_rate
        timeline = [{"start": start / rate, "end": min(start + self.window, num_samples) / rate,
                     **self._verdict(p)} for start, p in zip(starts, probabilities)]
        return {"duration": num_samples / rate, **self._verdict(probabilities.mean(axis=0)), "windows": timeline}

    def _verdict(self, probabilities: np.ndarray) -> dict:
        best = int(np.argmax(probabilities))
        return {"emotion": self.classes[best], "confidence": float(probabilities[best]),
                "probabilities": {name: float(p) for name, p in zip(self.classes, probabilities)}}

    def describe(self) -> dict:
        """Model and windowing settings, for reports and /health."""
        return {"model": self.model_name, "classes": self.classes, "sample_rate": self.sample_rate,
                "window_seconds": self.window / self.sample_rate, "hop_seconds": self.hop / self.sample_rate,
                "backend": "onnx" if isinstance(self.backend, OnnxBackend) else "torch"}


def ensure_onnx_export(checkpoint: Path) -> Path:
    """The ONNX export beside `checkpoint`, written first when missing or older than the checkpoint
    (torch is imported only then)."""
    exported = default_output(checkpoint, "onnx")
    if not exported.is_file() or exported.stat().st_mtime < checkpoint.stat().st_mtime:
        from emotion_lightning.inference.export import export_onnx
        from emotion_lightning.models.module import EmotionClassifier

        log.info("exporting %s to %s for onnxruntime", checkpoint, exported)
        export_onnx(EmotionClassifier.from_checkpoint(checkpoint), exported)
    return exported


def audio_files(folder: str | Path) -> list[Path]:
    """Audio files under `folder` by extension (WAV, FLAC, OGG/Opus, MP3, M4A/AAC), sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingFileError(f"audio={folder} is not a folder")
    found = find_audio_files(folder, PREDICT_EXTENSIONS)
    if not found:
        raise MissingFileError(f"no audio files ({', '.join(PREDICT_EXTENSIONS)}) under {folder}")
    return found


def input_files(audio) -> list[Path]:
    """`audio=` as files: a folder (recursively), one file, or a list of files."""
    if isinstance(audio, (list, tuple)) or type(audio).__name__ == "ListConfig":
        return [Path(p) for p in audio]
    path = Path(audio)
    if path.is_dir():
        return audio_files(path)
    if not path.exists():
        raise MissingFileError(f"audio={audio} does not exist; pass a file, a folder or a list [a.wav,b.flac]")
    return [path]


def predictor_from_config(cfg) -> EmotionPredictor:
    """The predictor the shared settings (conf/_inference.yaml) describe: predict and serve use it."""
    return EmotionPredictor.from_checkpoint(cfg.ckpt, backend=cfg.backend, device=cfg.device,
                                            window_seconds=cfg.window_seconds, hop_seconds=cfg.hop_seconds,
                                            batch_size=cfg.batch_size)
