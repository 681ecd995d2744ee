"""Test-set results: overall metrics plus breakdowns per corpus, speaker, gender and intensity."""

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from emotion_lightning.data.atomic import write_text
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


def test_report(model, datamodule) -> dict:
    """Flat test metrics of a model that has just run `trainer.test` on `datamodule`."""
    results = model.test_results
    rows = datamodule.rows("test")
    true = datamodule.datasets["test"].labels
    report = {
        "test_ua": results["ua"], "test_wa": results["wa"], "test_macro_f1": results["macro_f1"],
        "classes": model.classes, "confusion_matrix": results["confusion_matrix"], "per_class": results["per_class"],
        "clips": {part: len(datamodule.rows(part)) for part in datamodule.datasets},
        "train_corpora": sorted(set(datamodule.rows("train")["corpus"])),
        "test_corpora": sorted(set(rows["corpus"])),
        "test_speakers": sorted(set(rows["speaker"])),
    }
    if len(results["predicted"]) == len(true):  # not so under multi-process testing (samplers pad and shard)
        report["breakdowns"] = breakdowns(rows, true, results["predicted"], model.classes)
    return report


def save_report(run_dir: Path, report: dict) -> None:
    """metrics.json and confusion_matrix.png in the run dir (each written whole or not at all)."""
    write_text(run_dir / "metrics.json", json.dumps(report, indent=2))
    title = f"{report.get('model', 'model')} on {report.get('data', '?')} ({report.get('split', '?')}), " \
            f"UA {report['test_ua']:.3f}"
    plot_confusion_matrix(report["confusion_matrix"], report["classes"], run_dir / "confusion_matrix.png", title)
    log.info("test UA %.4f, WA %.4f, macro-F1 %.4f -> %s", report["test_ua"], report["test_wa"],
             report["test_macro_f1"], run_dir / "metrics.json")
