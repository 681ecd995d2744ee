"""Whisper on 3 s clips: positional embeddings truncated to the clip against padding to the 30 s window.

Forward time per clip for both, measured side by side in this process (alternating, best of 5 rounds).

    python benchmarks/whisper_window.py --checkpoint ../shared/models/whisper-tiny.en
"""

import argparse
import time
from pathlib import Path

import torch

from emotion_lightning.models.pretrained import PretrainedEncoderClassifier

REPO = Path(__file__).resolve().parents[1]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=str(REPO.parent / "shared" / "models" / "whisper-tiny.en"))
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    networks = {padding: PretrainedEncoderClassifier(checkpoint=args.checkpoint, whisper_pad_to_30s=padding).eval()
                for padding in (False, True)}
    waveform = torch.randn(args.batch_size, 48000)
    best = {padding: float("inf") for padding in networks}
    with torch.no_grad():
        for _ in range(5):
            for padding, network in networks.items():
                start = time.perf_counter()
                network(waveform)
                best[padding] = min(best[padding], (time.perf_counter() - start) / args.batch_size)
    print(f"whisper encoder forward per 3 s clip ({torch.get_num_threads()} threads, batch {args.batch_size}): "
          f"truncated positions {best[False] * 1e3:.1f} ms, padded to 30 s {best[True] * 1e3:.1f} ms, "
          f"ratio {best[True] / best[False]:.1f}x")


if __name__ == "__main__":
    main()
