"""The HTTP service on a real socket (uvicorn in a thread) with a real HTTP client (httpx)."""

import io

import httpx
import numpy as np
import pytest
import soundfile as sf

import emotion_lightning.data.audio as audio
from emotion_lightning.inference.predictor import EmotionPredictor
from emotion_lightning.inference.app import create_app
from tests.helpers.audio import tone
from tests.helpers.server import running_server

MAX_UPLOAD_MB, MAX_SECONDS = 0.5, 10


@pytest.fixture(scope="module")
def client(trained_checkpoint):
    # vad=none: the uploads are the fixture model's steady tones, which a voice-activity detector calls no speech
    app = create_app(EmotionPredictor.from_checkpoint(trained_checkpoint, vad="none"), MAX_UPLOAD_MB, MAX_SECONDS)
    with running_server(app) as port, httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
        yield http


def encoded(seconds: float, rate: int = 16000, channels: int = 1, fmt: str = "WAV", subtype: str | None = None):
    buffer = io.BytesIO()
    signal = tone("angry", seconds, rate, seed=5)
    sf.write(buffer, np.stack([signal] * channels, axis=1), rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


def test_health_describes_the_model(client):
    response = client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["model"] == "resnet" and len(body["classes"]) == 8
    assert (body["sample_rate"], body["window_seconds"], body["max_upload_mb"]) == (16000, 3.0, MAX_UPLOAD_MB)


@pytest.mark.parametrize("name, rate, channels, fmt, subtype", [
    ("stereo.wav", 44100, 2, "WAV", "PCM_16"), ("voice.flac", 22050, 1, "FLAC", None),
    ("voice.ogg", 48000, 1, "OGG", "OPUS")])
def test_predict_an_upload(client, name, rate, channels, fmt, subtype):
    response = client.post("/predict", files={"file": (name, encoded(1.0, rate, channels, fmt, subtype))})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["file"] == name and body["duration"] == pytest.approx(1.0, abs=0.02)
    assert sum(body["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert body["emotion"] in body["probabilities"] and len(body["windows"]) == 1


def test_long_upload_gets_a_timeline(client):
    response = client.post("/predict", files={"file": ("long.flac", encoded(6.0, fmt="FLAC"))})
    assert response.status_code == 200
    assert [w["start"] for w in response.json()["windows"]] == [0.0, 1.5, 3.0]


def test_corrupt_upload_is_422_naming_the_file(client):
    response = client.post("/predict", files={"file": ("broken.wav", b"RIFF\x10\x00\x00\x00WAVEjunk")})
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail.startswith("broken.wav: cannot decode audio") and "/tmp" not in detail


def test_empty_upload_is_400(client):
    response = client.post("/predict", files={"file": ("empty.wav", b"")})
    assert response.status_code == 400 and response.json()["detail"] == "empty.wav: empty upload (0 bytes)"


def test_too_large_upload_is_413(client):
    response = client.post("/predict", files={"file": ("big.wav", encoded(20.0))})  # 640 KB > 0.5 MB
    assert response.status_code == 413 and "max_upload_mb=0.5" in response.json()["detail"]


def test_too_long_recording_is_413_before_it_is_decoded(client, monkeypatch):
    import emotion_lightning.inference.app as app

    def never_decode(*args, **kwargs):  # hours of low-bitrate Opus fit under max_upload_mb: refuse on the header
        raise AssertionError("a recording longer than max_seconds was decoded")

    monkeypatch.setattr(app, "load", never_decode)
    response = client.post("/predict", files={"file": ("long.ogg", encoded(12.0, fmt="OGG", subtype="VORBIS"))})
    assert response.status_code == 413
    assert "12.0 s of audio is longer than max_seconds=10" in response.json()["detail"]


def test_missing_file_field_explains_the_form(client):
    response = client.post("/predict", data={"audio": "clip.wav"})
    assert response.status_code == 422 and "field `file`" in response.json()["detail"]
    assert response.json()["errors"][0]["loc"] == ["body", "file"]  # JSON objects, not a Python repr


def test_m4a_without_ffmpeg_is_422_saying_what_to_install(client, monkeypatch):
    monkeypatch.setattr(audio, "ffmpeg_executable", lambda: None)
    response = client.post("/predict", files={"file": ("voice.m4a", b"\x00\x00\x00\x18ftypM4A " + bytes(100))})
    assert response.status_code == 422 and "needs ffmpeg" in response.json()["detail"]


def compose(name: str, overrides: list[str]):
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from tests.helpers.configs import CONF_DIR

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return hydra_compose(name, overrides=overrides)
    finally:
        GlobalHydra.instance().clear()


def test_serve_and_export_configs_build_what_the_commands_run(trained_checkpoint):
    from fastapi.testclient import TestClient

    from emotion_lightning.inference.predictor import predictor_from_config

    cfg = compose("serve", [f"ckpt={trained_checkpoint}", "max_upload_mb=1", "hop_seconds=1.0"])
    assert (cfg.host, cfg.port, cfg.backend, cfg.device, cfg.max_seconds) == ("127.0.0.1", 8000, "torch", "cpu", 600)
    app = create_app(predictor_from_config(cfg), cfg.max_upload_mb, cfg.max_seconds)
    health = TestClient(app, base_url="http://127.0.0.1").get("/health").json()
    assert (health["hop_seconds"], health["max_upload_mb"], health["backend"]) == (1.0, 1, "torch")
    assert (health["vad"], health["min_seconds"]) == ("silero", 0.5)
    export_cfg = compose("export", [f"ckpt={trained_checkpoint}"])
    assert (export_cfg.format, export_cfg.output, export_cfg.opset) == ("onnx", None, 18)
