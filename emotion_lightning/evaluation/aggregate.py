"""Aggregate metrics.json files over seeds and folds: mean, sd and a 95% bootstrap CI per configuration.

A configuration is every setting of the resolved config that can change a result (metrics.json's `settings`,
see evaluation/identity.py): runs are pooled only over seed and fold, and evaluations of a checkpoint never pool
with training runs. Configurations that share model, augmentation, data, split and condition are told apart by
the settings they differ in (e.g. `trainer.max_epochs=1`). Each row also shows the mean of its runs' best
validation UA: the number a search ranks configurations on (test UA is reported, never tuned on).

`write_aggregate` (`python -m emotion_lightning.aggregate FOLDER`) writes aggregate.json and aggregate.md;
also cross_corpus.md when runs train and test on different corpora, robustness.md when runs test under several conditions, and
ua_vs_snr.png when they sweep the SNR of a noise condition.
"""

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from emotion_lightning.data.atomic import write_text
from emotion_lightning.data.errors import MissingFileError
from emotion_lightning.evaluation.calibration import ece_floor, expected_calibration_error, logits_of, probabilities
from emotion_lightning.evaluation.identity import ADDED_LATER, MEMBER, POOLED, comparable, identity
from emotion_lightning.evaluation.plots import plot_ua_vs_snr

log = logging.getLogger(__name__)
METRICS = ("test_ua", "test_wa", "test_macro_f1")
# Calibration of the reported probabilities (after temperature scaling; *_before: as trained; test_nll_change: each
# run's NLL after minus before, paired): absent from runs of models that give no probabilities and from runs
# written before it was measured, so pooled over the runs that have it.
CALIBRATION_METRICS = ("test_ece", "test_ece_before", "test_ece_floor", "test_nll", "test_nll_before",
                       "test_nll_change", "test_brier")
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
    """One row per metrics.json under `folder` (unreadable files are logged and left out), with its settings,
    its configuration's key (`identity`) and label (`configuration`)."""
    rows = []
    for path in sorted(Path(folder).rglob("metrics.json")):
        try:
            metrics = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            log.warning("left out %s: %s", path, error)
            continue
        row = {
            "run_dir": str(path.parent),
            **{key: metrics.get(key, DEFAULTS.get(key))
               for key in GROUP_BY + list(METRICS + CALIBRATION_METRICS)
               + ["seed", "params", "train_seconds", "snr_db", "best_val_ua"]},
            "kind": "eval" if "ckpt_path" in metrics else "train",
            "temperature": (metrics.get("calibration") or {}).get("temperature"),
            "seen_test_clips": metrics.get("seen_test_clips") or 0,
            "train_corpora": "+".join(metrics.get("train_corpora", [])),
            "test_corpora": "+".join(metrics.get("test_corpora", [])),
        }
        # Runs written before metrics.json carried settings are told apart only by their visible columns.
        settings = (comparable(metrics.get("settings") or {})
                    or {key: row[key] for key in GROUP_BY + ["kind", "seen_test_clips"]})
        # without a fitted temperature the scores as trained are the ones reported
        before = (metrics.get("calibration") or {}).get("before") or {}
        row["test_ece_before"] = before.get("ece", metrics.get("test_ece"))
        row["test_nll_before"] = before.get("nll", metrics.get("test_nll"))
        if row["test_nll"] is not None and row["test_nll_before"] is not None:
            row["test_nll_change"] = row["test_nll"] - row["test_nll_before"]
        row |= {"settings": settings, "identity": identity(settings), "fold": settings.get("split.fold")}
        rows.append(row)
    if not rows:
        raise MissingFileError(f"no metrics.json under {folder}")
    runs = pd.DataFrame(rows)
    runs["configuration"] = configuration_labels(runs)
    return runs


def label_settings(label: str) -> str:
    """The `settings` part of a configuration label, `model / ... [settings]` (a list's own "]" stays)."""
    return label.partition(" [")[2].removesuffix("]")


def _setting_text(name: str, value) -> str:
    """`name=value` for a label: a `_target_` reads as its class (`callbacks.ema=ExponentialMovingAverage`), an
    ensemble's members (`model:digest`) as their models (`model.checkpoints=[3 x simple_cnn]`), another long list
    as its length (`[12 items]`), anything else cut to 40 characters."""
    if name.endswith("._target_"):
        name = name.removesuffix("._target_")
        value = value.rsplit(".", 1)[-1] if isinstance(value, str) else value
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    is_list = isinstance(value, list)
    members = [MEMBER.fullmatch(item) if isinstance(item, str) else None for item in value] if is_list else []
    if members and all(members):
        text = "[" + ", ".join(f"{count} x {model}" for model, count in Counter(m[1] for m in members).items()) + "]"
    elif len(text) > 40 and is_list:
        text = f"[{len(value)} items]"
    return f"{name}={text if len(text) <= 40 else text[:37] + '...'}"


def distinguishing(base: pd.Series, keys: pd.Series, settings: pd.Series, skip=lambda key: False) -> pd.Series:
    """Per row, the settings (`key=value, ...`) in which its configuration (`keys`) differs from the other
    configurations with the same `base` label; empty where the base label alone tells them apart."""
    first = dict(zip(keys, settings))  # settings are the same within a configuration, up to pooled ones
    variants = {}
    for label in base.unique():
        group_keys = list(dict.fromkeys(keys[base == label]))
        if len(group_keys) < 2:
            variants |= {key: "" for key in group_keys}
            continue
        names = sorted({name for key in group_keys for name in first[key]})

        def value(key, name):  # a missing setting added later holds its neutral value: show that, not null
            return first[key].get(name, ADDED_LATER.get(name))

        differing = [name for name in names if name not in POOLED and not skip(name)
                     and len({json.dumps(value(key, name), default=str) for key in group_keys}) > 1]
        # Where the class of an object differs (`model.scheduler=warmup_cosine` against `=ReduceLROnPlateau`), its
        # other keys differ because of it: the class alone says so.
        replaced = [name.removesuffix("_target_") for name in differing if name.endswith("._target_")]
        differing = [name for name in differing
                     if name.endswith("._target_") or not any(name.startswith(prefix) for prefix in replaced)]
        texts = {key: ", ".join(_setting_text(name, value(key, name)) for name in differing) for key in group_keys}
        # Values are shortened for display, so two configurations can read alike (e.g. two ensembles whose member
        # lists start the same): a digest of the configuration keeps their labels, and so their rows, apart.
        clashes = Counter(texts.values())
        variants |= {key: f"{text} #{hashlib.sha1(key.encode()).hexdigest()[:6]}" if clashes[text] > 1 else text
                     for key, text in texts.items()}
    return keys.map(variants)


def configuration_labels(runs: pd.DataFrame) -> pd.Series:
    """`model / augment / data / split / condition`, `(eval)` for evaluations of checkpoints, and the settings
    that tell apart configurations which share those."""
    base = runs[GROUP_BY].astype(str).agg(" / ".join, axis=1) + runs["kind"].map({"eval": " (eval)", "train": ""})
    variant = distinguishing(base, runs["identity"], runs["settings"])
    return base + variant.map(lambda text: f" [{text}]" if text else "")


def aggregate(runs: pd.DataFrame) -> list[dict]:
    """Per configuration (runs pooled over seed and fold only): number of runs, and mean, sd, CI of each metric
    (sd and CI only for more than one run)."""
    summary = []
    for _, group in runs.groupby("configuration", sort=True, dropna=False):
        params = group["params"].iloc[0]
        seconds = group["train_seconds"].dropna().astype(float)  # evaluations of a checkpoint do not train
        val_ua = group["best_val_ua"].dropna().astype(float)  # what a search ranks configurations on, never test
        label = group["configuration"].iloc[0]
        entry = {**{key: group[key].iloc[0] for key in GROUP_BY}, "kind": group["kind"].iloc[0],
                 "settings": label_settings(label),
                 "configuration": label, "runs": len(group), "seen_test_clips": int(group["seen_test_clips"].sum()),
                 "params": None if pd.isna(params) else int(params),
                 "train_seconds": float(seconds.mean()) if len(seconds) else None,
                 "val_ua": float(val_ua.mean()) if len(val_ua) else None}
        for metric in METRICS:
            entry[metric] = statistics(group[metric].astype(float).to_numpy())
        for metric in CALIBRATION_METRICS:
            values = group[metric].dropna().astype(float).to_numpy()
            entry[metric] = statistics(values) if len(values) else None
        entry["pooled_calibration"] = pooled_calibration(group)
        summary.append(entry)
    return summary


def pooled_calibration(runs: pd.DataFrame) -> dict | None:
    """ECE over all the test clips of `runs` at once (their predictions.csv files), before and after each run's
    temperature, with the ECE a perfectly calibrated model would show on as many clips (`floor`). A fold has few
    clips, so its own ECE sits high above zero even for perfect probabilities; pooled, the floor drops. None
    unless every run left probabilities."""
    probs, true, raw = [], [], []
    for run_dir, temperature in zip(runs["run_dir"], runs["temperature"]):
        path = Path(run_dir) / "predictions.csv"
        if not path.is_file():
            return None
        table = pd.read_csv(path)
        columns = [column for column in table.columns if column.startswith("p_")]
        if not columns or table[columns].isna().any().any():
            return None
        given = table[columns].to_numpy(dtype=float)
        index = {column[2:]: number for number, column in enumerate(columns)}
        probs.append(given)
        true.append(table["true"].map(index).to_numpy())
        scale = None if temperature is None or pd.isna(temperature) else float(temperature)
        raw.append(probabilities(logits_of(given, scale)))
    probs, true, raw = np.concatenate(probs), np.concatenate(true), np.concatenate(raw)
    if not len(true) or pd.isna(true).any():
        return None
    return {"clips": len(true), "ece_before": expected_calibration_error(raw, true),
            "ece": expected_calibration_error(probs, true), "floor": ece_floor(probs)}


def statistics(values: np.ndarray) -> dict:
    """Mean, and sd and 95% bootstrap CI when there is more than one value."""
    several = len(values) > 1
    return {"mean": float(values.mean()), "sd": float(values.std(ddof=1)) if several else None,
            "ci95": list(bootstrap_ci(values)) if several else None, "values": values.tolist()}


def format_stat(stats: dict, interval: bool = True) -> str:
    """`mean ± sd [low, high]`; a single run's number alone (it has no spread)."""
    if stats["sd"] is None:
        return f"{stats['mean']:.3f}"
    text = f"{stats['mean']:.3f} ± {stats['sd']:.3f}"
    return text + (f" [{stats['ci95'][0]:.3f}, {stats['ci95'][1]:.3f}]" if interval else "")


LEADERBOARD_COLUMNS = ["model", "augment", "data", "split", "condition", "settings", "params", "runs",
                       "val UA mean", "UA mean ± sd [95% CI]", "WA mean ± sd", "macro-F1 mean ± sd", "ECE mean ± sd",
                       "train time"]


def leaderboard(summary: list[dict]) -> pd.DataFrame:
    """The results table as text cells: what report.md and report.html both show."""
    rows = []
    for entry in summary:
        ua, wa, f1 = (entry[m] for m in METRICS)
        settings = "; ".join(part for part in ("eval of checkpoints" if entry["kind"] == "eval" else "",
                                               entry["settings"]) if part)
        rows.append(dict(zip(LEADERBOARD_COLUMNS, [
            entry["model"], entry["augment"], entry["data"], entry["split"], entry["condition"], settings,
            f"{entry['params']:,}" if entry["params"] is not None else "", str(entry["runs"]),
            f"{entry['val_ua']:.3f}" if entry["val_ua"] is not None else "", format_stat(ua),
            format_stat(wa, interval=False), format_stat(f1, interval=False),
            format_stat(entry["test_ece"], interval=False) if entry.get("test_ece") else "",
            f"{entry['train_seconds']:.0f} s" if entry["train_seconds"] is not None else ""])))
    return pd.DataFrame(rows, columns=LEADERBOARD_COLUMNS)


def markdown_table(summary: list[dict]) -> str:
    return markdown_frame(leaderboard(summary))


def cross_corpus_matrix(runs: pd.DataFrame) -> pd.DataFrame | None:
    """Mean test UA of runs that test on other corpora than they trained on (an eval: its checkpoint's corpora),
    one row per configuration and train corpora, test corpora as columns: a cell pools only runs alike but for
    their data and split settings (and seed and fold), never two models or conditions."""
    crossing = runs[(runs["train_corpora"] != "") & (runs["train_corpora"] != runs["test_corpora"])]
    if crossing.empty:
        return None
    rows = rows_without(crossing, is_protocol) + ": " + crossing["train_corpora"]
    return crossing.assign(row=rows).pivot_table(index="row", columns="test_corpora", values="test_ua",
                                                 aggfunc="mean").rename_axis(index="train_corpora")


def model_labels(runs: pd.DataFrame) -> pd.Series:
    """The model name, with its training augmentation when it had one ("resnet + full")."""
    return runs["model"].where(runs["augment"] == "none", runs["model"] + " + " + runs["augment"])


def is_condition(key: str) -> bool:
    return key.startswith("robustness.") or key == "condition"


def is_protocol(key: str) -> bool:
    return key.split(".")[0] in ("data", "split") or key.startswith(("trained.data", "trained.split"))


def rows_without(runs: pd.DataFrame, spread: Callable[[str], bool]) -> pd.Series:
    """Each run's row in a table whose columns spread the settings `spread` names (is_condition: the robustness
    table; is_protocol: the cross-corpus one): its configuration without them. Model and augmentation; the
    condition, or data and split, and `(eval)` where the runs have several (those not spread); any other setting
    that tells rows apart."""
    keys = runs["settings"].map(lambda settings: identity({k: v for k, v in settings.items() if not spread(k)}))
    base = model_labels(runs)
    if spread is not is_protocol and runs[["data", "split"]].drop_duplicates().shape[0] > 1:
        base = base + " / " + runs["data"].astype(str) + " / " + runs["split"].astype(str)
    if spread is not is_condition and runs["condition"].nunique() > 1:
        base = base + " / " + runs["condition"].astype(str)
    if runs["kind"].nunique() > 1:
        base = base + runs["kind"].map({"eval": " (eval)", "train": ""})
    variant = distinguishing(base, keys, runs["settings"], skip=spread)
    return base + variant.map(lambda text: f" [{text}]" if text else "")


def robustness_matrix(runs: pd.DataFrame) -> pd.DataFrame | None:
    """Mean test UA per configuration (without its condition) under each condition, clean first: the earlier
    project's robustness table. None unless the runs cover more than one condition."""
    if runs["condition"].nunique() < 2:
        return None
    matrix = runs.assign(model=rows_without(runs, is_condition)).pivot_table(index="model", columns="condition",
                                                                            values="test_ua", aggfunc="mean")
    ordered = sorted(matrix.columns, key=lambda condition: (condition != "clean", condition))
    return matrix[ordered]


def markdown_frame(table: pd.DataFrame, index: bool = False) -> str:
    """A DataFrame as a Markdown table; floats to 3 decimals, missing values blank."""
    if index:
        table = table.reset_index()

    def cell(value) -> str:
        if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
            return ""
        # a multi-line error message would end the table's row half-way
        return f"{value:.3f}" if isinstance(value, float) else " ".join(str(value).split("\n")).replace("|", "\\|")

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
        # One line per configuration (as robustness.md's rows: runs alike but for the condition) and noise kind:
        # the condition label without its SNR ("noise_white").
        rows = rows_without(runs, is_condition)
        kinds = noisy["condition"].str.replace(r"_?-?[\d.]+dB", "", regex=True)
        clean = runs["test_ua"][runs["condition"] == "clean"].groupby(rows).mean()
        plot_ua_vs_snr(rows[noisy.index] + ", " + kinds, noisy["snr_db"].astype(float),
                       noisy["test_ua"].astype(float), clean.to_dict(), out / "ua_vs_snr.png")
    return "\n\n".join(printed)
