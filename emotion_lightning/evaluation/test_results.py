"""Test-set results: overall metrics plus breakdowns per corpus, speaker, gender and intensity."""

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from emotion_lightning.data.atomic import write_text
from emotion_lightning.evaluation.calibration import bin_table, calibration_scores, plot_reliability
from emotion_lightning.evaluation.metrics import confusion_matrix, metrics_from_confusion
from emotion_lightning.evaluation.plots import plot_confusion_matrix

log = logging.getLogger(__name__)

BREAKDOWN_COLUMNS = ("corpus", "speaker", "gender", "intensity")


def breakdowns(rows: pd.DataFrame, true: np.ndarray, predicted: np.ndarray, classes: list[str]) -> dict:
    """UA, WA, macro-F1 and clip count for each value of each breakdown column (e.g. per speaker)."""
    result = {}
    for column in BREAKDOWN_COLUMNS:
        values = rows[column].to_numpy()
        result[column] = {}
        for value in sorted(set(values)):
            selected = values == value
            scores = metrics_from_confusion(confusion_matrix(true[selected], predicted[selected], len(classes)), classes)
            result[column][str(value) or "unspecified"] = {
                "ua": scores["ua"], "wa": scores["wa"], "macro_f1": scores["macro_f1"], "clips": int(selected.sum())}
    return result


PREDICTIONS_FILE = "predictions.csv"
# 8 significant digits: small probabilities keep their size, so their logits can be recovered (calibrate does)
PROBABILITY_FORMAT = "%.8g"


def tested_rows(model, datamodule) -> tuple[pd.DataFrame, np.ndarray]:
    """The test clips the model predicted and their true labels, in the order of its predictions: each clip once,
    however many processes tested (`positions` in the test dataset). A test stage cut short (`fast_dev_run`,
    `limit_test_batches`) predicted only some clips."""
    positions = model.test_results["positions"]
    return datamodule.rows("test").iloc[positions], datamodule.datasets["test"].labels[positions]


def predictions_table(model, datamodule) -> pd.DataFrame:
    """One row per tested clip: file (relative to its corpus root), corpus, speaker, true and predicted label,
    and the probability of each class (`p_<class>`; blank for estimators that give none)."""
    rows, true = tested_rows(model, datamodule)
    classes, results = model.classes, model.test_results
    table = pd.DataFrame({"file": datamodule.clip_files(rows).to_numpy(), "corpus": rows["corpus"].to_numpy(),
                          "speaker": rows["speaker"].to_numpy(), "true": [classes[i] for i in true],
                          "predicted": [classes[i] for i in results["predicted"]]})
    probabilities = results.get("probabilities")
    for index, name in enumerate(classes):
        table[f"p_{name}"] = probabilities[:, index] if probabilities is not None else np.nan
    return table


def test_report(model, datamodule) -> dict:
    """Flat test metrics of a model that has just run `trainer.test` on `datamodule`."""
    results = model.test_results
    tested = tested_rows(model, datamodule)
    rows = datamodule.rows("test")
    report = {
        "test_ua": results["ua"], "test_wa": results["wa"], "test_macro_f1": results["macro_f1"],
        "classes": model.classes, "confusion_matrix": results["confusion_matrix"], "per_class": results["per_class"],
        "clips": {part: len(datamodule.rows(part)) for part in datamodule.datasets},
        "train_corpora": sorted(set(datamodule.rows("train")["corpus"])),
        "test_corpora": sorted(set(rows["corpus"])),
        "test_speakers": sorted(set(rows["speaker"])),
    }
    report["tested_clips"] = len(tested[1])
    report["breakdowns"] = breakdowns(*tested, results["predicted"], model.classes)
    report |= calibration_report(results, tested[1])
    reliability = reliability_tables(model, datamodule)
    if reliability:
        report["reliability"] = reliability
    return report


def calibration_report(results: dict, true: np.ndarray) -> dict:
    """ECE, NLL and Brier score of the probabilities the run reports (after temperature scaling where it was
    fitted), and `calibration`: the temperature with the scores before and after it. Nothing for a model that
    gives no probabilities or an empty test stage."""
    probabilities = results.get("probabilities")
    if probabilities is None or not len(true):
        return {}
    calibration = results.get("calibration") or {"temperature": None, "before": None,
                                                 "after": calibration_scores(probabilities, true)}
    return {f"test_{key}": value for key, value in calibration["after"].items()} | {"calibration": calibration}


def reliability_tables(model, datamodule) -> dict[str, list[dict]] | None:
    """Confidence bins of the test probabilities (metrics.json's `reliability`), before and after temperature
    scaling; one table for a model without a temperature."""
    results = model.test_results
    if results.get("reliability"):
        return results["reliability"]
    if results.get("probabilities") is None:
        return None
    return {"as given": bin_table(results["probabilities"], tested_rows(model, datamodule)[1])}


def run_title(report: dict) -> str:
    return f"{report.get('model', 'model')} on {report.get('data', '?')} ({report.get('split', '?')}), " \
           f"UA {report['test_ua']:.3f}"


def plot_run_reliability(run_dir: Path, report: dict) -> None:
    """RUN/reliability.png from metrics.json's `reliability` bins (nothing for a model without probabilities)."""
    if report.get("reliability"):
        temperature = (report.get("calibration") or {}).get("temperature")
        plot_reliability(report["reliability"], run_dir / "reliability.png",
                         run_title(report) + (f", temperature {temperature:.2f}" if temperature else ""))


def save_report(run_dir: Path, report: dict, predictions: pd.DataFrame) -> None:
    """metrics.json, confusion_matrix.png, reliability.png and predictions.csv in the run dir (each written whole
    or not at all). metrics.json goes last: its presence marks a finished run."""
    write_text(run_dir / PREDICTIONS_FILE, predictions.to_csv(index=False, float_format=PROBABILITY_FORMAT))
    plot_confusion_matrix(report["confusion_matrix"], report["classes"], run_dir / "confusion_matrix.png",
                          run_title(report))
    plot_run_reliability(run_dir, report)
    write_text(run_dir / "metrics.json", json.dumps(report, indent=2))
    log.info("test UA %.4f, WA %.4f, macro-F1 %.4f -> %s", report["test_ua"], report["test_wa"],
             report["test_macro_f1"], run_dir / "metrics.json")
