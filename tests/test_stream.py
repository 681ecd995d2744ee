"""Live streams: the /stream WebSocket (app in-process), the page at /, `emotion-lightning stream`, and the page
in a real browser (headless Chromium with a fake microphone)."""

import json
import shutil
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from emotion_lightning.data.audio import load
from emotion_lightning.data.taxonomy import EMOTIONS
from emotion_lightning.inference.app import create_app
from emotion_lightning.inference.live import Outbox
from emotion_lightning.inference.predictor import EmotionPredictor
from emotion_lightning.inference.stream import (BAD_DATA, POLICY, TOO_BIG, TRY_LATER, UNSUPPORTED, RingBuffer,
                                                StreamError, StreamHeader, StreamScorer, StreamSettings)
from tests.conftest import SHARED_DATA
from tests.helpers.audio import speech_like
from tests.helpers.server import running_server

RATE = 16000
SETTINGS = StreamSettings(max_frame_bytes=64 * 1024, max_stream_seconds=20, max_streams=3, max_idle_seconds=5)


class BandEnergies:
    """A stand-in model that answers in microseconds: softmax of the log energy in 8 frequency bands, so
    different audio gives different probabilities."""

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        spectrum = np.abs(np.fft.rfft(windows.astype(np.float64), axis=1)) ** 2
        bands = np.log(np.stack([part.sum(axis=1) for part in np.array_split(spectrum, 8, axis=1)], axis=1) + 1e-9)
        scores = np.exp(bands - bands.max(axis=1, keepdims=True))
        return scores / scores.sum(axis=1, keepdims=True)


def stand_in_predictor(vad: str = "silero") -> EmotionPredictor:
    return EmotionPredictor(BandEnergies(), list(EMOTIONS), RATE, 3.0, 0.5, vad=vad)


@pytest.fixture(scope="module")
def client():
    with TestClient(create_app(stand_in_predictor(), stream=SETTINGS), base_url="http://127.0.0.1") as http:
        yield http


def odd_frames(samples: np.ndarray, seed: int = 0):
    """The samples cut into frames of random odd sizes (1 to about 3,000 samples)."""
    rng, first = np.random.default_rng(seed), 0
    while first < len(samples):
        size = int(rng.integers(0, 1500)) * 2 + 1
        yield samples[first:first + size]
        first += size


def events_until_close(websocket) -> tuple[list[dict], int]:
    events = []
    while (message := websocket.receive())["type"] != "websocket.close":
        events.append(json.loads(message["text"]))
    return events, message["code"]


def stream(client, header: dict, frames, end: bool = True, headers: dict | None = None) -> tuple[list[dict], int]:
    with client.websocket_connect("ws://127.0.0.1/stream", headers=headers or {}) as websocket:
        websocket.send_text(json.dumps(header))
        for frame in frames:
            websocket.send_bytes(frame)
        if end:
            websocket.send_text(json.dumps({"end": True}))
        return events_until_close(websocket)


def float32_frames(samples, seed=0):
    return (frame.astype("<f4").tobytes() for frame in odd_frames(samples, seed))


def assert_same_windows(events: list[dict], offline: dict) -> None:
    """Stream events against `predict`'s answer for the same audio: same windows, speech, emotions, probabilities."""
    windows, summary = events[:-1], events[-1]
    assert all(event["type"] == "window" for event in windows) and summary["type"] == "summary"
    assert [(w["start"], w["end"], w["no_speech"], w["emotion"]) for w in windows] == \
           [(t["start"], t["end"], not t["speech"], t["emotion"]) for t in offline["windows"]]
    for window, expected in zip(windows, offline["windows"]):
        if expected["probabilities"]:
            np.testing.assert_allclose(list(window["probabilities"].values()),
                                       list(expected["probabilities"].values()), atol=1e-4)
    assert (summary["emotion"], summary["no_speech"]) == (offline["emotion"], offline["no_speech"])
    assert summary["duration"] == pytest.approx(offline["duration"])
    if offline["confidence"] is not None:
        assert summary["confidence"] == pytest.approx(offline["confidence"], abs=1e-4)


@pytest.mark.parametrize("sample_format", ["float32", "int16"])
def test_stream_in_odd_frames_equals_the_offline_windows(client, sample_format):
    audio = np.concatenate([speech_like(3.3, seed=1), np.zeros(4 * RATE, np.float32), speech_like(2.0, seed=2)])
    if sample_format == "int16":
        audio = np.round(audio * 32767).astype("<i2")
    frames = (frame.astype(sample_format).tobytes() for frame in odd_frames(audio))
    offline = stand_in_predictor().predict_array(audio, RATE)
    events, code = stream(client, {"sample_rate": RATE, "format": sample_format}, frames)
    assert code == 1000
    assert len(events) == len(offline["windows"]) + 1 == 15  # 9.3 s: windows every 0.5 s, one more at the end
    assert {e["no_speech"] for e in events[:-1]} == {True, False}  # windows inside the 4 s of silence have none
    assert_same_windows(events, offline)


def test_a_real_ravdess_clip_streamed_equals_predict_with_the_resnet(shared_ravdess):
    from benchmarks.stream_latency import resnet_predictor

    predictor = resnet_predictor()  # the default ResNet, random weights
    clip = sorted(shared_ravdess.rglob("03-01-05-02-*.flac"))[0]  # angry, strong
    waveform = load(clip, RATE)
    with TestClient(create_app(predictor, stream=SETTINGS), base_url="http://127.0.0.1") as http:
        events, code = stream(http, {"sample_rate": RATE}, float32_frames(waveform, seed=3))
    assert code == 1000 and len(events) >= 3
    assert_same_windows(events, predictor.predict_file(clip))


def test_silence_gives_no_speech_events(client):
    quiet = 1e-4 * np.random.default_rng(0).standard_normal(4 * RATE)
    events, code = stream(client, {"sample_rate": RATE}, float32_frames(quiet))
    windows = events[:-1]
    assert code == 1000 and len(windows) == 3
    assert all(w["no_speech"] and w["emotion"] is None and w["smoothed"]["emotion"] is None for w in windows)
    assert events[-1]["no_speech"] and events[-1]["emotion"] is None


def test_events_arrive_while_streaming_with_a_smoothed_estimate(client):
    audio = speech_like(5.0, seed=4)
    with client.websocket_connect("ws://127.0.0.1/stream") as websocket:
        websocket.send_text(json.dumps({"sample_rate": RATE, "hop_seconds": 1.0}))
        for first in range(0, 4 * RATE, 512):  # four seconds: the windows at 0 and 1 s are whole
            websocket.send_bytes(audio[first:first + 512].tobytes())
        first_two = [websocket.receive_json(), websocket.receive_json()]
        websocket.send_text(json.dumps({"end": True}))
        rest, _ = events_until_close(websocket)
    assert [(e["start"], e["end"]) for e in first_two] == [(0.0, 3.0), (1.0, 4.0)]
    assert first_two[0]["smoothed"] == {key: first_two[0][key] for key in ("emotion", "confidence", "probabilities")}
    expected = {name: 0.6 * first_two[0]["probabilities"][name] + 0.4 * first_two[1]["probabilities"][name]
                for name in EMOTIONS}
    assert first_two[1]["smoothed"]["probabilities"] == pytest.approx(expected)
    assert [e["type"] for e in rest] == ["summary"] and rest[0]["windows"] == 2  # 4 s: no window left at the end


@pytest.mark.parametrize("first_message, code, words", [
    ("not json", BAD_DATA, "JSON header"),
    ("[16000]", BAD_DATA, "JSON object"),
    ('{"sample_rate": 16000, "channels": 2}', BAD_DATA, "unknown header field(s) channels"),
    ('{"sample_rate": 16000.5}', BAD_DATA, "sample_rate=16000.5"),
    ('{"format": "float32"}', BAD_DATA, "sample_rate=None"),
    ('{"sample_rate": 16000, "format": "mp3"}', BAD_DATA, "use float32 or int16"),
    ('{"sample_rate": 16000, "hop_seconds": 5}', BAD_DATA, "hop_seconds=5; use more than 0 and at most the window"),
    ('{"sample_rate": 16000, "window_seconds": 1e5}', BAD_DATA,
     "window_seconds=100000; use more than 0 and at most 3 s (stream.max_window_seconds)"),
    ('{"sample_rate": 16000, "hop_seconds": 1e-4}', BAD_DATA,
     "hop_seconds=0.0001; use from stream.min_hop_seconds=0.1 to the window, 3 s"),
    (b"\x00\x00\x00\x00", UNSUPPORTED, "open the stream with a JSON header"),
])
def test_a_bad_header_ends_with_a_json_error_and_a_close_code(client, first_message, code, words):
    with client.websocket_connect("ws://127.0.0.1/stream") as websocket:
        if isinstance(first_message, bytes):
            websocket.send_bytes(first_message)
        else:
            websocket.send_text(first_message)
        events, closed_with = events_until_close(websocket)
    assert closed_with == code and len(events) == 1
    assert events[0]["type"] == "error" and events[0]["code"] == code and words in events[0]["error"]


def test_a_longer_window_is_taken_up_to_max_window_seconds():
    header = StreamHeader(RATE, window_seconds=5.0)
    with pytest.raises(StreamError, match=r"at most 3 s \(stream.max_window_seconds\)") as refused:
        StreamScorer.from_header(stand_in_predictor(vad="none"), header, StreamSettings())
    assert refused.value.code == BAD_DATA
    scorer = StreamScorer.from_header(stand_in_predictor(vad="none"), header, StreamSettings(max_window_seconds=6))
    assert (scorer.window, scorer.hop) == (5 * RATE, RATE // 2)
    with pytest.raises(ValueError, match="hop_seconds=0.05 is below stream.min_hop_seconds=0.1"):
        StreamSettings(hop_seconds=0.05)


def test_a_frame_over_the_limit_ends_the_stream_with_1009(client):
    events, code = stream(client, {"sample_rate": RATE}, [bytes(1024), bytes(SETTINGS.max_frame_bytes + 4)])
    assert code == TOO_BIG and events[-1]["code"] == TOO_BIG and "max_frame_bytes=65536" in events[-1]["error"]


@pytest.mark.parametrize("frame, words", [(bytes(6), "not a whole number of float32 samples"),
                                          (np.array([np.nan], "<f4").tobytes(), "NaN")])
def test_unusable_samples_end_the_stream_with_1007(client, frame, words):
    events, code = stream(client, {"sample_rate": RATE}, [frame])
    assert code == BAD_DATA and words in events[-1]["error"]


def test_an_over_long_stream_ends_with_1008(client):
    second = np.zeros(RATE, "<f4").tobytes()
    events, code = stream(client, {"sample_rate": RATE}, [second] * 21, end=False)
    assert code == POLICY and events[-1]["type"] == "error"
    assert "max_stream_seconds=20" in events[-1]["error"]
    assert sum(e["type"] == "window" for e in events) == 35  # the windows of the 20 s taken were answered


def test_a_text_message_other_than_end_ends_with_1003(client):
    with client.websocket_connect("ws://127.0.0.1/stream") as websocket:
        websocket.send_text(json.dumps({"sample_rate": RATE}))
        websocket.send_text("stop")
        events, code = events_until_close(websocket)
    assert code == UNSUPPORTED and '{"end": true}' in events[-1]["error"]


def test_concurrent_streams_each_get_their_own_events(client):
    audios = [speech_like(3.6 + k, seed=10 + k) for k in range(3)]
    expected = [stand_in_predictor().predict_array(audio, RATE) for audio in audios]
    sockets = [client.websocket_connect("ws://127.0.0.1/stream").__enter__() for _ in audios]
    try:
        for websocket in sockets:
            websocket.send_text(json.dumps({"sample_rate": RATE}))
        frames = [list(float32_frames(audio, seed=k)) for k, audio in enumerate(audios)]
        for step in range(max(map(len, frames))):  # interleaved, as streams arrive at a server
            for websocket, own in zip(sockets, frames):
                if step < len(own):
                    websocket.send_bytes(own[step])
        for websocket in sockets:
            websocket.send_text(json.dumps({"end": True}))
        answers = [events_until_close(websocket) for websocket in sockets]
    finally:
        for websocket in sockets:
            websocket.__exit__(None, None, None)
    for (events, code), offline in zip(answers, expected):
        assert code == 1000
        assert_same_windows(events, offline)


def test_a_stream_over_max_streams_is_refused_with_1013(client):
    sockets = [client.websocket_connect("ws://127.0.0.1/stream").__enter__() for _ in range(SETTINGS.max_streams)]
    try:
        for websocket in sockets:
            websocket.send_text(json.dumps({"sample_rate": RATE}))
            websocket.send_bytes(np.zeros(512, "<f4").tobytes())
        time.sleep(0.2)
        with client.websocket_connect("ws://127.0.0.1/stream") as refused:
            events, code = events_until_close(refused)
        assert code == TRY_LATER and "max_streams" in events[0]["error"]
    finally:
        for websocket in sockets:
            websocket.__exit__(None, None, None)
    events, code = stream(client, {"sample_rate": RATE}, [np.zeros(RATE, "<f4").tobytes()])
    assert code == 1000  # the places are free again


class SlowModel(BandEnergies):
    """A stand-in model that takes `seconds` per forward pass, says when one has begun and ended, and counts the
    passes running at once."""

    def __init__(self, seconds: float):
        self.seconds, self.begun, self.ended = seconds, threading.Event(), threading.Event()
        self.lock, self.running, self.most_at_once = threading.Lock(), 0, 0

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        with self.lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        self.begun.set()
        time.sleep(self.seconds)
        with self.lock:
            self.running -= 1
        self.ended.set()
        return super().__call__(windows)


def test_health_answers_while_a_stream_is_scored():
    from websockets.sync.client import connect

    model = SlowModel(2.0)
    predictor = EmotionPredictor(model, list(EMOTIONS), RATE, 3.0, 0.5, vad="none")
    with running_server(create_app(predictor, stream=SETTINGS)) as port:
        with connect(f"ws://127.0.0.1:{port}/stream", proxy=None) as websocket:
            websocket.send(json.dumps({"sample_rate": RATE}))
            audio = speech_like(3.0, seed=5)
            for first in range(0, len(audio), 4096):  # one whole window: its forward pass begins
                websocket.send(audio[first:first + 4096].tobytes())
            assert model.begun.wait(10)
            health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=10)
            assert health.status_code == 200 and not model.ended.is_set()  # answered while the model runs
            event = json.loads(websocket.recv(timeout=10))
            assert (event["type"], event["start"], event["end"]) == ("window", 0.0, 3.0)


def test_streams_are_scored_at_most_scoring_threads_at_once():
    model = SlowModel(0.3)
    predictor = EmotionPredictor(model, list(EMOTIONS), RATE, 3.0, 0.5, vad="none")
    settings = StreamSettings(scoring_threads=1)
    audio = speech_like(3.0, seed=6)
    with TestClient(create_app(predictor, stream=settings), base_url="http://127.0.0.1") as http:
        sockets = [http.websocket_connect("ws://127.0.0.1/stream").__enter__() for _ in range(2)]
        try:
            for websocket in sockets:
                websocket.send_text(json.dumps({"sample_rate": RATE, "hop_seconds": 1.0}))
                websocket.send_bytes(audio.tobytes())
            answers = [websocket.receive_json() for websocket in sockets]
        finally:
            for websocket in sockets:
                websocket.__exit__(None, None, None)
    assert [event["type"] for event in answers] == ["window", "window"]
    assert model.most_at_once == 1


def test_a_page_from_another_origin_cannot_open_a_stream(client):
    with pytest.raises(WebSocketDisconnect) as refused:
        with client.websocket_connect("ws://127.0.0.1/stream", headers={"Origin": "http://attacker.example"}):
            pass
    assert refused.value.code == POLICY
    second = np.zeros(RATE, "<f4").tobytes()
    for origin in ("http://127.0.0.1:8000", "http://localhost:8000", "http://[::1]:8000"):  # the service's page
        events, code = stream(client, {"sample_rate": RATE}, [second], headers={"Origin": origin})
        assert code == 1000 and events[-1]["type"] == "summary"
    named = create_app(stand_in_predictor(vad="none"), stream=SETTINGS, allowed_hosts=["emotion.example"])
    with TestClient(named, base_url="http://emotion.example") as http:
        with http.websocket_connect("ws://emotion.example/stream", headers={"Origin": "https://emotion.example"}):
            pass
        with pytest.raises(WebSocketDisconnect):
            with http.websocket_connect("ws://emotion.example/stream", headers={"Origin": "http://127.0.0.1"}):
                pass


def test_a_silent_client_is_ended_after_max_idle_seconds():
    settings = StreamSettings(max_idle_seconds=0.3)
    app = create_app(stand_in_predictor(vad="none"), stream=settings)
    with TestClient(app, base_url="http://127.0.0.1") as http:
        with http.websocket_connect("ws://127.0.0.1/stream") as websocket:
            websocket.send_text(json.dumps({"sample_rate": RATE}))
            events, code = events_until_close(websocket)
    assert code == POLICY and "max_idle_seconds=0.3" in events[0]["error"]


def test_a_stream_shorter_than_min_seconds_ends_with_an_error(client):
    events, code = stream(client, {"sample_rate": RATE}, [speech_like(0.2).tobytes()])
    assert code == POLICY and "shorter than the minimum min_seconds=0.5" in events[-1]["error"]


def test_a_48_khz_stream_is_resampled_like_a_file(client):
    audio = speech_like(4.0, sample_rate=48000, seed=6)
    events, code = stream(client, {"sample_rate": 48000}, float32_frames(audio))
    offline = stand_in_predictor().predict_array(audio, 48000)
    windows = events[:-1]
    assert code == 1000 and [(w["start"], w["no_speech"]) for w in windows] == \
           [(t["start"], not t["speech"]) for t in offline["windows"]]
    for window, expected in zip(windows, offline["windows"]):
        np.testing.assert_allclose(list(window["probabilities"].values()),
                                   list(expected["probabilities"].values()), atol=1e-3)


def test_a_slow_client_loses_the_oldest_events_or_the_stream():
    dropping = Outbox(size=2, policy="drop")
    for index in range(5):
        dropping.put({"index": index})
    dropping.put({"type": "summary"}, last=True)  # last words always go in
    assert [event["index"] for event in list(dropping.events)[:2]] == [3, 4] and dropping.dropped == 3
    closing = Outbox(size=2, policy="close")
    closing.put({"index": 0})
    closing.put({"index": 1})
    with pytest.raises(StreamError, match="reads events too slowly") as error:
        closing.put({"index": 2})
    assert error.value.code == POLICY


def test_the_ring_buffer_keeps_the_last_samples_across_the_wrap():
    ring = RingBuffer(10)
    ring.extend(np.arange(7, dtype=np.float32))
    ring.extend(np.arange(7, 14, dtype=np.float32))
    assert ring.read(4, 14).tolist() == list(range(4, 14))
    with pytest.raises(ValueError):
        ring.read(3, 5)  # overwritten


def test_settings_come_from_serve_yaml():
    from tests.test_serve import compose

    cfg = compose("serve", ["ckpt=x.ckpt", "stream.slow_client=close", "stream.max_streams=4"])
    settings = StreamSettings.from_config(cfg.stream)
    assert (settings.slow_client, settings.max_streams, settings.hop_seconds) == ("close", 4, 0.5)
    assert StreamSettings.from_config(compose("serve", ["ckpt=x.ckpt"]).stream) == StreamSettings()
    with pytest.raises(ValueError, match="use drop .* or close"):
        StreamSettings(slow_client="queue")


def test_the_page_and_its_scripts_are_served_and_load_nothing_from_elsewhere(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    for script in ("live.js", "capture-worklet.js", "live.css"):
        response = client.get(f"/static/{script}")
        assert response.status_code == 200 and response.text
        assert "http://" not in response.text and "https://" not in response.text
    assert "/static/live.js" in page.text and "//" not in page.text.replace("<!doctype html>", "")


@pytest.fixture(scope="module")
def service():
    """The app on a real socket (uvicorn in a thread): its ws:// URL."""
    with running_server(create_app(stand_in_predictor(), stream=SETTINGS)) as port:
        yield f"127.0.0.1:{port}"


def test_the_stream_command_sends_a_file_to_a_service(service, tmp_path, capsys):
    from emotion_lightning.stream import main

    audio = speech_like(4.0, seed=7)
    sf.write(tmp_path / "voice.flac", audio, RATE)
    with pytest.raises(SystemExit) as status:
        main([str(tmp_path / "voice.flac"), "--url", f"ws://{service}/stream", "--speed", "0"])
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert status.value.code == 0
    assert_same_windows(events, stand_in_predictor().predict_array(audio, RATE))


def test_the_service_refuses_another_origin_and_serves_its_own_page(service):
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    with pytest.raises(InvalidStatus, match="403"):
        connect(f"ws://{service}/stream", origin="http://attacker.example", proxy=None)
    with connect(f"ws://{service}/stream", origin=f"http://{service}", proxy=None) as websocket:  # the page at /
        websocket.send(json.dumps({"sample_rate": RATE}))
        websocket.send(np.zeros(RATE, "<f4").tobytes())
        websocket.send(json.dumps({"end": True}))
        events = [json.loads(message) for message in websocket]  # until the service closes
    assert events[-1]["type"] == "summary"


def test_the_stream_command_says_when_no_service_answers(tmp_path, capsys):
    from emotion_lightning.stream import main

    sf.write(tmp_path / "voice.wav", speech_like(1.0), RATE)
    with pytest.raises(SystemExit) as status:
        main([str(tmp_path / "voice.wav"), "--url", "ws://127.0.0.1:9/stream"])
    assert status.value.code == 1 and "error: cannot reach ws://127.0.0.1:9/stream" in capsys.readouterr().err


def test_the_stream_command_runs_a_checkpoint_in_process(trained_checkpoint, tmp_path, capsys):
    from emotion_lightning.stream import main

    audio = speech_like(4.0, seed=8)
    sf.write(tmp_path / "voice.wav", audio, RATE)
    with pytest.raises(SystemExit) as status:
        main([str(tmp_path / "voice.wav"), "--ckpt", str(trained_checkpoint), "--speed", "0"])
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    predictor = EmotionPredictor.from_checkpoint(trained_checkpoint, hop_seconds=0.5)
    assert status.value.code == 0
    assert_same_windows(events, predictor.predict_array(audio, RATE))


# --- the page in a real browser ----------------------------------------------------------------------------------
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--window-size=1100,900",
                  "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]


def chromium() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (browser and driver):
        pytest.skip("the browser test needs Chromium and its driver: apt-get install chromium chromium-driver "
                    "(Debian/Ubuntu), then pip install selenium")
    pytest.importorskip("selenium", reason="the browser test needs selenium: pip install -e '.[test]'")
    return browser, driver


def microphone_clip(folder: Path) -> Path:
    """A RAVDESS clip (a fixture voice without the corpus) as a 48 kHz 16-bit WAV, which Chromium's fake
    microphone plays in a loop."""
    clips = sorted((SHARED_DATA / "ravdess").rglob("03-01-05-02-01-01-*.flac"))
    audio = load(clips[0], 48000) if clips else speech_like(4.0, sample_rate=48000)
    path = folder / "microphone.wav"
    sf.write(path, audio, 48000, subtype="PCM_16")
    return path


@pytest.mark.slow
def test_the_page_in_chromium_shows_an_emotion_and_a_timeline(service, tmp_path):
    browser, driver_path = chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={tmp_path / 'profile'}",
                                  f"--use-file-for-fake-audio-capture={microphone_clip(tmp_path)}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    try:
        driver.get(f"http://{service}/")
        WebDriverWait(driver, 30).until(lambda d: d.find_element(By.ID, "legend").text)
        driver.find_element(By.ID, "microphone").click()
        timeline = driver.find_element(By.ID, "timeline")
        WebDriverWait(driver, 60).until(lambda d: int(timeline.get_attribute("data-windows")) >= 8
                                        or "error" in d.find_element(By.ID, "status").get_attribute("class"))
        status = driver.find_element(By.ID, "status").text
        emotion = driver.find_element(By.ID, "emotion").text
        driver.save_screenshot(str(tmp_path / "stream-page.png"))
        assert status.startswith("listening"), status
        assert emotion in EMOTIONS, f"the page shows {emotion!r}, not an emotion ({status})"
        painted = driver.execute_script(
            "const c = document.getElementById('timeline');"
            "const pixels = c.getContext('2d').getImageData(0, 0, c.width, c.height - 20).data;"
            "let n = 0; for (let i = 3; i < pixels.length; i += 4) n += pixels[i] > 0; return n;")
        assert painted > 1000, "the timeline canvas is empty"
    finally:
        driver.quit()
    print(f"screenshot: {tmp_path / 'stream-page.png'}")
