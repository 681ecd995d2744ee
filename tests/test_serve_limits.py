"""The service and the decoder against hostile inputs: files that declare far more audio than they hold, bodies
without a length, uploads that trickle in, foreign Host headers, ffmpeg containers and odd file names.

A stand-in model runs behind the real predictor and app (no training), in-process or on 127.0.0.1.
"""

import asyncio
import io
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient

import emotion_lightning.data.audio as audio
from emotion_lightning.data.audio import AudioError, DecodeLimits, load
from emotion_lightning.inference.app import create_app
from tests.test_inference_inputs import RATE, make_predictor
from tests.helpers.audio import speech_like
from tests.helpers.server import running_server

REPO = Path(__file__).resolve().parents[1]
LOCAL = "http://127.0.0.1"
# The file of the report: 166 KB of FLAC that declares 30 s of 8 channels at 655,350 Hz (629 MB as float32).
BOMB_RATE, BOMB_CHANNELS, BOMB_SECONDS = 655_350, 8, 30


@pytest.fixture(scope="module")
def bomb(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bomb") / "bomb.flac"
    block = np.full((BOMB_RATE, BOMB_CHANNELS), 0.25, np.float32)
    with sf.SoundFile(path, "w", BOMB_RATE, BOMB_CHANNELS, format="FLAC", subtype="PCM_16") as out:
        for _ in range(BOMB_SECONDS):
            out.write(block)
    assert path.stat().st_size < 200_000
    return path


def wav(seconds: float = 1.0, rate: int = RATE, channels: int = 1) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, np.stack([speech_like(seconds, rate)] * channels, axis=1), rate, format="WAV")
    return buffer.getvalue()


def client(**settings) -> TestClient:
    settings = {"max_upload_mb": 1, "max_seconds": 10, **settings}
    return TestClient(create_app(make_predictor(vad="none"), **settings), base_url=LOCAL)


# 1. A small file that declares gigabytes of samples ----------------------------------------------------------

def test_a_huge_rate_and_channel_count_is_refused_on_the_header_without_decoding(bomb, monkeypatch):
    import emotion_lightning.inference.app as app

    monkeypatch.setattr(app, "load", lambda *args: pytest.fail("decoded a file its header already refuses"))
    response = client().post("/predict", files={"file": ("bomb.flac", bomb.read_bytes())})
    assert response.status_code == 422
    assert response.json()["detail"] == ("bomb.flac: sample rate 655350 Hz is above max_sample_rate=192000; "
                                         "resample the file first (e.g. to 48000 Hz) or raise the setting")
    response = client().post("/predict", files={"file": ("many.wav", wav(1.0, channels=9))})
    assert response.status_code == 422 and "9 channels, more than max_channels=8" in response.json()["detail"]


def test_predict_refuses_the_same_files_naming_the_settings(bomb, tmp_path):
    many = tmp_path / "many.wav"
    many.write_bytes(wav(1.0, channels=3))
    results = make_predictor(vad="none", limits=DecodeLimits(max_channels=2)).predict_files([bomb, many])
    assert "above max_sample_rate=192000" in results[0]["error"]
    assert "3 channels, more than max_channels=2" in results[1]["error"]


def peak_rss_mb(code: str) -> float:
    """Peak memory (MB) of a fresh Python running `code`, as the kernel counts it."""
    result = subprocess.run([sys.executable, "-c", code + "\nimport resource\n"
                             "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"],
                            capture_output=True, text=True, timeout=120, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr[-2000:]
    return float(result.stdout.split()[-1])


def test_an_allowed_file_is_decoded_in_blocks_so_memory_stays_one_mono_copy(bomb):
    """With the caps raised, the 629 MB of float32 samples the file declares never exist at once."""
    imports = "from emotion_lightning.data.audio import DecodeLimits, load"
    baseline = peak_rss_mb(imports)
    decoded = peak_rss_mb(f"{imports}\nw = load({str(bomb)!r}, 16000, DecodeLimits(max_sample_rate=700000))\n"
                          f"assert len(w) == {BOMB_SECONDS * 16000}")
    assert decoded - baseline < 100, f"decoding took {decoded - baseline:.0f} MB over the {baseline:.0f} MB of imports"


def test_a_header_that_understates_its_length_is_stopped_at_max_seconds(tmp_path, monkeypatch):
    path = tmp_path / "long.wav"
    path.write_bytes(wav(3.0))
    real = audio.AudioInfo
    monkeypatch.setattr(audio, "AudioInfo", lambda rate, frames, channels: real(rate, 1, channels))  # a lying header
    with pytest.raises(audio.TooLongError, match="longer than max_seconds=1"):
        load(path, RATE, DecodeLimits(max_seconds=1))


SERVICE = """
import sys, uvicorn
from emotion_lightning.inference.app import create_app
from tests.test_inference_inputs import make_predictor
server = uvicorn.Server(uvicorn.Config(create_app(make_predictor(vad="none"), 1, 600), host="127.0.0.1", port=0,
                                       log_level="warning"))
original = server.startup
async def startup(sockets=None):
    await original(sockets)
    print(server.servers[0].sockets[0].getsockname()[1], flush=True)
server.startup = startup
server.run()
"""


def peak_and_current_mb(pid: int) -> tuple[float, float]:
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return tuple(int(status[key].split()[0]) / 1024 for key in ("VmHWM", "VmRSS"))


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the service's memory from /proc")
def test_the_service_refuses_the_166_kb_file_within_50_mb_of_memory(bomb):
    """The report's file took the service from 83 MB to 833 MB; refused on its header, it takes next to nothing."""
    service = subprocess.Popen([sys.executable, "-c", SERVICE], cwd=REPO, stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        port = int(service.stdout.readline())
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            assert http.get("/health").status_code == 200
            before, _ = peak_and_current_mb(service.pid)
            for _ in range(3):
                response = http.post("/predict", files={"file": ("bomb.flac", bomb.read_bytes())})
                assert response.status_code == 422 and "max_sample_rate" in response.json()["detail"]
            after, now = peak_and_current_mb(service.pid)
        assert after - before < 50, f"peak memory went from {before:.0f} MB to {after:.0f} MB (now {now:.0f} MB)"
    finally:
        service.terminate()
        service.wait(timeout=30)


# 2. and 3. The body: counted as it arrives, and timed ----------------------------------------------------------

BOUNDARY = "limits-boundary"


def multipart(chunks, filename: str = "clip.wav"):
    """A multipart body streamed from `chunks` (an async iterator): no Content-Length, as a chunked upload."""
    async def body():
        yield (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
               "Content-Type: audio/wav\r\n\r\n").encode()
        async for chunk in chunks:
            yield chunk
        yield f"\r\n--{BOUNDARY}--\r\n".encode()
    return body()


def post_streamed(app, chunks) -> httpx.Response:
    async def run():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=LOCAL) as http:
            return await http.post("/predict", content=multipart(chunks),
                                   headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
    return asyncio.run(run())


def test_a_chunked_upload_is_refused_as_soon_as_it_passes_max_upload_mb():
    sent = 0

    async def sixty_megabytes():
        nonlocal sent
        for _ in range(60 * 16):
            sent += 64 * 1024
            yield bytes(64 * 1024)

    response = post_streamed(create_app(make_predictor(vad="none"), max_upload_mb=1), sixty_megabytes())
    assert response.status_code == 413 and "max_upload_mb=1" in response.json()["detail"]
    assert sent <= 1.2 * 1024 * 1024, f"{sent / 2 ** 20:.1f} MB were read before the upload was refused"


def test_an_upload_that_trickles_in_is_refused_after_upload_timeout():
    async def one_byte_a_second():
        for _ in range(30):
            yield b"R"
            await asyncio.sleep(1)

    start = time.monotonic()
    response = post_streamed(create_app(make_predictor(vad="none"), upload_timeout=1.5), one_byte_a_second())
    assert response.status_code == 408 and "upload_timeout=1.5" in response.json()["detail"]
    assert time.monotonic() - start < 10


def test_a_request_for_another_host_is_refused():
    http = client()
    assert http.get("/health").status_code == 200
    assert http.get("/health", headers={"Host": "attacker.example"}).status_code == 400
    assert http.get("/health", headers={"Host": "[::1]:8000"}).status_code == 200
    named = client(allowed_hosts=["emotion.example"])
    assert named.get("/health", headers={"Host": "emotion.example"}).status_code == 200


def test_the_api_pages_are_off_unless_docs_is_set():
    for page in ("/docs", "/redoc", "/openapi.json"):
        assert client().get(page).status_code == 404
        assert client(docs=True).get(page).status_code == 200


def compose_serve(overrides: list[str]):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            return compose("serve", overrides=["ckpt=unused.ckpt", *overrides])
    finally:
        GlobalHydra.instance().clear()


def test_the_serve_config_holds_the_limits_and_passes_them_to_uvicorn():
    from emotion_lightning.serve import server_options

    cfg = compose_serve([])
    assert (cfg.upload_timeout, cfg.limit_concurrency, cfg.timeout_keep_alive, cfg.docs) == (60, 16, 5, False)
    assert list(cfg.allowed_hosts) == ["localhost", "127.0.0.1", "[::1]"]
    assert (cfg.max_sample_rate, cfg.max_channels) == (192000, 8)
    assert server_options(compose_serve(["limit_concurrency=3", "timeout_keep_alive=2"])) == {
        "host": "127.0.0.1", "port": 8000, "limit_concurrency": 3, "timeout_keep_alive": 2,
        "ws_max_size": 262144 + 1024}
    assert server_options(compose_serve(["stream.max_frame_bytes=1000"]))["ws_max_size"] == 2024


def test_a_websocket_frame_over_max_frame_bytes_is_refused_by_the_server():
    from websockets.exceptions import ConnectionClosedError
    from websockets.sync.client import connect

    from emotion_lightning.serve import server_options

    options = {**server_options(compose_serve(["stream.max_frame_bytes=4096"])), "port": 0}
    with running_server(create_app(make_predictor(vad="none")), **options) as port:
        with connect(f"ws://127.0.0.1:{port}/stream", proxy=None, compression=None) as websocket:
            websocket.send('{"sample_rate": 16000}')
            # the server closes (or resets) the connection while the frame is still being sent, or right after; had the
            # frame reached the app, recv would return the app's JSON error instead of raising
            with pytest.raises((ConnectionClosedError, ConnectionResetError)) as closed:
                websocket.send(bytes(2 * 1024 * 1024))  # under the app's own check (16 MiB by uvicorn's default)
                websocket.recv(timeout=10)
    # a close frame, when one arrives before the socket goes, says "message too big"; the server's close can also
    # lose the race with the client's send, and the socket then ends with no close frame received (as a reset does)
    if isinstance(closed.value, ConnectionClosedError) and closed.value.rcvd is not None:
        assert closed.value.rcvd.code == 1009


def test_connections_beyond_limit_concurrency_get_503():
    from emotion_lightning.serve import server_options

    options = {**server_options(compose_serve(["limit_concurrency=2"])), "port": 0}
    slow = []
    with running_server(create_app(make_predictor(vad="none")), **options) as port:
        for _ in range(2):  # uploads that never finish: the first is served, the second already gets 503
            connection = socket.create_connection(("127.0.0.1", port))
            connection.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n"
                               b"Content-Type: multipart/form-data; boundary=x\r\n\r\n--x")
            slow.append(connection)
            time.sleep(0.5)  # its request is under way before the next connection opens
        try:
            assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).status_code == 503
        finally:
            for connection in slow:
                connection.close()


# 4. ffmpeg: forced format, local files only, bounded length and time -----------------------------------------

@pytest.fixture
def fake_ffmpeg(tmp_path, monkeypatch):
    """An `ffmpeg` that records its arguments and writes SECONDS of 16 kHz audio to its output (or sleeps)."""
    script = tmp_path / "ffmpeg"
    script.write_text(f"#!{sys.executable}\n"
                      "import os, sys, time, numpy, soundfile\n"
                      "open(os.environ['FAKE_FFMPEG_ARGS'], 'w').write('\\n'.join(sys.argv[1:]))\n"
                      "time.sleep(float(os.environ.get('FAKE_FFMPEG_SLEEP', 0)))\n"
                      "soundfile.write(sys.argv[-1], numpy.full(int(16000 * float(os.environ['FAKE_FFMPEG_SECONDS'])),"
                      " 0.1, 'float32'), 16000, format='WAV', subtype='FLOAT')\n")
    script.chmod(0o755)
    monkeypatch.setattr(audio, "ffmpeg_executable", lambda: str(script))
    monkeypatch.setenv("FAKE_FFMPEG_ARGS", str(tmp_path / "args.txt"))
    monkeypatch.setenv("FAKE_FFMPEG_SECONDS", "2")
    return tmp_path / "args.txt"


M4A = b"\x00\x00\x00\x18ftypM4A " + bytes(100)


def test_an_m4a_upload_is_decoded_with_a_forced_format_local_files_only_and_a_length_cap(fake_ffmpeg, monkeypatch):
    response = client().post("/predict", files={"file": ("voice.m4a", M4A)})
    assert response.status_code == 200, response.text
    arguments = fake_ffmpeg.read_text().splitlines()
    for flag, value in (("-protocol_whitelist", "file"), ("-f", "mov"), ("-t", "11"), ("-ac", "1")):
        assert arguments[arguments.index(flag) + 1] == value
    assert arguments[arguments.index("-i") + 1].startswith("file:/")
    monkeypatch.setenv("FAKE_FFMPEG_SECONDS", "11")  # what `-t` lets through: a second over max_seconds=10
    response = client().post("/predict", files={"file": ("long.aac", M4A)})
    assert response.status_code == 413 and response.json()["detail"] == \
        "long.aac: 11.0 s of audio is longer than max_seconds=10"
    assert fake_ffmpeg.read_text().splitlines()[fake_ffmpeg.read_text().splitlines().index("-f") + 1] == "aac"


def test_ffmpeg_that_hangs_is_stopped_after_its_timeout(fake_ffmpeg, monkeypatch):
    monkeypatch.setattr(audio, "FFMPEG_TIMEOUT", 1)
    monkeypatch.setenv("FAKE_FFMPEG_SLEEP", "30")
    start = time.monotonic()
    response = client().post("/predict", files={"file": ("stuck.mp4", M4A)})
    assert response.status_code == 422 and "ffmpeg took longer than 1 s" in response.json()["detail"]
    assert time.monotonic() - start < 20


# 5. File names a client may send -------------------------------------------------------------------------------

@pytest.mark.parametrize("filename", ["voice\x00.wav", "voice.w\x00av", "voice." + "w" * 300, "../../etc/x.wav",
                                      "voice"])
def test_any_file_name_gets_an_answer_not_a_server_error(filename):
    body = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            "Content-Type: audio/wav\r\n\r\n").encode() + wav(1.0) + f"\r\n--{BOUNDARY}--\r\n".encode()
    response = client().post("/predict", content=body,
                             headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
    assert response.status_code == 200, response.text
    assert response.json()["file"] == filename and response.json()["emotion"] == "fearful"
