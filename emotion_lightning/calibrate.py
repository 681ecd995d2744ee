"""One temperature for a whole sweep: fitted on the validation clips of all its runs at once (every fold's
validation actors), then stored in each run's tested checkpoint and applied to its test probabilities.

    emotion-lightning calibrate outputs/multiruns/best_scratch

Each run's tested checkpoint first scores its validation clips (`eval part=val`, once: kept as RUN/val_logits.csv;
an ensemble kept them from training, having no checkpoint of its own).
Then predictions.csv, metrics.json (test_ece, calibration, temperature_fitted_on) and reliability.png of every run
are rewritten; labels and UA do not change. predict, export, serve and ensembles read the checkpoint's new
temperature. Running it again gives the same result.
"""

import argparse
import logging
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from emotion_lightning.data.errors import SettingError
from emotion_lightning.evaluation.aggregate import pooled_calibration, read_runs
from emotion_lightning.evaluation.calibration import expected_calibration_error, probabilities
from emotion_lightning.evaluation.sweep_calibration import (VAL_LOGITS_FILE, apply_temperature, finished_runs,
                                                            run_metrics, sweep_temperature, test_logits, write_logits)
from emotion_lightning.training.checkpoints import store_temperature
from emotion_lightning.training.commands import command

log = logging.getLogger(__name__)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", help="a multirun folder whose trained runs share one temperature (e.g. a k-fold sweep)")
    return parser


def score_validation(run_dir: Path) -> None:
    """RUN/val_logits.csv: the run's tested checkpoint on its validation clips, through `eval part=val` in a
    temporary folder (its results must not join the sweep's)."""
    checkpoint = run_dir / run_metrics(run_dir)["tested_checkpoint"]
    with tempfile.TemporaryDirectory() as scratch:
        result = subprocess.run([sys.executable, "-m", "emotion_lightning.eval", f"ckpt={checkpoint}", "part=val",
                                 f"hydra.run.dir={scratch}"], capture_output=True, text=True)
        if result.returncode:
            raise SettingError(f"{run_dir}: scoring its validation clips with {checkpoint} failed:\n"
                               + (result.stderr.strip() or result.stdout.strip())[-2000:])
        scored = Path(scratch)
        temperature = (run_metrics(scored).get("calibration") or {}).get("temperature")
        write_logits(run_dir / VAL_LOGITS_FILE, pd.read_csv(scored / "predictions.csv"), temperature)


def calibrate_sweep(sweep: str | Path) -> str:
    runs = finished_runs(sweep)
    # every run checked (and its test logits kept) before any checkpoint changes
    reported = {run: test_logits(run) for run in runs}
    to_score = [run for run in runs if not (run / VAL_LOGITS_FILE).is_file()]
    for run in tqdm(to_score, desc="scoring validation clips", unit="run", disable=not to_score):
        score_validation(run)
    temperature, clips = sweep_temperature(runs)
    fitted_on = f"val of the sweep's {len(runs)} runs ({clips} clips)"
    lines = [f"temperature {temperature:.3f} fitted on the validation clips of {len(runs)} runs ({clips} clips)",
             "run: its own temperature -> the sweep's; test ECE as trained, with its own, with the sweep's"]
    for run in runs:
        logits, true, _, metrics = reported[run]
        if tested := metrics.get("tested_checkpoint"):  # an ensemble has none: its files are all it has
            store_temperature(run / tested, temperature)
        after = apply_temperature(run, temperature, fitted_on, reported[run])
        own = after["calibration"]["run_temperature"] or 1.0
        own_ece = expected_calibration_error(probabilities(logits, own), true)
        lines.append(f"  {run.name}: {own:.3f} -> {temperature:.3f}; ECE {after['calibration']['before']['ece']:.3f}, "
                     f"{own_ece:.3f}, {after['test_ece']:.3f}")
    pooled = pooled_calibration(read_runs(sweep).query("run_dir in @names", local_dict={"names": list(map(str, runs))}))
    if pooled:
        lines.append(f"all {pooled['clips']} test clips: ECE {pooled['ece_before']:.3f} as trained, {pooled['ece']:.3f} "
                     f"with the sweep's temperature (floor of the scaled probabilities {pooled['floor']:.3f})")
    return "\n".join(lines)


def main(argv=None) -> None:
    args = parser().parse_args(argv)
    with command():
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        print(calibrate_sweep(args.sweep))


if __name__ == "__main__":
    main()
