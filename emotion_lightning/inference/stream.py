"""Live emotion of an audio stream: the predictor's own windows, speech check and model, run as audio arrives.

A stream opens with a header (`parse_header`: sample rate, sample format, optional window and hop), then
audio frames of any size (`decode_frame`). `StreamScorer.feed` returns one event per window as soon as the
window, and the 32 ms speech-detector frame that holds its last sample, have arrived; `finish` adds the
windows `predict` puts at the end of a recording and the stream's summary. Window events equal the timeline
`predict` gives for the same audio (same starts, speech decisions and probabilities), because they come from
the same functions: `window_starts` and `cut` (windows.py), `silent` and Silero VAD's scores (speech.py),
and the predictor's `classify` and `verdict`. Memory per stream is bounded: a ring buffer of one window and a
hop, and the speech scores of one window.
"""

import json
from dataclasses import dataclass, fields

import numpy as np

from emotion_lightning.data.audio import MIN_SAMPLE_RATE, AudioError
from emotion_lightning.data.errors import SettingError
from emotion_lightning.inference.predictor import EmotionPredictor
from emotion_lightning.inference.speech import SILERO_CONTEXT, SILERO_FRAME, SILERO_RATE, SileroVad, silent
from emotion_lightning.inference.windows import cut, window_starts

SAMPLE_FORMATS = {"float32": np.dtype("<f4"), "int16": np.dtype("<i2")}
MAX_SAMPLE_RATE = 384000
# WebSocket close codes (RFC 6455) a stream ends with.
NORMAL, UNSUPPORTED, BAD_DATA, POLICY, TOO_BIG, INTERNAL, TRY_LATER = 1000, 1003, 1007, 1008, 1009, 1011, 1013
SLOW_CLIENT_POLICIES = ("drop", "close")
VAD_BATCH = 16  # speech-detector frames scored in one call as they arrive (about half a second)


class StreamError(ValueError):
    """Ends a stream: the message goes to the client as JSON, then the connection closes with `code`."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class StreamSettings:
    """Limits and defaults of live streams (conf/serve.yaml's `stream:`)."""

    hop_seconds: float = 0.5          # a window event every hop (a header may ask for another)
    min_hop_seconds: float = 0.1      # the shortest hop a header may ask for (each hop is a forward pass)
    max_window_seconds: float | None = None  # the longest window a header may ask for; None: the model's own
    smoothing: float = 0.6            # weight of the earlier estimate in the running one; 0 = the latest window
    max_frame_bytes: int = 256 * 1024  # a larger audio frame ends the stream (1009)
    max_stream_seconds: float = 3600  # audio past this ends the stream (1008)
    max_streams: int = 32             # streams at once; one more is refused (1013)
    max_idle_seconds: float = 30      # a stream that sends nothing this long is ended (1008)
    max_queued_events: int = 32       # events waiting for a client that reads slowly
    slow_client: str = "drop"         # drop: the oldest waiting events go | close: the stream ends (1008)
    scoring_threads: int | None = None  # streams scored at once, each in a thread; None: the CPU cores

    def __post_init__(self):
        if self.slow_client not in SLOW_CLIENT_POLICIES:
            raise SettingError(f"stream.slow_client={self.slow_client!r}; use drop (the oldest waiting events go) or "
                               "close (the stream ends)")
        if not 0 <= self.smoothing < 1:
            raise SettingError(f"stream.smoothing={self.smoothing}; use 0 (none) up to below 1")
        if min(self.max_frame_bytes, self.max_stream_seconds, self.max_streams, self.max_idle_seconds,
               self.max_queued_events, self.min_hop_seconds) <= 0:
            raise SettingError("stream.min_hop_seconds, max_frame_bytes, max_stream_seconds, max_streams, "
                               "max_idle_seconds and max_queued_events must all be positive")
        if self.scoring_threads is not None and self.scoring_threads < 1:
            raise SettingError(f"stream.scoring_threads={self.scoring_threads}; use 1 or more, or null for one a CPU "
                               "core")
        if self.max_window_seconds is not None and self.max_window_seconds <= 0:
            raise SettingError(f"stream.max_window_seconds={self.max_window_seconds}; use a positive number of "
                               "seconds, or null for the model's own window")
        if self.hop_seconds < self.min_hop_seconds:
            raise SettingError(f"stream.hop_seconds={self.hop_seconds:g} is below stream.min_hop_seconds="
                               f"{self.min_hop_seconds:g}")

    @classmethod
    def from_config(cls, cfg) -> "StreamSettings":
        return cls(**{f.name: cfg[f.name] for f in fields(cls) if f.name in cfg})


@dataclass(frozen=True)
class StreamHeader:
    """The JSON a client opens a stream with."""

    sample_rate: int
    format: str = "float32"
    window_seconds: float | None = None
    hop_seconds: float | None = None


def parse_header(text: str) -> StreamHeader:
    """The header in a stream's first message, or StreamError (1007) saying what a valid one looks like."""
    example = ' (e.g. {"sample_rate": 16000, "format": "float32"})'
    try:
        header = json.loads(text)
    except ValueError:
        raise StreamError("the first message must be a JSON header" + example, BAD_DATA) from None
    if not isinstance(header, dict):
        raise StreamError("the header must be a JSON object" + example, BAD_DATA)
    unknown = sorted(set(header) - {f.name for f in fields(StreamHeader)})
    if unknown:
        raise StreamError(f"unknown header field(s) {', '.join(unknown)}; use sample_rate, format, window_seconds, "
                          "hop_seconds", BAD_DATA)
    rate = header.get("sample_rate")
    if isinstance(rate, bool) or not isinstance(rate, int) or not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise StreamError(f"sample_rate={rate!r}; give the audio's rate in Hz as an integer from {MIN_SAMPLE_RATE} "
                          f"to {MAX_SAMPLE_RATE}" + example, BAD_DATA)
    if header.get("format", "float32") not in SAMPLE_FORMATS:
        raise StreamError(f"format={header['format']!r}; use float32 or int16 (little-endian, mono)", BAD_DATA)
    for key in ("window_seconds", "hop_seconds"):
        value = header.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
            raise StreamError(f"{key}={value!r}; use a positive number of seconds or leave it out", BAD_DATA)
    return StreamHeader(**header)


def decode_frame(data: bytes, sample_format: str, max_bytes: int) -> np.ndarray:
    """One binary frame of mono samples as float32 in [-1, 1], or StreamError (1009 too large, 1007 unusable)."""
    if len(data) > max_bytes:
        raise StreamError(f"a frame of {len(data)} bytes is larger than max_frame_bytes={max_bytes}; send smaller "
                          "frames", TOO_BIG)
    dtype = SAMPLE_FORMATS[sample_format]
    if len(data) % dtype.itemsize:
        raise StreamError(f"a frame of {len(data)} bytes is not a whole number of {sample_format} samples "
                          f"({dtype.itemsize} bytes each)", BAD_DATA)
    samples = np.frombuffer(data, dtype)
    if sample_format == "int16":
        return samples.astype(np.float32) / 32768
    if not np.isfinite(samples).all():
        raise StreamError("a frame holds NaN or infinite samples", BAD_DATA)
    return samples.astype(np.float32)


class RingBuffer:
    """The last `capacity` samples of a stream, addressed by their position in the whole stream."""

    def __init__(self, capacity: int):
        self.data = np.zeros(capacity, np.float32)
        self.end = 0  # samples written so far

    def extend(self, samples: np.ndarray) -> None:
        capacity, count = len(self.data), len(samples)
        if count > capacity:
            raise ValueError(f"{count} samples do not fit a ring buffer of {capacity}")
        position = self.end % capacity
        first = min(count, capacity - position)
        self.data[position:position + first] = samples[:first]
        self.data[:count - first] = samples[first:]
        self.end += count

    def read(self, start: int, stop: int) -> np.ndarray:
        if start < self.end - len(self.data) or stop > self.end:
            raise ValueError(f"samples {start}:{stop} are not in the buffer (it holds up to {self.end})")
        return self.data[np.arange(start, stop) % len(self.data)]


class StreamingVad:
    """Silero VAD's scores of a stream's 32 ms frames as they complete: the same scores SileroVad gives for the
    whole recording, since each frame goes in with the 64 samples before it and the model's state carries on."""

    def __init__(self, detector: SileroVad):
        self.detector = detector
        self.pending = np.zeros(SILERO_CONTEXT, np.float32)  # context, then samples not scored yet
        self.state, self.scores, self.first_frame = None, np.empty(0, np.float32), 0

    @property
    def scored_frames(self) -> int:
        return self.first_frame + len(self.scores)

    def extend(self, samples: np.ndarray) -> None:
        self.pending = np.concatenate([self.pending, samples])
        if len(self.pending) >= SILERO_CONTEXT + VAD_BATCH * SILERO_FRAME:
            self.score()

    def score(self, last: bool = False) -> None:
        """Score every whole frame waiting (and, at the stream's end, the last part-frame zero-padded)."""
        frames = (len(self.pending) - SILERO_CONTEXT) // SILERO_FRAME
        if last and len(self.pending) > SILERO_CONTEXT + frames * SILERO_FRAME:
            frames += 1
            self.pending = np.pad(self.pending, (0, SILERO_CONTEXT + frames * SILERO_FRAME - len(self.pending)))
        if frames:
            scores, self.state = self.detector.score(self.pending[:SILERO_CONTEXT + frames * SILERO_FRAME], self.state)
            self.scores = np.concatenate([self.scores, scores])
            self.pending = self.pending[frames * SILERO_FRAME:]

    def speech_in(self, start_seconds: float, end_seconds: float) -> bool:
        first, last = self.detector.frame_span(start_seconds, end_seconds)
        return self.detector.enough_speech(self.scores[first - self.first_frame:last - self.first_frame])

    def frames_needed(self, end_seconds: float) -> int:
        """Frames that must be scored before a window ending at `end_seconds` can be judged."""
        return self.detector.frame_span(0, end_seconds)[1]

    def forget_before(self, seconds: float) -> None:
        keep_from = self.detector.frame_span(seconds, seconds)[0]
        self.scores = self.scores[max(0, keep_from - self.first_frame):]
        self.first_frame = max(self.first_frame, keep_from)


class StreamScorer:
    """One stream's windows, scored as audio arrives (see the module's docstring)."""

    def __init__(self, predictor: EmotionPredictor, sample_rate: int, window_seconds: float | None = None,
                 hop_seconds: float | None = 0.5, smoothing: float = 0.6):
        self.predictor, self.rate, self.input_rate = predictor, predictor.sample_rate, int(sample_rate)
        self.window, self.hop = predictor.windowing(
            predictor.window / self.rate if window_seconds is None else window_seconds, hop_seconds)
        fixed = getattr(predictor.backend, "window", None)  # an ONNX export takes one window length only
        if isinstance(fixed, int) and fixed != self.window:
            raise SettingError(f"window_seconds={window_seconds}: this model's ONNX export takes "
                               f"{fixed / self.rate:g} s windows; leave window_seconds out")
        if predictor.detector is not None and self.rate != SILERO_RATE:
            raise SettingError(f"live streams with vad=silero need a {SILERO_RATE} Hz model (this one takes "
                               f"{self.rate} Hz); serve it with vad=none")
        self.resampler = None
        if self.input_rate != self.rate:
            import soxr

            self.resampler = soxr.ResampleStream(self.input_rate, self.rate, 1, dtype="float32", quality="HQ")
        self.smoothing = smoothing
        self.buffer = RingBuffer(self.window + self.hop + SILERO_FRAME)
        self.vad = StreamingVad(predictor.detector) if predictor.detector is not None else None
        self.emitted = 0  # windows sent so far
        self.input_samples = 0
        self.smoothed: np.ndarray | None = None
        self.spoken_sum, self.spoken = np.zeros(len(predictor.classes)), 0

    @classmethod
    def from_header(cls, predictor: EmotionPredictor, header: StreamHeader,
                    settings: StreamSettings) -> "StreamScorer":
        """The scorer a header asks for, or StreamError (1007) for a window or hop outside the service's limits:
        a window longer than stream.max_window_seconds (the model's own by default) or a hop shorter than
        stream.min_hop_seconds would cost memory and forward passes without bound."""
        model_window = predictor.window / predictor.sample_rate
        longest = model_window if settings.max_window_seconds is None else settings.max_window_seconds
        window = model_window if header.window_seconds is None else header.window_seconds
        hop = settings.hop_seconds if header.hop_seconds is None else header.hop_seconds
        if header.window_seconds is not None and window > longest:
            raise StreamError(f"window_seconds={window:g}; use more than 0 and at most {longest:g} s "
                              "(stream.max_window_seconds)", BAD_DATA)
        if hop < settings.min_hop_seconds:
            raise StreamError(f"hop_seconds={hop:g}; use from stream.min_hop_seconds={settings.min_hop_seconds:g} "
                              f"to the window, {window:g} s", BAD_DATA)
        try:
            return cls(predictor, header.sample_rate, header.window_seconds, hop, settings.smoothing)
        except SettingError as error:
            raise StreamError(str(error), BAD_DATA) from None

    @property
    def input_seconds(self) -> float:
        return self.input_samples / self.input_rate

    def feed(self, samples: np.ndarray) -> list[dict]:
        """Events of the windows these samples (mono float32 at the header's rate) complete."""
        self.input_samples += len(samples)
        if self.resampler is not None:
            samples = self.resampler.resample_chunk(samples)
        return self._append(samples)

    def finish(self) -> list[dict]:
        """Events of the windows left at the end (as `predict` cuts a recording) and the stream's summary; or
        StreamError when the whole stream is shorter than the predictor's min_seconds."""
        events = []
        if self.resampler is not None:
            events += self._append(self.resampler.resample_chunk(np.empty(0, np.float32), last=True))
        received = self.buffer.end
        try:
            self.predictor.check_length(received)
        except AudioError as error:
            raise StreamError(str(error), POLICY) from None
        if self.vad is not None:
            self.vad.score(last=True)
        events += self._score(window_starts(received, self.window, self.hop)[self.emitted:])
        spoken = self.spoken_sum / self.spoken if self.spoken else None
        return events + [{"type": "summary", "duration": received / self.rate, **self.predictor.verdict(spoken),
                          "no_speech": not self.spoken, "windows": self.emitted}]

    def _append(self, samples: np.ndarray) -> list[dict]:
        """Samples at the model's rate into the buffer, a hop at a time so that it never overflows."""
        events = []
        for first in range(0, len(samples), self.hop):
            piece = samples[first:first + self.hop]
            self.buffer.extend(piece)
            if self.vad is not None:
                self.vad.extend(piece)
            events += self._score(self._ready_starts())
        return events

    def _ready_starts(self) -> list[int]:
        """Starts of the whole windows that can be judged now, in order."""
        starts, start = [], self.emitted * self.hop
        while start + self.window <= self.buffer.end:
            if self.vad is not None:
                needed = self.vad.frames_needed((start + self.window) / self.rate)
                if self.vad.scored_frames < needed:
                    self.vad.score()
                if self.vad.scored_frames < needed:
                    break
            starts.append(start)
            start += self.hop
        return starts

    def _score(self, starts: list[int]) -> list[dict]:
        received, events = self.buffer.end, []
        pieces = [self.buffer.read(start, min(start + self.window, received)) for start in starts]
        speech = [not silent(piece) and (self.vad is None or self.vad.speech_in(
            start / self.rate, (start + len(piece)) / self.rate)) for start, piece in zip(starts, pieces)]
        spoken = [next(cut(piece, [0], self.window)) for piece, keep in zip(pieces, speech) if keep]
        probabilities = iter(self.predictor.classify(spoken))
        for start, piece, keep in zip(starts, pieces, speech):
            p = next(probabilities) if keep else None
            if p is not None:
                self.spoken_sum += p
                self.spoken += 1
                self.smoothed = p if self.smoothed is None else (
                    self.smoothing * self.smoothed + (1 - self.smoothing) * p)
            events.append({"type": "window", "start": start / self.rate, "end": (start + len(piece)) / self.rate,
                           "no_speech": not keep, **self.predictor.verdict(p),
                           "smoothed": self.predictor.verdict(self.smoothed)})
        self.emitted += len(starts)
        if self.vad is not None:  # the next window starts a hop on, or the last one ends with the stream
            self.vad.forget_before(min(self.emitted * self.hop, self.buffer.end - self.window) / self.rate)
        return events
