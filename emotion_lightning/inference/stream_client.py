"""Sending audio to a live stream: a file at real-time pace (or faster) or a microphone, to a running service's
/stream WebSocket or to a predictor in this process; every event comes back to a callback as a dict."""

import json
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator

import numpy as np

from emotion_lightning.data.audio import load
from emotion_lightning.data.errors import SettingError, UsageError
from emotion_lightning.inference.predictor import EmotionPredictor
from emotion_lightning.inference.stream import StreamError, StreamScorer, StreamSettings

RATE = 16000
FRAME = 512  # samples at 16 kHz (32 ms): one speech-detector frame, so no event waits for later audio


def file_frames(path, rate: int = RATE, frame: int = FRAME) -> Iterator[np.ndarray]:
    """A file decoded to mono float32 at `rate` (now: AudioError when it cannot be), in frames of `frame` samples."""
    waveform = load(path, rate)
    return (waveform[first:first + frame] for first in range(0, len(waveform), frame))


def paced(frames: Iterable[np.ndarray], rate: int, speed: float = 1.0) -> Iterator[np.ndarray]:
    """The frames, each when its last sample would have been recorded at `speed` times real time (0: at once)."""
    started, sent = time.monotonic(), 0
    for frame in frames:
        sent += len(frame)
        if speed > 0:
            time.sleep(max(0.0, started + sent / rate / speed - time.monotonic()))
        yield frame


def microphone_frames(rate: int = RATE, frame: int = FRAME) -> Iterator[np.ndarray]:
    """Frames from the default capture device, in real time, until Ctrl-C."""
    try:
        import sounddevice
    except (ImportError, OSError):
        raise SettingError("--mic needs the sounddevice package and PortAudio (pip install sounddevice)") from None
    captured: queue.Queue = queue.Queue()
    try:
        with sounddevice.InputStream(samplerate=rate, channels=1, dtype="float32", blocksize=frame,
                                     callback=lambda data, *_: captured.put(data[:, 0].copy())):
            while True:
                try:
                    yield captured.get()
                except KeyboardInterrupt:
                    return
    except sounddevice.PortAudioError as error:
        raise SettingError(f"cannot record from the microphone ({error}); check the capture device") from None


def stream_in_process(predictor: EmotionPredictor, frames: Iterable[np.ndarray], rate: int,
                      on_event: Callable[[dict], None], hop_seconds: float | None = None) -> None:
    """Score the frames with `predictor` here, as the service would (default hop and smoothing included)."""
    settings = StreamSettings()
    scorer = StreamScorer(predictor, rate, hop_seconds=hop_seconds or settings.hop_seconds,
                          smoothing=settings.smoothing)
    try:
        for frame in frames:
            for event in scorer.feed(frame):
                on_event(event)
        for event in scorer.finish():
            on_event(event)
    except StreamError as error:
        on_event({"type": "error", "error": str(error), "code": error.code})


def stream_to_service(url: str, frames: Iterable[np.ndarray], rate: int, on_event: Callable[[dict], None],
                      hop_seconds: float | None = None) -> None:
    """Send the frames to a service's /stream (float32) while its events are read in a second thread; then ask
    for the last windows and the summary and wait for the service to close."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    header = {"sample_rate": rate, "format": "float32"}
    if hop_seconds is not None:
        header["hop_seconds"] = hop_seconds
    try:
        websocket = connect(url, compression=None, proxy=None, max_size=2**20)
    except (OSError, ValueError) as error:
        raise UsageError(f"cannot reach {url} ({error}); start the service with `emotion-lightning serve ckpt=...` "
                         "or score here with --ckpt") from None

    def read_events():
        try:
            for message in websocket:
                on_event(json.loads(message))
        except ConnectionClosed:
            pass  # the service's error event, read before this, says why

    reader = threading.Thread(target=read_events, daemon=True)
    with websocket:
        reader.start()
        try:
            websocket.send(json.dumps(header))
            for frame in frames:
                websocket.send(np.ascontiguousarray(frame, dtype="<f4").tobytes())
            websocket.send(json.dumps({"end": True}))
        except ConnectionClosed:
            pass  # the service ended the stream
        reader.join()
