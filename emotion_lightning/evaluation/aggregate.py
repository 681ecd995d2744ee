"""Aggregate metrics.json files over seeds and folds: mean, sd and a 95% bootstrap CI per configuration.

`write_aggregate` (`python -m emotion_lightning.aggregate FOLDER`) writes aggregate.json and aggregate.md;
also cross_corpus.md when runs train and test on different corpora, robustness.md when runs test under several conditions, and
ua_vs_snr.png when they sweep the SNR of a noise condition.
"""

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from emotion_lightning.data.atomic import write_text
from emotion_lightning.data.errors import MissingFileError
from emotion_lightning.evaluation.plots import plot_ua_vs_snr

log = logging.getLogger(__name__)
METRICS = ("test_ua", "test_wa", "test_macro_f1")
GROUP_BY = ["model", "augment", "data", "split", "condition"]
# Runs written before conditions existed were trained without augmentation and tested clean.
DEFAULTS = {"augment": "none", "condition": "clean"}


def bootstrap_ci(values, level: float = 0.95, resamples: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values` (resampling runs with replacement)."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return float(values.mean()), float(values.mean())
    means = np.random.default_rng(seed).choice(values, size=(resamples, len(values))).mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def read_runs(folder: str | Path) -> pd.DataFrame:
    """One row per metrics.json under `folder` (unreadable files are logged and left out)."""
    rows = []
    for path in sorted(Path(folder).rglob("metrics.json")):
        try:
            metrics = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            log.warning("left out %s: %s", path, error)
            continue
        rows.append({
            "run_dir": str(path.parent),
            **{key: metrics.get(key, DEFAULTS.get(key))
               for key in GROUP_BY + list(METRICS) + ["seed", "params", "train_seconds", "snr_db"]},
            "train_corpora": "+".join(metrics.get("train_corpora", [])),
            "test_corpora": "+".join(metrics.get("test_corpora", [])),
        })
    if not rows:
        raise MissingFileError(f"no metrics.json under {folder}")
    return pd.DataFrame(rows)


def aggregate(runs: pd.DataFrame) -> list[dict]:
    """Per (model, data, split): number of runs, and mean, sd, CI of each metric."""
    summary = []
    for key, group in runs.groupby(GROUP_BY, sort=True, dropna=False):
        params = group["params"].iloc[0]
        seconds = group["train_seconds"].dropna().astype(float)  # evaluations of a checkpoint do not train
        entry = {**dict(zip(GROUP_BY, key)), "runs": len(group), "params": None if pd.isna(params) else int(params),
                 "train_seconds": float(seconds.mean()) if len(seconds) else None}
        for metric in METRICS:
            values = group[metric].astype(float).to_numpy()
            low, high = bootstrap_ci(values)
            entry[metric] = {"mean": float(values.mean()), "sd": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                             "ci95": [low, high], "values": values.tolist()}
        summary.append(entry)
    return summary


def markdown_table(summary: list[dict]) -> str:
    lines = ["| model | augment | data | split | condition | params | runs | UA mean ± sd [95% CI] | WA mean ± sd "
             "| macro-F1 mean ± sd | train time |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for entry in summary:
        ua, wa, f1 = (entry[m] for m in METRICS)
        params = f"{entry['params']:,}" if entry["params"] is not None else ""
        seconds = f"{entry['train_seconds']:.0f} s" if entry["train_seconds"] is not None else ""
        lines.append(f"| {entry['model']} | {entry['augment']} | {entry['data']} | {entry['split']} | "
                     f"{entry['condition']} | {params} | {entry['runs']} | "
                     f"{ua['mean']:.3f} ± {ua['sd']:.3f} [{ua['ci95'][0]:.3f}, {ua['ci95'][1]:.3f}] | "
                     f"{wa['mean']:.3f} ± {wa['sd']:.3f} | {f1['mean']:.3f} ± {f1['sd']:.3f} | "
                     f"{seconds} |")
    return "\n".join(lines) + "\n"


def cross_corpus_matrix(runs: pd.DataFrame) -> pd.DataFrame | None:
    """Mean test UA with train corpora as rows and test corpora as columns (runs that test elsewhere)."""
    crossing = runs[(runs["train_corpora"] != "") & (runs["train_corpora"] != runs["test_corpora"])]
    if crossing.empty:
        return None
    return crossing.pivot_table(index="train_corpora", columns="test_corpora", values="test_ua", aggfunc="mean")


def model_labels(runs: pd.DataFrame) -> pd.Series:
    """The model name, with its training augmentation when it had one ("resnet + full")."""
    return runs["model"].where(runs["augment"] == "none", runs["model"] + " + " + runs["augment"])


def robustness_matrix(runs: pd.DataFrame) -> pd.DataFrame | None:
    """Mean test UA per model (and augmentation) under each condition, clean first: the seeds' robustness
    table. None unless the runs cover more than one condition."""
    if runs["condition"].nunique() < 2:
        return None
    matrix = runs.assign(model=model_labels(runs)).pivot_table(index="model", columns="condition", values="test_ua", aggfunc="mean")
    ordered = sorted(matrix.columns, key=lambda condition: (condition != "clean", condition))
    return matrix[ordered]


def markdown_frame(table: pd.DataFrame, index: bool = False) -> str:
    """A DataFrame as a Markdown table; floats to 3 decimals, missing values blank."""
    if index:
        table = table.reset_index()

    def cell(value) -> str:
        if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
            return ""
        return f"{value:.3f}" if isinstance(value, float) else str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(map(str, table.columns)) + " |", "|---" * len(table.columns) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def markdown_matrix(matrix: pd.DataFrame, corner: str) -> str:
    """A pivot table (rows x columns of mean UA) as Markdown, `corner` naming its two axes."""
    return markdown_frame(matrix.rename_axis(index=corner, columns=None), index=True)


def write_aggregate(folder: str | Path, out: str | Path) -> str:
    """aggregate.json/.md (and cross_corpus.md, robustness.md, ua_vs_snr.png where they apply) of the runs
    under `folder`, written into `out`; returns the tables as text."""
    out, printed = Path(out), []
    runs = read_runs(folder)
    summary = aggregate(runs)
    write_text(out / "aggregate.json", json.dumps(summary, indent=2))
    table = markdown_table(summary)
    write_text(out / "aggregate.md", table)
    printed.append(table)
    matrix = cross_corpus_matrix(runs)
    if matrix is not None:
        text = "Mean test UA\n\n" + markdown_matrix(matrix, "train \\ test")
        write_text(out / "cross_corpus.md", text)
        printed.append(text)
    matrix = robustness_matrix(runs)
    if matrix is not None:
        text = "Mean test UA under each condition\n\n" + markdown_matrix(matrix, "model \\ condition")
        write_text(out / "robustness.md", text)
        printed.append(text)
    noisy = runs[runs["snr_db"].notna()]
    if not noisy.empty:
        # One line per model and noise kind: the condition label without its SNR ("noise_white").
        kinds = noisy["condition"].str.replace(r"_?-?[\d.]+dB", "", regex=True)
        clean = runs[runs["condition"] == "clean"].assign(model=model_labels).groupby("model")["test_ua"].mean()
        plot_ua_vs_snr(model_labels(noisy) + ", " + kinds, noisy["snr_db"].astype(float), noisy["test_ua"].astype(float),
                       clean.to_dict(), out / "ua_vs_snr.png")
    return "\n\n".join(printed)
