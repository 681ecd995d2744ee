"""The HTTP app (FastAPI) around one predictor; `python -m emotion_lightning.serve` runs it.

POST /predict takes an audio upload (multipart field `file`; WAV, FLAC, OGG/Opus, MP3, M4A/AAC with ffmpeg)
and answers what `predict` writes per file (`"emotion": null, "no_speech": true` without speech); GET /health
describes the model. Bad uploads get a 4xx whose JSON body's `detail` says what is wrong: 400 empty, 413 too
large or too long, 422 undecodable, shorter than min_seconds, or no `file` field (with the form's validation
`errors` as a JSON list).
GET / (a page) and /stream (a WebSocket for live audio) come from live.py.
"""

import tempfile
from pathlib import Path

from fastapi import FastAPI, File, HTTPException, Request, UploadFile
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from emotion_lightning.data.audio import AudioError, load, probe
from emotion_lightning.inference.live import add_live_routes
from emotion_lightning.inference.predictor import EmotionPredictor
from emotion_lightning.inference.stream import StreamSettings

MULTIPART_OVERHEAD = 64 * 1024  # boundaries and part headers around the file in a multipart body


def create_app(predictor: EmotionPredictor, max_upload_mb: float = 20, max_seconds: float = 600,
               stream: StreamSettings | None = None) -> FastAPI:
    """The FastAPI app around one predictor, with limits on upload size (MB) and duration (seconds) and the
    settings of live streams."""
    app = FastAPI(title="emotion-lightning", summary="Speech emotion recognition")
    add_live_routes(app, predictor, stream or StreamSettings())
    max_bytes = int(max_upload_mb * 1024 * 1024)
    too_large = f"upload larger than max_upload_mb={max_upload_mb:g} MB; send a shorter or compressed recording"

    def refuse_if_too_long(seconds: float, name: str) -> None:
        if seconds > max_seconds:
            raise HTTPException(413, f"{name}: {seconds:.1f} s of audio is longer than max_seconds={max_seconds:g}")

    @app.middleware("http")
    async def refuse_large_bodies(request: Request, call_next):
        # Refuse by Content-Length before the body is read; chunked uploads are checked after reading.
        length = request.headers.get("content-length", "")
        if request.url.path == "/predict" and length.isdigit() and int(length) > max_bytes + MULTIPART_OVERHEAD:
            return JSONResponse(status_code=413, content={"detail": too_large})
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def explain_bad_form(request: Request, error: RequestValidationError):
        return JSONResponse(status_code=422, content={
            "detail": "POST /predict expects multipart/form-data with the audio file in the field `file` "
                      "(e.g. curl -F file=@clip.wav http://HOST:PORT/predict)",
            "errors": jsonable_encoder(error.errors(), custom_encoder={bytes: lambda b: f"<{len(b)} bytes>"})})

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", **predictor.describe(), "max_upload_mb": max_upload_mb, "max_seconds": max_seconds}

    @app.post("/predict")
    def predict(file: UploadFile = File(...)) -> dict:
        name = file.filename or "upload"
        data = file.file.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise HTTPException(413, f"{name}: {too_large}")
        if not data:
            raise HTTPException(400, f"{name}: empty upload (0 bytes)")
        with tempfile.NamedTemporaryFile(suffix=Path(name).suffix.lower()) as handle:
            handle.write(data)
            handle.flush()
            try:
                # the header first: 20 MB of low-bitrate Opus holds hours, gigabytes once decoded
                refuse_if_too_long(probe(handle.name).duration, name)
            except AudioError:
                pass  # a container only ffmpeg reads (M4A): its length is known after decoding
            try:
                waveform = load(handle.name, predictor.sample_rate)
            except AudioError as error:
                message = str(error).replace(handle.name, name)  # the temporary path means nothing to a client
                raise HTTPException(422, f"{name}: {message}") from None
        refuse_if_too_long(len(waveform) / predictor.sample_rate, name)
        try:
            return {"file": name, **predictor.predict_array(waveform, predictor.sample_rate)}
        except AudioError as error:  # too short for min_seconds
            raise HTTPException(422, f"{name}: {error}") from None

    return app
