"""`EmotionPredictor`: emotions of files, folders or arrays from a checkpoint (PyTorch) or an ONNX export.

Audio is decoded by `emotion_lightning.data.audio.load` (any rate, mixed to mono), refused when shorter
than `min_seconds`, cut into the model's training window with overlap (`windows.py`), checked for speech
per window (`speech.py`: windows without speech are marked and not run), run in batches, and summarised
per file: emotion, confidence and per-class probabilities (the mean over the speech windows) plus the
per-window timeline; a file without speech gets `"emotion": null, "no_speech": true`.
The ONNX path imports neither torch nor torchaudio, so a deployment can run on onnxruntime alone.
"""

import contextlib
import itertools
import json
import logging
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from emotion_lightning.data.audio import (AUDIO_EXTENSIONS, FFMPEG_EXTENSIONS, AudioError, DecodeLimits,
                                          channels_last, find_audio_files, load, to_model_rate)
from emotion_lightning.data.errors import MissingFileError, SettingError
from emotion_lightning.evaluation import calibration
from emotion_lightning.inference.metadata import METADATA_KEY, default_output, metadata
from emotion_lightning.inference.speech import speech_detector, speech_windows
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
        self.runtime = onnxruntime.InferenceSession(str(path), options, providers=providers)
        stored = self.runtime.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if stored is None:
            raise SettingError(f"{path} was not written by emotion_lightning.export (no class metadata); export the "
                               "checkpoint with `python -m emotion_lightning.export ckpt=... format=onnx`")
        self.info = json.loads(stored)
        self.window = self.runtime.get_inputs()[0].shape[1]

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        return self.runtime.run(None, {"waveform": np.ascontiguousarray(windows, dtype=np.float32)})[0]


class EmotionPredictor:
    """Emotion of any recording: overlapping model windows, batched, averaged into one answer per file.

    Only windows with speech are run and averaged (vad=silero, or vad=none for the silence floor alone), and
    recordings shorter than `min_seconds` are refused, so silence, a DC offset or a click never get a label.
    """

    def __init__(self, backend, classes: list[str], sample_rate: int, window_seconds: float,
                 hop_seconds: float | None = None, batch_size: int = 16, model_name: str = "model",
                 vad: str = "silero", min_seconds: float = 0.5, vad_threshold: float = 0.3,
                 limits: DecodeLimits = DecodeLimits(), temperature: float = 1.0):
        if not temperature > 0:
            raise SettingError(f"temperature={temperature}; a calibration temperature must be positive")
        self.temperature = float(temperature)  # 1: the probabilities as trained (not calibrated)
        self.limits = limits  # what a file may hold before it is decoded (rate, channels, length)
        self.backend, self.classes, self.sample_rate = backend, list(classes), int(sample_rate)
        self.window, self.hop = self.windowing(window_seconds, hop_seconds)
        if batch_size < 1:
            raise SettingError(f"batch_size={batch_size}; use 1 or more windows per forward pass")
        if min_seconds is None or min_seconds < 0:
            raise SettingError(f"min_seconds={min_seconds}; use 0 or more seconds (0.5 by default)")
        self.batch_size, self.model_name = batch_size, model_name
        self.vad, self.detector, self.min_seconds = vad, speech_detector(vad, vad_threshold), float(min_seconds)
        self.vad_threshold = vad_threshold

    @classmethod
    def from_checkpoint(cls, path: str | Path, backend: str = "torch", device: str = "cpu",
                        window_seconds: float | None = None, hop_seconds: float | None = None,
                        batch_size: int = 16, vad: str = "silero", min_seconds: float = 0.5,
                        vad_threshold: float = 0.3, limits: DecodeLimits = DecodeLimits()) -> "EmotionPredictor":
        """From a training checkpoint (.ckpt) or an ONNX export (.onnx).

        backend=onnx with a .ckpt exports it beside the checkpoint on first use (and again when the
        checkpoint is newer), then runs onnxruntime.
        """
        path = Path(path)
        if path.suffix == ".onnx":
            return cls.from_onnx(path, device, window_seconds, hop_seconds, batch_size, vad=vad,
                                 min_seconds=min_seconds, vad_threshold=vad_threshold, limits=limits)
        if backend not in ("torch", "onnx"):
            raise SettingError(f"backend={backend!r}; use torch or onnx")
        if not path.is_file():
            raise MissingFileError(f"checkpoint {path} does not exist; pass the .ckpt in a run dir's checkpoints/")
        if backend == "onnx":
            exported = ensure_onnx_export(path)
            return cls.from_onnx(exported, device, window_seconds, hop_seconds, batch_size, vad=vad,
                                 min_seconds=min_seconds, vad_threshold=vad_threshold, limits=limits)
        from emotion_lightning.models.module import EmotionClassifier

        model = EmotionClassifier.from_checkpoint(path)
        info = metadata(model)
        return cls(TorchBackend(model, device), info["classes"], info["sample_rate"],
                   info["clip_seconds"] if window_seconds is None else window_seconds, hop_seconds, batch_size,
                   info["model"], vad, min_seconds, vad_threshold, limits, info["temperature"])

    @classmethod
    def from_onnx(cls, path: str | Path, device: str = "cpu", window_seconds: float | None = None,
                  hop_seconds: float | None = None, batch_size: int = 16, threads: int = 0, vad: str = "silero",
                  min_seconds: float = 0.5, vad_threshold: float = 0.3,
                  limits: DecodeLimits = DecodeLimits()) -> "EmotionPredictor":
        backend = OnnxBackend(path, device, threads)
        info = backend.info
        if window_seconds is not None and int(round(window_seconds * info["sample_rate"])) != backend.window:
            raise SettingError(f"window_seconds={window_seconds}: the ONNX export of {path} takes "
                               f"{info['clip_seconds']} s windows; leave window_seconds unset or use backend=torch")
        return cls(backend, info["classes"], info["sample_rate"], info["clip_seconds"], hop_seconds, batch_size,
                   info["model"], vad, min_seconds, vad_threshold, limits, info.get("temperature", 1.0))

    def windowing(self, window_seconds: float, hop_seconds: float | None = None) -> tuple[int, int]:
        """Window and hop in samples (hop: half the window when None), or SettingError saying what works."""
        window = int(round(window_seconds * self.sample_rate))
        if window <= 0:
            raise SettingError(f"window_seconds={window_seconds}; use a positive length in seconds (leave it unset "
                               "for the model's training clip)")
        hop = int(round((window_seconds / 2 if hop_seconds is None else hop_seconds) * self.sample_rate))
        if not 0 < hop <= window:
            raise SettingError(f"hop_seconds={hop_seconds}; use more than 0 and at most the window, "
                               f"{window / self.sample_rate:g} s (leave it unset for half a window)")
        return window, hop

    # --- public API -------------------------------------------------------------------------------
    def predict_array(self, waveform, sample_rate: int) -> dict:
        """Emotion of an in-memory recording at `sample_rate` (required): a numpy array or torch tensor of any
        float or integer dtype, (samples,), (channels, samples) or (samples, channels). Raises AudioError (a
        ValueError) naming the problem for a shape whose channel axis is ambiguous, NaN/Inf, a missing or
        non-positive rate, or audio shorter than min_seconds."""
        data, rate = channels_last(waveform, sample_rate)
        return self._predict_waveforms([self._long_enough(to_model_rate(data, rate, self.sample_rate))])[0]

    def predict_file(self, path: str | Path) -> dict:
        """Emotion of one file; raises AudioError when it cannot be read, decoded, or is too short."""
        waveform = self._long_enough(self._load(path))
        return {"file": str(path), **self._predict_waveforms([waveform])[0]}

    def predict_files(self, paths: list[str | Path], progress: bool = False) -> list[dict]:
        """Emotions of many files in input order, in batches of windows across files. A file that cannot be
        used gives `{"file": ..., "error": ...}` and the others go on; the caller reports it."""
        results: list[dict | None] = [None] * len(paths)
        pending: list[tuple[int, np.ndarray]] = []
        pending_windows = 0
        for index, path in enumerate(tqdm(paths, desc="predict", unit="file", disable=not progress)):
            try:
                waveform = self._long_enough(self._load(path))
            except AudioError as error:
                results[index] = {"file": str(path), "error": str(error)}
                continue
            except Exception as error:  # e.g. a decoder's own failure: the other files go on; the log keeps the trace
                log.warning("unexpected error reading %s", path, exc_info=True)
                results[index] = {"file": str(path), "error": f"cannot read the file ({type(error).__name__}: {error})"}
                continue
            pending.append((index, waveform))
            pending_windows += len(window_starts(len(waveform), self.window, self.hop))
            if pending_windows >= self.batch_size:
                self._fill(results, pending, paths)
                pending, pending_windows = [], 0
        self._fill(results, pending, paths)
        return results

    def predict_directory(self, folder: str | Path, progress: bool = False) -> list[dict]:
        """Every audio file under `folder` (recursively, sorted by path), as `audio=folder` does."""
        return self.predict_files(input_files(folder), progress)

    # --- internals --------------------------------------------------------------------------------
    def _load(self, path: str | Path) -> np.ndarray:
        """`load`, with a folder that holds no audio (requested, or named like audio) said as such."""
        try:
            return load(path, self.sample_rate, self.limits)
        except AudioError:
            with contextlib.suppress(OSError):  # a path stat cannot reach keeps load's permission message
                if Path(path).is_dir() and not find_audio_files(path, PREDICT_EXTENSIONS):
                    raise AudioError(f"a folder with no audio files ({', '.join(PREDICT_EXTENSIONS)}) inside") from None
            raise

    def _fill(self, results: list, pending: list[tuple[int, np.ndarray]], paths: list) -> None:
        summaries = self._predict_waveforms([waveform for _, waveform in pending])
        for (index, _), summary in zip(pending, summaries):
            results[index] = {"file": str(paths[index]), **summary}

    def check_length(self, num_samples: int) -> None:
        """AudioError naming min_seconds when a recording of `num_samples` is too short to judge (a shorter one
        than a window but at least min_seconds is zero-padded, as in training)."""
        seconds = num_samples / self.sample_rate
        if num_samples == 0 or seconds < self.min_seconds:
            raise AudioError(f"{seconds:.3g} s of audio is shorter than the minimum min_seconds={self.min_seconds:g} "
                             "s; record a longer clip (or lower min_seconds)")

    def _long_enough(self, waveform: np.ndarray) -> np.ndarray:
        self.check_length(len(waveform))
        return waveform

    def _predict_waveforms(self, waveforms: list[np.ndarray]) -> list[dict]:
        """Window every waveform, run its speech windows in batches of `batch_size`, summarise per waveform."""
        if not waveforms:
            return []
        starts = [window_starts(len(w), self.window, self.hop) for w in waveforms]
        speech = [speech_windows(w, self.sample_rate, s, self.window, self.detector) for w, s in zip(waveforms, starts)]
        rows = itertools.chain.from_iterable(
            itertools.compress(cut(w, s, self.window), keep) for w, s, keep in zip(waveforms, starts, speech))
        probabilities = iter(self.classify(rows))
        return [self._summary(len(waveform), file_starts, [next(probabilities) if keep else None for keep in mask])
                for waveform, file_starts, mask in zip(waveforms, starts, speech)]

    def classify(self, windows) -> np.ndarray:
        """Class probabilities as trained (windows, classes) of model windows (an iterable of equal-length arrays),
        run in batches of `batch_size`; `verdict` calibrates them."""
        windows = iter(windows)
        batches = [np.empty((0, len(self.classes)))]
        while batch := list(itertools.islice(windows, self.batch_size)):
            batches.append(self.backend(np.stack(batch)))
        return np.concatenate(batches).astype(np.float64)

    def calibrated(self, probabilities: np.ndarray) -> np.ndarray:
        """softmax(log p / T) with the model's temperature: the same argmax as p. Averages of windows are taken
        before it, as the test of a run averages crops before it, so a file's label never depends on T."""
        if self.temperature == 1.0:
            return probabilities
        return calibration.probabilities(calibration.logits_of(probabilities)[None], self.temperature)[0]

    def _summary(self, num_samples: int, starts: list[int], probabilities: list[np.ndarray | None]) -> dict:
        """Aggregate = mean of the speech windows' probabilities (no label without speech); plus one timeline
        entry per window, marked `speech: false` without a label when it holds none."""
        rate = self.sample_rate
        timeline = [{"start": start / rate, "end": min(start + self.window, num_samples) / rate,
                     "speech": p is not None, **self.verdict(p)} for start, p in zip(starts, probabilities)]
        spoken = [p for p in probabilities if p is not None]
        return {"duration": num_samples / rate, **self.verdict(np.mean(spoken, axis=0) if spoken else None),
                "no_speech": not spoken, "calibrated": self.temperature != 1.0, "temperature": self.temperature,
                "windows": timeline}

    def verdict(self, probabilities: np.ndarray | None) -> dict:
        """Emotion, confidence and calibrated per-class probabilities of one vector of probabilities as trained (a
        window's, or a mean of windows'); all None without one."""
        if probabilities is None:
            return {"emotion": None, "confidence": None, "probabilities": None}
        probabilities = self.calibrated(probabilities)
        best = int(np.argmax(probabilities))
        return {"emotion": self.classes[best], "confidence": float(probabilities[best]),
                "probabilities": {name: float(p) for name, p in zip(self.classes, probabilities)}}

    def describe(self) -> dict:
        """Model, windowing and speech settings, for reports and /health."""
        return {"model": self.model_name, "classes": self.classes, "sample_rate": self.sample_rate,
                "window_seconds": self.window / self.sample_rate, "hop_seconds": self.hop / self.sample_rate,
                "vad": self.vad, "vad_threshold": self.vad_threshold, "min_seconds": self.min_seconds,
                "calibrated": self.temperature != 1.0, "temperature": self.temperature,
                "backend": "onnx" if isinstance(self.backend, OnnxBackend) else "torch"}


def ensure_onnx_export(checkpoint: Path) -> Path:
    """The ONNX export beside `checkpoint`, written first when missing or older than the checkpoint
    (torch is imported only then)."""
    exported = default_output(checkpoint, "onnx")
    if not exported.is_file() or exported.stat().st_mtime < checkpoint.stat().st_mtime:
        from emotion_lightning.inference.export import write_checked
        from emotion_lightning.models.module import EmotionClassifier

        log.info("exporting %s to %s for onnxruntime", checkpoint, exported)
        try:
            write_checked(EmotionClassifier.from_checkpoint(checkpoint), exported, "onnx")
        except PermissionError:
            raise SettingError(f"backend=onnx exports {checkpoint} beside it, but {exported.parent} is not writable: "
                               f"export it elsewhere (emotion-lightning export ckpt={checkpoint} "
                               "output=DIR/model.onnx) and pass that file as ckpt=") from None
    return exported


def input_files(audio) -> list[Path]:
    """`audio=` (a file, a folder, or a list of both) as the paths to answer for, so every request gets an entry.

    A folder becomes the audio files under it (recursively, sorted; WAV, FLAC, OGG/Opus, MP3, M4A/AAC) plus
    whatever is only named like audio there (a folder x.wav, a broken link), which then gets an error entry
    instead of vanishing; a folder with none is kept as itself to get one. Missing paths are kept as well:
    `predict_files` turns each into an error entry saying what is wrong.
    """
    many = isinstance(audio, (list, tuple)) or type(audio).__name__ == "ListConfig"
    requested = list(audio) if many else [audio]
    if not requested or any(item is None or str(item) == "" for item in requested):
        raise SettingError(f"audio={audio!r} names no file; pass a file, a folder or a list [a.wav,recordings/]")
    files: list[Path] = []
    for item in requested:
        path = Path(item)
        found = find_audio_files(path, PREDICT_EXTENSIONS, files_only=False) if path.is_dir() else []
        files.extend(found or [path])
    return files


def predictor_from_config(cfg) -> EmotionPredictor:
    """The predictor the shared settings (conf/_inference.yaml) describe: predict and serve use it."""
    return EmotionPredictor.from_checkpoint(cfg.ckpt, backend=cfg.backend, device=cfg.device,
                                            window_seconds=cfg.window_seconds, hop_seconds=cfg.hop_seconds,
                                            batch_size=cfg.batch_size, vad=cfg.vad, min_seconds=cfg.min_seconds,
                                            vad_threshold=cfg.vad_threshold,
                                            limits=DecodeLimits(max_sample_rate=cfg.max_sample_rate,
                                                                max_channels=cfg.max_channels))
