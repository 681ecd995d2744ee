"""Wall time of a full 30-epoch ResNet run on RAVDESS (early stopping off), through the real entry point.

    python benchmarks/full_run.py --data-dir ../shared/data
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as run_dir:
        command = [sys.executable, "-m", "emotion_lightning.train", f"paths.data_dir={os.path.abspath(args.data_dir)}",
                   f"trainer.max_epochs={args.epochs}", "~callbacks.early_stopping", "logger=none",
                   f"hydra.run.dir={run_dir}"]
        start = time.perf_counter()
        subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        metrics = json.loads((Path(run_dir) / "metrics.json").read_text())
    print(f"full run: {metrics['epochs_run']} epochs, fit {metrics['train_seconds']:.0f} s, wall {wall:.0f} s "
          f"(target < 300 s); test UA {metrics['test_ua']:.3f}")


if __name__ == "__main__":
    main()
