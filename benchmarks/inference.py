"""Real-time inference speed per model: PyTorch against ONNX Runtime, side by side (`make bench-inference`).

For each model it measures, through the predictor's own backends (log-mel front-end included, 3 s clip
at 16 kHz in, class probabilities out):
- single-clip latency, p50 and p95 ms, and batch throughput, clips/s at batch 32, both on one CPU
  thread by default (torch.set_num_threads(1); onnxruntime intra_op_num_threads=1; --threads N for more:
  on a machine shared with other jobs, more threads than idle cores make both runtimes much slower);
- peak resident memory (RSS, MB) of a fresh process per (model, backend) that loads it and runs a clip
  and a batch; the ONNX Runtime one never imports torch;
- on a GPU (--device cuda) the PyTorch latency and throughput again, and peak GPU memory.
PyTorch and ONNX Runtime are timed in one process, alternating in short rounds, so that both see the same
background load (this project's machines are shared): compare the ratios.
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
    from emotion_lightning.models.module import EmotionClassifier

    if checkpoint:
        return EmotionClassifier.from_checkpoint(checkpoint)
    torch.manual_seed(0)
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"model={name}"])
    model = instantiate(cfg.model).eval()
    model.run_config = {"audio": OmegaConf.to_container(cfg.audio), "model": {"name": name}}
    return model


def clips(batch: int) -> np.ndarray:
    return (0.1 * np.random.default_rng(batch).standard_normal((batch, 48000))).astype(np.float32)


def interleaved_times(backends: dict, batch: int, rounds: int, seconds: float, sync) -> dict[str, np.ndarray]:
    """Wall times (s) of each backend on `batch` clips, alternating backends in short rounds so that both
    see the same background load on a shared machine (the ratio is what this machine can measure)."""
    inputs = clips(batch)
    times = {name: [] for name in backends}
    for name, backend in backends.items():  # warm-up
        for _ in range(3):
            backend(inputs)
    for _ in range(rounds):
        for name, backend in backends.items():
            started = time.perf_counter()
            while time.perf_counter() - started < seconds / rounds / len(backends) or not times[name]:
                start = time.perf_counter()
                backend(inputs)
                sync()
                times[name].append(time.perf_counter() - start)
    return {name: np.array(values) for name, values in times.items()}


def speed_worker(args) -> dict:
    """Latency (batch 1) and throughput (batch 32) of PyTorch and, on CPU, ONNX Runtime, interleaved."""
    import torch

    from emotion_lightning.inference.predictor import OnnxBackend, TorchBackend

    torch.set_num_threads(args.threads)
    model = build_model(args.model, args.checkpoint)
    backends = {"torch": TorchBackend(model, args.device)}
    if args.device == "cpu":
        backends["onnx"] = OnnxBackend(args.onnx, threads=args.threads)
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    latency = interleaved_times(backends, 1, rounds=10, seconds=args.seconds, sync=sync)
    throughput = interleaved_times(backends, BATCH, rounds=5, seconds=args.seconds, sync=sync)
    result = {"params": model.num_parameters}
    for name in backends:
        result[name] = {"p50_ms": float(np.percentile(latency[name], 50) * 1000),
                        "p95_ms": float(np.percentile(latency[name], 95) * 1000), "runs": len(latency[name]),
                        "clips_per_s": BATCH / float(np.median(throughput[name]))}
    if args.device == "cuda":
        result["torch"]["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
        result["torch"]["gpu"] = torch.cuda.get_device_name()
    return result


def memory_worker(args) -> dict:
    """Peak RSS of a fresh process that loads one backend and runs a clip and a batch of 32; the ONNX
    Runtime one imports neither torch nor torchaudio."""
    if args.worker == "memory-onnx":
        from emotion_lightning.inference.predictor import OnnxBackend

        backend = OnnxBackend(args.onnx, threads=args.threads)
    else:
        import torch

        from emotion_lightning.inference.predictor import TorchBackend

        torch.set_num_threads(args.threads)
        backend = TorchBackend(build_model(args.model, args.checkpoint))
    backend(clips(1))
    backend(clips(BATCH))
    return {"peak_rss_mb": peak_rss_mb(), "torch_imported": "torch" in sys.modules}


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
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="cuda adds a PyTorch GPU table")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of both runtimes (default 1)")
    parser.add_argument("--seconds", type=float, default=8.0, help="measuring time per model and batch size")
    parser.add_argument("--output", help="also write the measurements as JSON here")
    parser.add_argument("--worker", choices=["speed", "memory-torch", "memory-onnx"], help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--onnx", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.checkpoint = args.checkpoint[0] if args.checkpoint else None
        print(json.dumps(speed_worker(args) if args.worker == "speed" else memory_worker(args)))
        return

    from emotion_lightning.inference.export import export_onnx

    checkpoints = dict(item.split("=", 1) for item in args.checkpoint)
    rows = {}
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models.split(","):
            onnx_path = Path(folder) / f"{name}.onnx"
            export_onnx(build_model(name, checkpoints.get(name)), onnx_path)
            common = ["--model", name, "--onnx", str(onnx_path), "--threads", str(args.threads),
                      "--seconds", str(args.seconds)]
            if name in checkpoints:
                common += ["--checkpoint", checkpoints[name]]
            rows[name] = run_worker("--worker", "speed", *common)
            rows[name]["torch"]["peak_rss_mb"] = run_worker("--worker", "memory-torch", *common)["peak_rss_mb"]
            onnx_memory = run_worker("--worker", "memory-onnx", *common)
            assert not onnx_memory["torch_imported"], "the ONNX Runtime path imported torch"
            rows[name]["onnx"]["peak_rss_mb"] = onnx_memory["peak_rss_mb"]
            if args.device == "cuda":
                rows[name]["torch_cuda"] = run_worker("--worker", "speed", *common, "--device", "cuda")["torch"]
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
            f"| {name} | {row['params']:,} "
            f"| {pt['p50_ms']:.2f} / {ort['p50_ms']:.2f} ({ort['p50_ms'] / pt['p50_ms']:.2f}x) "
            f"| {pt['p95_ms']:.2f} / {ort['p95_ms']:.2f} "
            f"| {pt['clips_per_s']:.0f} / {ort['clips_per_s']:.0f} ({ort['clips_per_s'] / pt['clips_per_s']:.2f}x) "
            f"| {pt['peak_rss_mb']:.0f} / {ort['peak_rss_mb']:.0f} |")
    gpu = {name: row["torch_cuda"] for name, row in rows.items() if "torch_cuda" in row}
    if gpu:
        lines += ["", "| model (PyTorch, GPU) | p50 ms | p95 ms | clips/s at batch 32 | peak GPU MB |",
                  "|---|---|---|---|---|"]
        lines += [f"| {n} | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} | {r['clips_per_s']:.0f} | {r['gpu_peak_mb']:.0f} |"
                  for n, r in gpu.items()]
        lines.append(f"\nGPU: {next(iter(gpu.values()))['gpu']}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
