"""Real-time inference speed per model: PyTorch against ONNX Runtime, side by side (`make bench-inference`).

For each model it measures, through the predictor's own backends (log-mel front-end included, 3 s clip
at 16 kHz in, class probabilities out):
- single-clip latency, p50 and p95 ms, and batch throughput, clips/s at batch 32, both on one CPU
  thread by default (torch.set_num_threads(1); onnxruntime intra_op_num_threads=1; --threads N for more:
  on a machine shared with other jobs, more threads than idle cores make both runtimes much slower);
- peak resident memory (RSS, MB) of a process that loads the model and runs both measurements; each
  (model, backend) runs in its own fresh process, and the ONNX Runtime one never imports torch;
- on a GPU (--device cuda) the PyTorch latency and throughput again, and peak GPU memory.
Without --checkpoint each model is built from its config with random weights: speed and memory do not
depend on the weights' values. With --checkpoint NAME=PATH the trained model is measured instead.

    python benchmarks/inference.py [--models resnet,lstm] [--checkpoint resnet=outputs/.../last.ckpt] [--device cuda]
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
MODELS = ["resnet", "simple_cnn", "densenet", "lstm", "transformer", "simple_cnn_audio"]
BATCH = 32


def build_model(name: str, checkpoint: str | None):
    """A trained checkpoint, or the model of conf/model/NAME.yaml with random weights (seeded)."""
    import torch
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    import emotion_lightning  # noqa: F401  (the `len` resolver)
    from emotion_lightning.module import EmotionClassifier

    if checkpoint:
        return EmotionClassifier.from_checkpoint(checkpoint)
    torch.manual_seed(0)
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"model={name}"])
    model = instantiate(cfg.model).eval()
    model.run_config = {"audio": OmegaConf.to_container(cfg.audio), "model": {"name": name}}
    return model


def timed(call, clip_or_batch: np.ndarray, min_runs: int, seconds: float) -> list[float]:
    """Wall times (s) of `call`, after warm-up, for at least `min_runs` runs and about `seconds` seconds."""
    for _ in range(3):
        call(clip_or_batch)
    times, started = [], time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - started < seconds:
        start = time.perf_counter()
        call(clip_or_batch)
        times.append(time.perf_counter() - start)
        if len(times) >= 1000:
            break
    return times


def measure(backend, device_sync=lambda: None, seconds: float = 4.0) -> dict:
    """p50/p95 latency of one 3 s clip; clips/s at batch 32."""
    rng = np.random.default_rng(0)
    clip = (0.1 * rng.standard_normal((1, 48000))).astype(np.float32)
    batch = (0.1 * rng.standard_normal((BATCH, 48000))).astype(np.float32)

    def synced(x):
        backend(x)
        device_sync()

    latency = np.array(timed(synced, clip, 30, seconds)) * 1000
    batch_times = timed(synced, batch, 3, seconds)
    return {"p50_ms": float(np.percentile(latency, 50)), "p95_ms": float(np.percentile(latency, 95)),
            "runs": len(latency), "clips_per_s": BATCH / float(np.median(batch_times))}


def worker(args) -> dict:
    """One (model, backend, device) in this process; prints its measurements as JSON."""
    if args.worker == "onnx":
        import onnxruntime

        from emotion_lightning.predictor import OnnxBackend

        result = measure(OnnxBackend(args.onnx, threads=args.threads))
        result["torch_imported"] = "torch" in sys.modules
        result["onnxruntime"] = onnxruntime.__version__
    else:
        import torch

        from emotion_lightning.predictor import TorchBackend

        torch.set_num_threads(args.threads)
        model = build_model(args.model, args.checkpoint)
        sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
        result = measure(TorchBackend(model, args.device), sync)
        result["params"] = model.num_parameters
        result["torch"] = torch.__version__
        if args.device == "cuda":
            result["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
            result["gpu"] = torch.cuda.get_device_name()
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over
    from the parent through fork and exec, so a worker would report its parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_worker(*arguments: str) -> dict:
    completed = subprocess.run([sys.executable, __file__, *arguments], capture_output=True, text=True)
    if completed.returncode != 0:
        raise RuntimeError(f"worker {arguments} failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--checkpoint", action="append", default=[], help="NAME=PATH: measure a trained checkpoint")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="cuda adds a PyTorch GPU row")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of both runtimes (default 1)")
    parser.add_argument("--output", help="also write the measurements as JSON here")
    parser.add_argument("--worker", choices=["torch", "onnx"], help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--onnx", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.checkpoint = args.checkpoint[0] if args.checkpoint else None
        print(json.dumps(worker(args)))
        return

    from emotion_lightning.export import export_onnx

    checkpoints = dict(item.split("=", 1) for item in args.checkpoint)
    rows = {}
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models.split(","):
            extra = ["--threads", str(args.threads)] + (["--checkpoint", checkpoints[name]] if name in checkpoints else [])
            onnx_path = Path(folder) / f"{name}.onnx"
            export_onnx(build_model(name, checkpoints.get(name)), onnx_path)
            rows[name] = {"torch": run_worker("--worker", "torch", "--model", name, *extra),
                          "onnx": run_worker("--worker", "onnx", "--onnx", str(onnx_path), *extra[:2])}
            if args.device == "cuda":
                rows[name]["torch_cuda"] = run_worker("--worker", "torch", "--model", name, "--device", "cuda", *extra)
            print(f"measured {name}", file=sys.stderr)
    print(f"{args.threads} CPU thread(s) for both runtimes; {os.cpu_count()} cores on this machine")
    print(table(rows))
    if args.output:
        Path(args.output).write_text(json.dumps(rows, indent=2) + "\n")


def table(rows: dict) -> str:
    lines = ["| model | params | p50 ms PyTorch / ORT (ratio) | p95 ms PyTorch / ORT | clips/s at batch 32 "
             "PyTorch / ORT (ratio) | peak RSS MB PyTorch / ORT |", "|---|---|---|---|---|---|"]
    for name, row in rows.items():
        pt, ort = row["torch"], row["onnx"]
        lines.append(
            f"| {name} | {pt['params']:,} | {pt['p50_ms']:.2f} / {ort['p50_ms']:.2f} ({ort['p50_ms'] / pt['p50_ms']:.2f}x) "
            f"| {pt['p95_ms']:.2f} / {ort['p95_ms']:.2f} "
            f"| {pt['clips_per_s']:.0f} / {ort['clips_per_s']:.0f} ({ort['clips_per_s'] / pt['clips_per_s']:.2f}x) "
            f"| {pt['peak_rss_mb']:.0f} / {ort['peak_rss_mb']:.0f} |")
    gpu = {name: row["torch_cuda"] for name, row in rows.items() if "torch_cuda" in row}
    if gpu:
        lines += ["", "| model (PyTorch, GPU) | p50 ms | p95 ms | clips/s at batch 32 | peak GPU MB |", "|---|---|---|---|---|"]
        lines += [f"| {n} | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} | {r['clips_per_s']:.0f} | {r['gpu_peak_mb']:.0f} |"
                  for n, r in gpu.items()]
        lines.append(f"\nGPU: {next(iter(gpu.values()))['gpu']}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
