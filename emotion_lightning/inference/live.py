"""Live routes of the HTTP app: the /stream WebSocket and the page at / that streams a microphone or a file to it.

Protocol (one stream per connection):
1. the client sends a JSON header as text: {"sample_rate": 16000, "format": "float32"} (format float32 or
   int16, little-endian mono; optional window_seconds, at most stream.max_window_seconds (the model's window by
   default), and hop_seconds, at least stream.min_hop_seconds; the hop defaults to stream.hop_seconds);
2. then binary frames of any number of samples; the server answers each window with a JSON event
   {"type": "window", "start", "end", "emotion", "confidence", "probabilities", "no_speech", "smoothed"};
3. the text {"end": true} asks for the windows left at the end and a {"type": "summary"} event, after which
   the server closes with 1000.
A problem ends the stream with {"type": "error", "error": MESSAGE, "code": CODE} and a close with that code
(stream.py lists them). The audio of each stream is scored in order as it arrives, in a worker thread (at most
stream.scoring_threads streams at once), so /health, new connections and other streams go on meanwhile; the
server reads no further audio of a stream while it scores it, so a client sending faster than real time is slowed
down by TCP, not queued.
Events wait for the client in a queue of stream.max_queued_events; when a client reads too slowly to keep it
from filling, stream.slow_client says what gives (see `Outbox`).
A browser names the page that opens a stream in its Origin header: unless that page's host is one of the
service's allowed_hosts (as the page at / is), the stream is refused (403), so no other web page can use the
service through a visitor's browser. Clients that send no Origin (the stream command, scripts) are not affected.
"""

import asyncio
import json
import logging
import os
from collections import deque
from concurrent.futures import Executor, ThreadPoolExecutor
from importlib import resources
from urllib.parse import urlsplit

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from emotion_lightning.inference.predictor import EmotionPredictor
from emotion_lightning.inference.stream import (INTERNAL, NORMAL, POLICY, TRY_LATER, UNSUPPORTED, StreamError,
                                                StreamScorer, StreamSettings, decode_frame, parse_header)

log = logging.getLogger(__name__)
STATIC = resources.files("emotion_lightning.inference") / "static"
END = {"end": True}


class Outbox:
    """Events waiting to be sent to one client, at most `size` of them. When it is full, `policy` decides:
    drop (the oldest waiting window event is dropped and the next event sent carries the count so far in
    `dropped`) or close (the stream ends with a 1008 error). Last words (a summary or an error) always go in."""

    def __init__(self, size: int, policy: str):
        self.size, self.policy = size, policy
        self.events: deque = deque()
        self.dropped = 0
        self.waiting = asyncio.Event()

    def put(self, event: dict, last: bool = False) -> None:
        if len(self.events) >= self.size and not last:
            if self.policy == "close":
                raise StreamError(f"the client reads events too slowly ({self.size} waiting); read them as they "
                                  "come", POLICY)
            self.events.popleft()
            self.dropped += 1
        self.events.append(event)
        self.waiting.set()

    async def get(self) -> dict | None:
        """The next event (None after the last words), waiting for one."""
        while not self.events:
            self.waiting.clear()
            await self.waiting.wait()
        event = self.events.popleft()
        return {**event, "dropped": self.dropped} if self.dropped and event is not None else event


def add_live_routes(app: FastAPI, predictor: EmotionPredictor, settings: StreamSettings,
                    allowed_hosts: list[str]) -> None:
    """GET / (the page), /static/* (its scripts) and the /stream WebSocket, on `app`; streams opened by a web page
    must come from a page on one of `allowed_hosts`."""
    streams = set()
    scoring = ThreadPoolExecutor(settings.scoring_threads or os.cpu_count() or 1, thread_name_prefix="stream")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    @app.websocket("/stream")
    async def stream(websocket: WebSocket) -> None:
        origin = websocket.headers.get("origin")
        if origin is not None and not host_allowed(origin_host(origin), allowed_hosts):
            await websocket.close(POLICY)  # before accepting: the browser gets 403
            return
        await websocket.accept()
        outbox = Outbox(settings.max_queued_events, settings.slow_client)
        sender = asyncio.create_task(send_events(websocket, outbox))
        code = NORMAL
        try:
            if len(streams) >= settings.max_streams:
                raise StreamError(f"{settings.max_streams} streams are running, the most this service takes "
                                  "(stream.max_streams); try again later", TRY_LATER)
            streams.add(websocket)
            await score_stream(websocket, outbox, predictor, settings, scoring)
        except WebSocketDisconnect:
            sender.cancel()
            return
        except StreamError as error:
            code = error.code
            outbox.put({"type": "error", "error": str(error), "code": code}, last=True)
        except Exception:  # a bug: the client still gets a message, the log the trace
            log.exception("live stream failed")
            code = INTERNAL
            outbox.put({"type": "error", "error": "internal error; the server's log has the details", "code": code},
                       last=True)
        finally:
            streams.discard(websocket)
        outbox.put(None, last=True)
        try:
            await asyncio.wait_for(sender, settings.max_idle_seconds)
            await websocket.close(code)
        except (asyncio.TimeoutError, WebSocketDisconnect, RuntimeError, OSError):
            sender.cancel()  # a client that stopped reading or left: the connection is dropped with the handler


async def send_events(websocket: WebSocket, outbox: Outbox) -> None:
    while (event := await outbox.get()) is not None:
        await websocket.send_text(json.dumps(event))


async def score_stream(websocket: WebSocket, outbox: Outbox, predictor: EmotionPredictor,
                       settings: StreamSettings, scoring: Executor) -> None:
    """Read the header and the frames of one stream, putting its events in `outbox`, until {"end": true}; the
    model runs in `scoring`'s threads, one frame at a time, so the events keep their order."""
    loop = asyncio.get_running_loop()
    message = await receive(websocket, settings)
    if message.get("text") is None:
        raise StreamError('open the stream with a JSON header as text (e.g. {"sample_rate": 16000, "format": '
                          '"float32"}), then send binary audio frames', UNSUPPORTED)
    header = parse_header(message["text"])
    scorer = StreamScorer.from_header(predictor, header, settings)
    while True:
        message = await receive(websocket, settings)
        if message.get("bytes") is not None:
            samples = decode_frame(message["bytes"], header.format, settings.max_frame_bytes)
            if scorer.input_seconds + len(samples) / header.sample_rate > settings.max_stream_seconds:
                raise StreamError(f"the stream is longer than stream.max_stream_seconds="
                                  f"{settings.max_stream_seconds:g}; open a new one to go on", POLICY)
            events = await loop.run_in_executor(scoring, scorer.feed, samples)
        elif is_end(message.get("text")):
            *events, summary = await loop.run_in_executor(scoring, scorer.finish)
            for event in events:
                outbox.put(event)
            outbox.put(summary, last=True)
            return
        else:
            raise StreamError('after the header send binary audio frames, and the text {"end": true} to finish',
                              UNSUPPORTED)
        for event in events:
            outbox.put(event)


async def receive(websocket: WebSocket, settings: StreamSettings) -> dict:
    """The next message, WebSocketDisconnect when the client left, StreamError (1008) after a long silence."""
    try:
        message = await asyncio.wait_for(websocket.receive(), settings.max_idle_seconds)
    except asyncio.TimeoutError:
        raise StreamError(f"nothing received for stream.max_idle_seconds={settings.max_idle_seconds:g} s",
                          POLICY) from None
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    return message


def origin_host(origin: str) -> str:
    """The host of an Origin header as allowed_hosts names hosts (no port, an IPv6 address in brackets); "" for
    "null" (a sandboxed page or a local file) or anything unreadable."""
    try:
        host = urlsplit(origin).hostname or ""
    except ValueError:
        return ""
    return f"[{host}]" if ":" in host else host


def host_allowed(host: str, allowed_hosts: list[str]) -> bool:
    """Whether `host` is one of `allowed_hosts`, read as the service reads Host headers ("*" any, "*.x" x's
    subdomains)."""
    return any(host == pattern or pattern.startswith("*") and host.endswith(pattern[1:]) for pattern in allowed_hosts)


def is_end(text: str | None) -> bool:
    try:
        return text is not None and json.loads(text) == END
    except ValueError:
        return False
