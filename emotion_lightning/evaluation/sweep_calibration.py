"""One temperature for a whole sweep, fitted on the validation clips of all its runs at once.

A run fits its own temperature on its validation clips: on RAVDESS's speaker folds, 4 actors. Their accuracy
differs from the test actors' by chance, and is inflated by checkpoint selection (the same clips chose the best
epoch), while a network's confidence hardly moves from fold to fold; one fold's temperature chases that gap and can
leave the test probabilities worse calibrated than they were. Pooling the validation clips of every fold (all 24
actors) averages the gap away. Test clips are never looked at.

A run's logits are recovered from the probabilities it reports: those are softmax(logits / T), so T x log p gives
the logits back up to a constant per clip, which no softmax sees.
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd

from emotion_lightning.data.atomic import write_text
from emotion_lightning.data.errors import SettingError
from emotion_lightning.evaluation.aggregate import read_runs
from emotion_lightning.evaluation.calibration import (bin_table, calibration_scores, fit_temperature, logits_of,
                                                     probabilities)
from emotion_lightning.evaluation.test_results import PREDICTIONS_FILE, PROBABILITY_FORMAT, plot_run_reliability
from emotion_lightning.evaluation.unfinished import read_unfinished

# A run's validation clips as scored by its tested checkpoint (file, speaker, true and one logit per class), and its
# test clips' logits as training reported them: what every later temperature is applied to, so a calibration
# killed half-way and run again starts from the same numbers.
VAL_LOGITS_FILE = "val_logits.csv"
TEST_LOGITS_FILE = "test_logits.csv"


def finished_runs(sweep: str | Path) -> list[Path]:
    """The trained runs under `sweep` (run dirs with metrics.json and a tested checkpoint), which must be one
    configuration (seeds and folds pooled); refuses a sweep with jobs that have not finished, whose validation clips
    would be missing from the fit. Evaluations of checkpoints inside it are left alone."""
    sweep = Path(sweep)
    unfinished = read_unfinished(sweep)
    if not unfinished.empty:
        raise SettingError(f"{sweep}: {len(unfinished)} job(s) without results ({unfinished['run_dir'].iloc[0]}: "
                           f"{unfinished['status'].iloc[0]}); run the sweep to its end first, then calibrate it")
    runs = read_runs(sweep)
    runs = runs[runs["kind"] == "train"]
    if runs["configuration"].nunique() > 1:
        raise SettingError(f"{sweep} holds {runs['configuration'].nunique()} configurations "
                           f"({'; '.join(sorted(runs['configuration'].unique()))}); one temperature is for the runs "
                           "of one configuration: calibrate each sweep folder on its own")
    for run_dir in map(Path, runs["run_dir"]):
        metrics = run_metrics(run_dir)
        # a trained run is scored again by its tested checkpoint; an ensemble has none and kept its validation logits
        ensemble = metrics.get("tested_weights") is None and (run_dir / VAL_LOGITS_FILE).is_file()
        if not (metrics.get("tested_checkpoint") or ensemble) or not (run_dir / PREDICTIONS_FILE).is_file():
            raise SettingError(f"{run_dir}: no {PREDICTIONS_FILE}, or no tested checkpoint (or, for an ensemble, no "
                               f"{VAL_LOGITS_FILE}): a run written before they were kept; delete its metrics.json and "
                               "run the sweep again (finished runs are skipped), or move it out of the sweep folder")
    if len(runs) < 2:
        raise SettingError(f"{sweep}: {len(runs)} trained run(s) found; a sweep temperature pools several runs' "
                           "validation clips (for one run, training has already fitted its own)")
    return [Path(run_dir) for run_dir in runs["run_dir"]]


def logits_from(table: pd.DataFrame, temperature: float | None) -> tuple[np.ndarray, list[str]]:
    """The logits (up to a constant per row) behind a predictions table's `p_CLASS` columns, reported at T."""
    columns = [column for column in table.columns if column.startswith("p_")]
    given = table[columns].to_numpy(dtype=np.float64)
    return logits_of(given, temperature), [column[2:] for column in columns]


def write_logits(path: Path, predictions: pd.DataFrame, temperature: float | None) -> None:
    """A logits file (VAL_LOGITS_FILE, TEST_LOGITS_FILE) from a predictions table reported at `temperature`."""
    logits, classes = logits_from(predictions, temperature)
    write_logits_table(path, predictions[["file", "speaker", "true"]].copy(), logits, classes)


def write_logits_table(path: Path, clips: pd.DataFrame, logits: np.ndarray, classes: list[str]) -> None:
    for index, name in enumerate(classes):
        clips[f"logit_{name}"] = logits[:, index]
    write_text(path, clips.to_csv(index=False, float_format="%.8g"))


def discard_logits(run_dir: Path) -> None:
    """A run trained (again) in `run_dir` makes logits files left there by `calibrate` stale: they go first."""
    for name in (VAL_LOGITS_FILE, TEST_LOGITS_FILE):
        (run_dir / name).unlink(missing_ok=True)


def save_val_logits(run_dir: Path, model, datamodule) -> None:
    """RUN/val_logits.csv from the validation pass that fitted a run's own temperature (logits as trained). An
    ensemble has no checkpoint that `calibrate` could score its validation clips with again: it keeps them so."""
    rows = datamodule.rows("val").iloc[model.val_positions]
    log_probabilities, true = model.val_scores
    clips = pd.DataFrame({"file": datamodule.clip_files(rows).to_numpy(), "speaker": rows["speaker"].to_numpy(),
                          "true": [model.classes[index] for index in true]})
    write_logits_table(run_dir / VAL_LOGITS_FILE, clips, log_probabilities, model.classes)


def read_logits(path: Path, classes: list[str], files: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """A logits file's logits and labels in the order of `files`, which must be exactly its clips (else it is left
    from an earlier run in the same folder: delete it, and calibrate scores the run again)."""
    table = pd.read_csv(path)
    if sorted(table["file"]) != sorted(files) or set(table["true"]) - set(classes):
        raise SettingError(f"{path} does not hold this run's clips (left from an earlier training in the same "
                           "folder?); delete it and calibrate again")
    if table["file"].duplicated().any():
        raise SettingError(f"{path} lists {table['file'][table['file'].duplicated()].iloc[0]} twice: clips of two "
                           "corpora with the same relative path cannot be told apart here")
    table = table.set_index("file").loc[files]
    logits = table[[f"logit_{name}" for name in classes]].to_numpy(dtype=np.float64)
    return logits, table["true"].map(classes.index).to_numpy()


def val_files(run_dir: Path) -> list[str]:
    split = pd.read_csv(run_dir / "split.csv")
    return split.loc[split["part"] == "val", "file"].tolist()


def run_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def sweep_temperature(runs: list[Path]) -> tuple[float, int]:
    """The one temperature minimising the NLL of all the runs' validation clips; and how many clips that was."""
    logits, true = zip(*(read_logits(run / VAL_LOGITS_FILE, run_metrics(run)["classes"], val_files(run))
                         for run in runs))
    logits, true = np.concatenate(logits), np.concatenate(true)
    return fit_temperature(logits, true), len(true)


def test_logits(run_dir: Path) -> tuple[np.ndarray, np.ndarray, pd.DataFrame, dict]:
    """The run's test logits as it first reported them (RUN/test_logits.csv, written from predictions.csv the first
    time), their labels, predictions.csv and metrics.json; refuses files that do not belong together."""
    metrics = run_metrics(run_dir)
    predictions = pd.read_csv(run_dir / PREDICTIONS_FILE)
    classes = metrics["classes"]
    if [column[2:] for column in predictions.columns if column.startswith("p_")] != classes:
        raise SettingError(f"{run_dir / PREDICTIONS_FILE}: its probability columns differ from metrics.json's "
                           f"classes {classes}")
    if not (run_dir / TEST_LOGITS_FILE).is_file():
        write_logits(run_dir / TEST_LOGITS_FILE, predictions, (metrics.get("calibration") or {}).get("temperature"))
    logits, true = read_logits(run_dir / TEST_LOGITS_FILE, classes, predictions["file"].tolist())
    if not (np.array(classes)[logits.argmax(axis=1)] == predictions["predicted"].to_numpy()).all():
        raise SettingError(f"{run_dir / TEST_LOGITS_FILE} does not give {PREDICTIONS_FILE}'s labels (left from an "
                           "earlier training in the same folder?); delete it and calibrate again")
    return logits, true, predictions, metrics


def apply_temperature(run_dir: Path, temperature: float, fitted_on: str, reported: tuple | None = None) -> dict:
    """Rescore a run's test probabilities at `temperature`: predictions.csv, metrics.json's calibration fields
    and reliability.png rewritten (each whole or not at all); labels and UA cannot change. The temperature the run
    fitted for itself is kept as `calibration.run_temperature`. `reported`: test_logits(run_dir), when already read.
    Returns metrics.json."""
    logits, true, predictions, metrics = reported or test_logits(run_dir)
    classes = metrics["classes"]
    raw, calibrated = probabilities(logits), probabilities(logits, temperature)
    for index, name in enumerate(classes):
        predictions[f"p_{name}"] = calibrated[:, index]
    after = calibration_scores(calibrated, true)
    own = metrics.get("calibration") or {}
    metrics |= {f"test_{key}": value for key, value in after.items()}
    metrics["calibration"] = {"temperature": temperature, "run_temperature": own.get("run_temperature",
                                                                                     own.get("temperature")),
                              "before": calibration_scores(raw, true), "after": after}
    metrics["temperature_fitted_on"] = fitted_on
    metrics["reliability"] = {"before scaling": bin_table(raw, true), "after scaling": bin_table(calibrated, true)}
    write_text(run_dir / PREDICTIONS_FILE, predictions.to_csv(index=False, float_format=PROBABILITY_FORMAT))
    plot_run_reliability(run_dir, metrics)
    write_text(run_dir / "metrics.json", json.dumps(metrics, indent=2))
    return metrics
