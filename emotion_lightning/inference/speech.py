"""Which model windows hold speech, decided outside the exported graph so PyTorch and ONNX agree.

Two checks, both on the waveform before the emotion model runs:
- a silence floor: a window whose level after removing its DC offset is below SILENCE_DBFS (digital
  silence, a constant offset, dither) holds no speech, whatever detector is chosen;
- a voice-activity detector (vad=silero, the default): Silero VAD's ONNX model, shipped inside the
  silero-vad PyPI package and run here with onnxruntime and numpy, so it works offline and the ONNX path
  of the predictor still never imports torch. It scores every 32 ms frame at 16 kHz; a window holds speech
  when at least `min_speech_seconds` of its frames score `threshold` or more (Silero's own defaults for
  get_speech_timestamps: 0.5 and 250 ms).
"""

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np

from emotion_lightning.data.audio import resample

SILENCE_DBFS = -70.0  # RMS after removing DC; quiet room noise is around -60 dBFS, speech -40 to -20
VADS = ("silero", "none")
SILERO_RATE, SILERO_FRAME, SILERO_CONTEXT = 16000, 512, 64  # the model's rate, frame and context (samples)


def silent(piece: np.ndarray) -> bool:
    """True for audio with no signal above the floor: zeros, a constant offset, a single sample."""
    if len(piece) < 2:
        return True
    level = float(np.sqrt(np.mean((piece - piece.mean(dtype=np.float64)) ** 2)))
    return level <= 10 ** (SILENCE_DBFS / 20)


@lru_cache(maxsize=1)
def silero_session():
    """One onnxruntime session on Silero VAD's ONNX file, found without importing the silero_vad package
    (its __init__ imports torch)."""
    import onnxruntime

    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("vad=silero needs the silero-vad package (pip install silero-vad); or set vad=none to "
                         "leave out only digitally silent windows")
    model = Path(spec.submodule_search_locations[0]) / "data" / "silero_vad.onnx"
    if not model.is_file():
        raise ValueError(f"the silero-vad package has no {model.name} at {model.parent}; reinstall it "
                         "(pip install --force-reinstall silero-vad) or set vad=none")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1  # a tiny model: threads cost more than they give
    return onnxruntime.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


class SileroVad:
    """Speech probability per 32 ms frame from Silero VAD (stateful over the recording, as the model expects)."""

    frame_seconds = SILERO_FRAME / SILERO_RATE

    def __init__(self, threshold: float = 0.5, min_speech_seconds: float = 0.25):
        if not 0 < threshold < 1 or min_speech_seconds < 0:
            raise ValueError(f"threshold={threshold}, min_speech_seconds={min_speech_seconds}; need a threshold "
                             "between 0 and 1 and a non-negative minimum")
        self.threshold, self.min_speech_seconds = threshold, min_speech_seconds
        self.session = silero_session()

    def frame_probabilities(self, waveform: np.ndarray, sample_rate: int) -> np.ndarray:
        audio = resample(np.asarray(waveform, dtype=np.float32), sample_rate, SILERO_RATE)
        frames = -(-len(audio) // SILERO_FRAME)
        audio = np.pad(audio, (SILERO_CONTEXT, frames * SILERO_FRAME - len(audio)))
        state, rate = np.zeros((2, 1, 128), np.float32), np.array(SILERO_RATE, np.int64)
        scores = np.empty(frames, np.float32)
        for frame in range(frames):
            start = frame * SILERO_FRAME  # the frame plus the 64 samples before it, as silero's OnnxWrapper does
            chunk = audio[None, start:start + SILERO_CONTEXT + SILERO_FRAME]
            output, state = self.session.run(None, {"input": chunk, "state": state, "sr": rate})
            scores[frame] = output[0, 0]
        return scores

    def speech_in(self, scores: np.ndarray, start_seconds: float, end_seconds: float) -> bool:
        """Enough speech frames (by their start time) inside [start, end)."""
        first = int(np.ceil(start_seconds / self.frame_seconds - 1e-9))
        last = int(np.ceil(end_seconds / self.frame_seconds - 1e-9))
        speech = np.count_nonzero(scores[first:last] >= self.threshold) * self.frame_seconds
        return bool(speech > 0 and speech >= self.min_speech_seconds - 1e-9)


def speech_detector(vad: str) -> SileroVad | None:
    """The detector a `vad=` setting names (None for vad=none: the silence floor alone)."""
    if vad not in VADS:
        raise ValueError(f"vad={vad!r}; use silero (voice-activity detection) or none (leave out only digitally "
                         "silent windows)")
    return SileroVad() if vad == "silero" else None


def speech_windows(waveform: np.ndarray, sample_rate: int, starts: list[int], window: int,
                   detector: SileroVad | None) -> list[bool]:
    """Per window (at `starts`, `window` samples long, cut short at the end): does it hold speech?"""
    pieces = [waveform[start:start + window] for start in starts]
    loud = [not silent(piece) for piece in pieces]
    if detector is None or not any(loud):
        return loud
    scores = detector.frame_probabilities(waveform, sample_rate)
    return [is_loud and detector.speech_in(scores, start / sample_rate, (start + len(piece)) / sample_rate)
            for is_loud, start, piece in zip(loud, starts, pieces)]
