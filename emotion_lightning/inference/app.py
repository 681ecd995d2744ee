"""The HTTP app (FastAPI) around one predictor; `python -m emotion_lightning.serve` runs it.

POST /predict takes an audio upload (multipart field `file`; WAV, FLAC, OGG/Opus, MP3, M4A/AAC with ffmpeg)
and answers what `predict` writes per file (`"emotion": null, "no_speech": true` without speech); GET /health
describes the model. Bad uploads get a 4xx whose JSON body's `detail` says what is wrong: 400 empty, 408 slower
than upload_timeout, 413 too large or too long, 422 undecodable, over max_sample_rate or max_channels, shorter
than min_seconds, or no `file` field (with the form's validation `errors` as a JSON list).

What it guards against: bodies over max_upload_mb (counted as they arrive, whatever the transfer encoding),
uploads that trickle in, files that declare more audio than they hold bytes (refused on their header), Host
headers outside allowed_hosts (DNS rebinding), streams opened by web pages of other hosts (the Origin header).
There is no authentication: expose it through a proxy that has.
GET / (a page) and /stream (a WebSocket for live audio) come from live.py.
"""

import asyncio
import dataclasses
import tempfile
from pathlib import Path

from fastapi import FastAPI, File, HTTPException, Request, UploadFile
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.middleware.trustedhost import TrustedHostMiddleware

from emotion_lightning.data.audio import AudioError, TooLongError, load, probe
from emotion_lightning.inference.live import add_live_routes
from emotion_lightning.inference.predictor import PREDICT_EXTENSIONS, EmotionPredictor
from emotion_lightning.inference.stream import StreamSettings

MULTIPART_OVERHEAD = 64 * 1024  # boundaries and part headers around the file in a multipart body
LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]")


class BodyLimit:
    """ASGI middleware that refuses a request body as it arrives: 413 once more than `max_bytes` have come (a
    chunked upload declares no Content-Length; a declared one over the limit is refused before reading), 408 when
    the whole body takes longer than `timeout` seconds."""

    def __init__(self, app, max_bytes: int, timeout: float, too_large: str):
        self.app, self.max_bytes, self.timeout, self.too_large = app, max_bytes, timeout, too_large

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            return await JSONResponse(status_code=413, content={"detail": self.too_large})(scope, receive, send)
        deadline = asyncio.get_running_loop().time() + self.timeout
        received, complete = 0, False

        async def limited_receive():
            nonlocal received, complete
            if complete:  # after the body: the wait for a disconnect is not timed
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), deadline - asyncio.get_running_loop().time())
            except asyncio.TimeoutError:
                raise HTTPException(408, f"the upload took longer than upload_timeout={self.timeout:g} s to "
                                         "arrive") from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if received > self.max_bytes:
                    raise HTTPException(413, self.too_large)  # FastAPI answers it, even mid-way through a form
            return message

        await self.app(scope, limited_receive, send)


def create_app(predictor: EmotionPredictor, max_upload_mb: float = 20, max_seconds: float = 600,
               stream: StreamSettings | None = None, *, allowed_hosts=LOCAL_HOSTS, docs: bool = False,
               upload_timeout: float = 60) -> FastAPI:
    """The FastAPI app around one predictor, with limits on upload size (MB), duration (seconds) and upload time
    (seconds), and the settings of live streams; requests must name one of `allowed_hosts` ("*" allows any), and
    so must the Origin of a web page that opens a stream;
    `docs` serves /docs, /redoc and /openapi.json. Rate and channel limits are the predictor's."""
    pages = {"docs_url": "/docs", "redoc_url": "/redoc", "openapi_url": "/openapi.json"}
    app = FastAPI(title="emotion-lightning", summary="Speech emotion recognition",
                  **{key: value if docs else None for key, value in pages.items()})
    add_live_routes(app, predictor, stream or StreamSettings(), list(allowed_hosts))
    max_bytes = int(max_upload_mb * 1024 * 1024)
    limits = dataclasses.replace(predictor.limits, max_seconds=max_seconds)
    too_large = f"upload larger than max_upload_mb={max_upload_mb:g} MB; send a shorter or compressed recording"
    app.add_middleware(BodyLimit, max_bytes=max_bytes + MULTIPART_OVERHEAD, timeout=upload_timeout,
                       too_large=too_large)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))

    @app.exception_handler(RequestValidationError)
    async def explain_bad_form(request: Request, error: RequestValidationError):
        return JSONResponse(status_code=422, content={
            "detail": "POST /predict expects multipart/form-data with the audio file in the field `file` "
                      "(e.g. curl -F file=@clip.wav http://HOST:PORT/predict)",
            "errors": jsonable_encoder(error.errors(), custom_encoder={bytes: lambda b: f"<{len(b)} bytes>"})})

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", **predictor.describe(), "max_upload_mb": max_upload_mb, "max_seconds": max_seconds,
                "max_sample_rate": limits.max_sample_rate, "max_channels": limits.max_channels}

    def decode(path: str, name: str):
        """The upload as the model's waveform; 413 or 422 naming the setting or the problem."""
        try:
            try:
                header = probe(path)
            except AudioError:
                header = None  # a container only ffmpeg reads (M4A): checked as it is decoded
            if header is not None:
                limits.check(header)  # the header first: a few KB can declare gigabytes of samples
            return load(path, predictor.sample_rate, limits)
        except TooLongError as error:
            raise HTTPException(413, f"{name}: {error}") from None
        except AudioError as error:
            message = str(error).replace(path, name)  # the temporary path means nothing to a client
            raise HTTPException(422, f"{name}: {message}") from None

    @app.post("/predict")
    def predict(file: UploadFile = File(...)) -> dict:
        name = file.filename or "upload"
        data = file.file.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise HTTPException(413, f"{name}: {too_large}")
        if not data:
            raise HTTPException(400, f"{name}: empty upload (0 bytes)")
        suffix = Path(name).suffix.lower()  # only a known extension: a client's name may hold anything
        with tempfile.NamedTemporaryFile(suffix=suffix if suffix in PREDICT_EXTENSIONS else ".audio") as handle:
            handle.write(data)
            handle.flush()
            waveform = decode(handle.name, name)
        try:
            return {"file": name, **predictor.predict_array(waveform, predictor.sample_rate)}
        except AudioError as error:  # too short for min_seconds
            raise HTTPException(422, f"{name}: {error}") from None

    return app
