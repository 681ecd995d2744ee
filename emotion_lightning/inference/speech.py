"""Which model windows hold speech, decided outside the exported graph so PyTorch and ONNX agree.

Two checks, both on the waveform before the emotion model runs:
- a silence floor: a window whose level after removing its DC offset is below SILENCE_DBFS (digital
  silence, a constant offset, dither) holds no speech, whatever detector is chosen;
- a voice-activity detector (vad=silero, the default): Silero VAD's "sequence" ONNX model, shipped inside
  the silero-vad PyPI package and run here with onnxruntime and numpy, so it works offline and the ONNX path
  of the predictor still never imports torch (the package's own wrappers import torch on import). It scores
  every 32 ms frame at 16 kHz, bit-exact with the streaming model but in one ONNX call per 16 s block
  instead of one per frame; a window holds speech when at least `min_speech_seconds` of its frames score
  `threshold` or more. Defaults 0.3 and 60 ms (two frames), below Silero's 0.5 and 250 ms for cutting speech
  segments: with those, 16 of RAVDESS's 1,440 clips (shouted anger, fear and joy) had no speech found; with
  these, 5 do, while steady tones, white or brown noise, mains hum and a DC offset never score above 0.06.
"""

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np

from emotion_lightning.data.audio import resample
from emotion_lightning.data.errors import SettingError

SILENCE_DBFS = -70.0  # RMS after removing DC; quiet room noise is around -60 dBFS, speech -40 to -20
VADS = ("silero", "none")
SILERO_RATE, SILERO_FRAME, SILERO_CONTEXT = 16000, 512, 64  # the model's rate, frame and context (samples)
SILERO_MODEL, SILERO_BLOCK = "silero_vad_16k_sequence.onnx", 512  # frames per ONNX call (16.4 s)


def silent(piece: np.ndarray) -> bool:
    """True for audio with no signal above the floor: zeros, a constant offset, a single sample."""
    if len(piece) < 2:
        return True
    level = float(np.sqrt(np.mean((piece - piece.mean(dtype=np.float64)) ** 2)))
    return level <= 10 ** (SILENCE_DBFS / 20)


@lru_cache(maxsize=1)
def silero_runtime():
    """One onnxruntime InferenceSession on Silero VAD's sequence ONNX file, found without importing the silero_vad
    package (its __init__ imports torch)."""
    import onnxruntime

    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise SettingError("vad=silero needs the silero-vad package (pip install silero-vad); or set vad=none to "
                           "leave out only digitally silent windows")
    model = Path(spec.submodule_search_locations[0]) / "data" / SILERO_MODEL
    if not model.is_file():
        raise SettingError(f"the silero-vad package has no {model.name} at {model.parent}; reinstall it "
                           "(pip install --force-reinstall silero-vad) or set vad=none")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1  # a tiny model: threads cost more than they give
    return onnxruntime.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


class SileroVad:
    """Speech probability per 32 ms frame from Silero VAD (stateful over the recording, as the model expects)."""

    frame_seconds = SILERO_FRAME / SILERO_RATE

    def __init__(self, threshold: float = 0.3, min_speech_seconds: float = 0.06):
        if not 0 < threshold < 1 or min_speech_seconds < 0:
            raise SettingError(f"vad_threshold={threshold}, min_speech_seconds={min_speech_seconds}; need a threshold "
                               "between 0 and 1 (0.3 by default) and a non-negative minimum")
        self.threshold, self.min_speech_seconds = threshold, min_speech_seconds
        self.runtime = silero_runtime()

    def frame_probabilities(self, waveform: np.ndarray, sample_rate: int) -> np.ndarray:
        """One score per 32 ms frame of a whole recording (the last frame zero-padded)."""
        audio = resample(np.asarray(waveform, dtype=np.float32), sample_rate, SILERO_RATE)
        frames = -(-len(audio) // SILERO_FRAME)
        return self.score(np.pad(audio, (SILERO_CONTEXT, frames * SILERO_FRAME - len(audio))))[0]

    def score(self, audio: np.ndarray, state: tuple | None = None) -> tuple[np.ndarray, tuple]:
        """Scores of the whole 32 ms frames of 16 kHz `audio` after its first SILERO_CONTEXT samples, and the LSTM
        state after them: each frame goes in with the 64 samples before it and the state is carried from
        block to block (and, passed back in, from call to call), as in silero_vad.sequence_vad."""
        rows = np.lib.stride_tricks.sliding_window_view(audio, SILERO_CONTEXT + SILERO_FRAME)[::SILERO_FRAME]
        hidden, cell = state or (np.zeros((1, 1, 128), np.float32),) * 2
        scores = [np.empty(0, np.float32)]
        for first in range(0, len(rows), SILERO_BLOCK):
            block = np.ascontiguousarray(rows[first:first + SILERO_BLOCK], dtype=np.float32)
            values, hidden, cell = self.runtime.run(None, {"input": block, "h": hidden, "c": cell})
            scores.append(values.reshape(-1))
        return np.concatenate(scores), (hidden, cell)

    def frame_span(self, start_seconds: float, end_seconds: float) -> tuple[int, int]:
        """The frames (first, last + 1) whose start time lies inside [start, end)."""
        return (int(np.ceil(start_seconds / self.frame_seconds - 1e-9)),
                int(np.ceil(end_seconds / self.frame_seconds - 1e-9)))

    def enough_speech(self, scores: np.ndarray) -> bool:
        """At least `min_speech_seconds` (and more than nothing) of these frames score `threshold` or more."""
        speech = np.count_nonzero(scores >= self.threshold) * self.frame_seconds
        return bool(speech > 0 and speech >= self.min_speech_seconds - 1e-9)

    def speech_in(self, scores: np.ndarray, start_seconds: float, end_seconds: float) -> bool:
        """Enough speech frames (by their start time) inside [start, end)."""
        first, last = self.frame_span(start_seconds, end_seconds)
        return self.enough_speech(scores[first:last])


def speech_detector(vad: str, threshold: float = 0.3) -> SileroVad | None:
    """The detector a `vad=` setting names (None for vad=none: the silence floor alone)."""
    if vad not in VADS:
        raise SettingError(f"vad={vad!r}; use silero (voice-activity detection) or none (leave out only digitally "
                           "silent windows)")
    return SileroVad(threshold) if vad == "silero" else None


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
