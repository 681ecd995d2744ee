"""Live streams: end-to-end latency, and how many real-time streams one CPU core keeps up with (`make bench-stream`).

The service (the FastAPI app under uvicorn, default ResNet with random weights: speed does not depend on the
weights' values, or --checkpoint) runs in its own process pinned to one core with one PyTorch thread; the
clients run in this process on the other cores. Every client sends speech (RAVDESS clips from --data-dir,
else a synthetic voice) at real-time pace in 32 ms frames of 16 kHz float32, so that every window is run
through the model.
- latency: from the moment the frame holding a window's last sample is sent to the moment that window's
  event arrives, p50 and p95, one stream;
- streams: N concurrent streams, starts spread over a hop, for each N in --streams; N is kept up with while
  the p95 latency stays within one hop (0.5 s): beyond that, events fall further behind the audio. A run
  whose clients send their frames more than 50 ms late (p95) measures the clients, not the service: it
  stops the search and is reported as such.

    python benchmarks/stream_latency.py [--data-dir ../shared/data] [--streams 10,20,30,40,50] [--seconds 12]
"""

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RATE, FRAME, HOP = 16000, 512, 0.5
LATE = 0.05  # s: clients sending later than this (p95) no longer send at real-time pace


def resnet_predictor(checkpoint: str | None = None):
    """The predictor around the default ResNet (random weights unless `checkpoint`), as the service runs it."""
    from benchmarks.inference import build_model
    from emotion_lightning.inference.metadata import metadata
    from emotion_lightning.inference.predictor import EmotionPredictor, TorchBackend

    model = build_model("resnet", checkpoint)
    info = metadata(model)
    return EmotionPredictor(TorchBackend(model), info["classes"], info["sample_rate"], info["clip_seconds"], HOP)


def serve(port: int, core: int, checkpoint: str | None) -> None:
    """The service on one core and one PyTorch thread."""
    import torch
    import uvicorn

    from emotion_lightning.inference.app import create_app
    from emotion_lightning.inference.stream import StreamSettings

    os.sched_setaffinity(0, {core})
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    settings = StreamSettings(max_streams=1000, max_queued_events=1000)
    uvicorn.run(create_app(resnet_predictor(checkpoint), stream=settings), host="127.0.0.1", port=port,
                log_level="warning")  # uvicorn's default WebSocket implementation, as `serve` runs it


def speech(data_dir: Path | None, seconds: float) -> np.ndarray:
    """`seconds` of speech: RAVDESS clips one after another, or the tests' synthetic voice."""
    from emotion_lightning.data.audio import load

    clips = sorted((data_dir / "ravdess").rglob("03-01-*.flac")) if data_dir else []
    if not clips:
        from tests.helpers.audio import speech_like

        return speech_like(seconds, RATE)
    pieces, total = [], 0
    for clip in clips[::37]:
        pieces.append(load(clip, RATE))
        total += len(pieces[-1])
        if total >= seconds * RATE:
            break
    return np.concatenate(pieces)[:int(seconds * RATE)]


async def one_stream(url: str, audio: np.ndarray, delay: float) -> tuple[list[float], list[float]]:
    """Send `audio` at real-time pace after `delay` s; the latency (s) of every window event, and how late (s)
    each frame was sent."""
    from websockets.asyncio.client import connect

    await asyncio.sleep(delay)
    sent_at: list[float] = []
    latencies: list[float] = []
    late: list[float] = []
    async with connect(url, compression=None, proxy=None, max_queue=None) as websocket:
        await websocket.send(json.dumps({"sample_rate": RATE, "format": "float32"}))

        async def read():
            async for message in websocket:
                arrived, event = time.perf_counter(), json.loads(message)
                if event["type"] == "window":
                    latencies.append(arrived - sent_at[(round(event["end"] * RATE) - 1) // FRAME])
                elif event["type"] == "error":
                    raise RuntimeError(event["error"])

        reader = asyncio.create_task(read())
        started = time.perf_counter()
        for index, first in enumerate(range(0, len(audio) - FRAME + 1, FRAME)):
            due = started + (index + 1) * FRAME / RATE
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            sent_at.append(time.perf_counter())
            late.append(sent_at[-1] - due)
            await websocket.send(audio[first:first + FRAME].tobytes())
        await websocket.send(json.dumps({"end": True}))
        await reader
    return latencies, late


async def streams(url: str, audio: np.ndarray, count: int) -> tuple[np.ndarray, float]:
    """Latencies (ms) of every window of `count` concurrent streams, and the clients' p95 lateness (ms)."""
    runs = await asyncio.gather(*[one_stream(url, audio, HOP * k / count) for k in range(count)])
    latency = np.concatenate([np.asarray(latencies) for latencies, _ in runs]) * 1000
    return latency, float(np.percentile(np.concatenate([late for _, late in runs]), 95)) * 1000


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(port: int, server: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError("the service stopped before it answered")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("the service did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, help="folder holding ravdess/ (else a synthetic voice)")
    parser.add_argument("--checkpoint", help="a trained .ckpt instead of random weights")
    parser.add_argument("--streams", default="10,20,30,40,50", help="concurrent stream counts to try, ascending")
    parser.add_argument("--seconds", type=float, default=12.0, help="audio per stream in each stream-count run")
    parser.add_argument("--latency-seconds", type=float, default=20.0, help="audio of the one-stream latency run")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--core", type=int, default=0, help="the core the service is pinned to")
    args = parser.parse_args()
    if args.serve:
        return serve(args.serve, args.core, args.checkpoint)

    port = free_port()
    command = [sys.executable, __file__, "--serve", str(port), "--core", str(args.core)]
    server = subprocess.Popen(command + (["--checkpoint", args.checkpoint] if args.checkpoint else []))
    os.sched_setaffinity(0, (os.sched_getaffinity(0) - {args.core}) or {args.core})
    url = f"ws://127.0.0.1:{port}/stream"
    try:
        wait_for(port, server)
        asyncio.run(streams(url, speech(args.data_dir, 4.0), 1))  # warm-up
        latency, _ = asyncio.run(streams(url, speech(args.data_dir, args.latency_seconds), 1))
        print(f"one stream: latency p50 {np.percentile(latency, 50):.0f} ms, p95 {np.percentile(latency, 95):.0f} ms "
              f"over {len(latency)} windows (from a window's last sample sent to its event)", flush=True)
        audio, kept_up = speech(args.data_dir, args.seconds), 0
        for count in map(int, args.streams.split(",")):
            latency, late = asyncio.run(streams(url, audio, count))
            p95 = np.percentile(latency, 95)
            print(f"{count} streams: latency p50 {np.percentile(latency, 50):.0f} ms, p95 {p95:.0f} ms, "
                  f"max {latency.max():.0f} ms over {len(latency)} windows; frames sent {late:.0f} ms late (p95)",
                  flush=True)
            if late > LATE * 1000:
                print(f"the clients fell behind real time at {count} streams: this run measures them, not the "
                      "service (give them more cores)")
                break
            if p95 > HOP * 1000:
                break
            kept_up = count
        print(f"one core keeps up with {kept_up} real-time streams (p95 within one {HOP:g} s hop); "
              f"{os.cpu_count()} cores on this machine, the service pinned to core {args.core}")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
