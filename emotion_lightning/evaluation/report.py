"""Report over a run or multirun folder: the results tables as Markdown and CSV, and one HTML page.

    python -m emotion_lightning.report outputs/multiruns/NAME [MORE_FOLDERS...]   [--out DIR]

Gathers every metrics.json under the folders (and every failed or unfinished job, listed as such) and
writes into --out (default FIRST_FOLDER/report): report.md; jobs.csv (one row per job), summary.csv (mean, sd
and 95% CI per configuration, grouped as aggregate groups), comparisons.csv (paired comparisons of configurations
tested on the same clips), speakers.csv (each run's held-out speakers and their UA), per_emotion_f1.csv, and
per_dataset.csv / cross_corpus.csv / robustness.csv when runs test several corpora, cross them or test under
several conditions; figures/*.png (UA per configuration with its interval, learning curves from the runs' CSV
logs, confusion matrices summed over each configuration's runs, per-emotion F1 bars, UA under each condition);
report.html with the tables and the figures embedded, no wider than a 1280 px window.
"""

import base64
import html
import json
import logging
import os
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd

from emotion_lightning.data.errors import MissingFileError
from emotion_lightning.evaluation import aggregate
from emotion_lightning.evaluation.calibration import plot_reliability
from emotion_lightning.data.atomic import write_text
from emotion_lightning.evaluation.unfinished import read_unfinished
from emotion_lightning.evaluation.paired import comparison_table, paired_comparisons
from emotion_lightning.evaluation.plots import (plot_confusion_matrix, plot_grouped_bars, plot_learning_curves,
                                                plot_ua_intervals)

log = logging.getLogger(__name__)
JOB_COLUMNS = ["job", "status", *aggregate.GROUP_BY, "settings", "seed", *aggregate.METRICS, "best_val_ua", "best_epoch",
               "params", "train_seconds", "error"]


def read_results(folders: list[Path]) -> tuple[pd.DataFrame, dict[str, dict]]:
    """Finished runs (aggregate.read_runs, with their configuration labels) and each run's metrics.json."""
    found = []
    for folder in folders:
        try:
            found.append(aggregate.read_runs(folder))
        except FileNotFoundError:
            continue
    if not found:
        return pd.DataFrame(columns=["run_dir", "configuration", *aggregate.GROUP_BY, *aggregate.METRICS]), {}
    runs = pd.concat(found, ignore_index=True)
    # Labels again over all folders: configurations told apart by a setting may come from different folders.
    runs["configuration"] = aggregate.configuration_labels(runs)
    metrics = {run_dir: json.loads((Path(run_dir) / "metrics.json").read_text()) for run_dir in runs["run_dir"]}
    return runs, metrics


def job_table(root: Path, runs: pd.DataFrame, metrics: dict[str, dict], unfinished: pd.DataFrame) -> pd.DataFrame:
    """One row per job: finished ones with their scores, failed or unfinished ones with why."""
    finished = runs  # empty where every job failed or is still running: the table lists those alone
    if not runs.empty:
        settings = runs["configuration"].map(aggregate.label_settings)
        settings = settings.where(runs["kind"] != "eval", ("eval; " + settings).str.rstrip("; "))
        finished = runs.assign(status="ok", error="", settings=settings,
                               best_val_ua=[metrics[d].get("best_val_ua") for d in runs["run_dir"]],
                               best_epoch=[metrics[d].get("best_epoch") for d in runs["run_dir"]])
    others = unfinished.assign(**{key: None for key in JOB_COLUMNS if key not in unfinished})
    others = others.reindex(columns=[*JOB_COLUMNS, "run_dir", "overrides"])
    others["error"] = (others["error"] + " (" + others["overrides"] + ")").where(others["overrides"] != "",
                                                                                   others["error"])
    table = pd.concat([frame for frame in (finished, others) if len(frame)], ignore_index=True)
    table["job"] = [str(Path(d).relative_to(root)) if Path(d) != root else root.name for d in table["run_dir"]]
    for column in ("seed", "best_epoch", "params"):
        table[column] = pd.to_numeric(table[column]).astype("Int64")
    return table.sort_values("job", key=lambda jobs: jobs.map(_job_order)).reindex(columns=JOB_COLUMNS)


def _job_order(job: str) -> tuple:
    """Hydra's sweep subdirs start with the job number: sort sweep/2_... before sweep/10_..."""
    parent, _, name = job.rpartition("/")
    number, _, rest = name.partition("_")
    return (parent, int(number), rest) if number.isdigit() else (parent, float("inf"), name)


def summary_table(summary: list[dict]) -> pd.DataFrame:
    """aggregate.aggregate's entries as flat columns (mean, sd, CI bounds per metric; blank for a single run)."""
    rows = []
    for entry in summary:
        row = {key: entry[key] for key in (*aggregate.GROUP_BY, "kind", "settings", "runs", "params", "train_seconds")}
        for metric in (*aggregate.METRICS, *aggregate.CALIBRATION_METRICS):
            stats = entry.get(metric) or {"mean": None, "sd": None, "ci95": None}
            low, high = stats["ci95"] or (None, None)
            row |= {f"{metric}_mean": stats["mean"], f"{metric}_sd": stats["sd"],
                    f"{metric}_ci_low": low, f"{metric}_ci_high": high}
        pooled = entry.get("pooled_calibration") or {}
        row |= {"pooled_ece_before": pooled.get("ece_before"), "pooled_ece": pooled.get("ece"),
                "pooled_ece_floor": pooled.get("floor")}
        rows.append(row)
    return pd.DataFrame(rows)


def per_emotion_f1(runs: pd.DataFrame, metrics: dict[str, dict]) -> pd.DataFrame:
    """Mean test F1 of each emotion (columns) per configuration (rows), over the runs where the emotion was tested
    or predicted: a class absent from a run's test clips (cross-corpus) has no F1 there, not 0."""
    rows = []
    for label, d in zip(runs["configuration"], runs["run_dir"]):
        confusion = np.asarray(metrics[d]["confusion_matrix"])  # rows true, columns predicted
        seen = confusion.sum(axis=0) + confusion.sum(axis=1) > 0
        rows.append({"configuration": label, **{name: scores["f1"] if seen[i] else np.nan
                                                for i, (name, scores) in enumerate(metrics[d]["per_class"].items())}})
    return pd.DataFrame(rows).groupby("configuration", sort=True).mean()


def per_dataset(runs: pd.DataFrame, metrics: dict[str, dict]) -> pd.DataFrame | None:
    """Mean test WA (the earlier project's "accuracy") and UA per test corpus, for configurations tested on several."""
    rows = []
    for label, d in zip(runs["configuration"], runs["run_dir"]):
        corpora = metrics[d].get("breakdowns", {}).get("corpus", {})
        if len(corpora) > 1:
            rows.append({"configuration": label, **{f"{c} WA": s["wa"] for c, s in corpora.items()},
                         **{f"{c} UA": s["ua"] for c, s in corpora.items()}})
    return pd.DataFrame(rows).groupby("configuration", sort=True).mean() if rows else None


def pooled_reliability(runs: pd.DataFrame, metrics: dict[str, dict]) -> dict[str, dict[str, list[dict]]]:
    """Each configuration's confidence bins pooled over its runs (clips added, confidence and accuracy weighted
    by clips), per kind of probabilities (`before scaling`, `after scaling`, ...); runs without bins left out."""
    pooled: dict[str, dict[str, list[dict]]] = {}
    for label, run_dir in zip(runs["configuration"], runs["run_dir"]):
        for kind, table in (metrics[run_dir].get("reliability") or {}).items():
            sums = pooled.setdefault(label, {}).setdefault(kind, [
                {"low": row["low"], "high": row["high"], "clips": 0, "confidence": 0.0, "accuracy": 0.0}
                for row in table])
            for total, row in zip(sums, table):
                if row["clips"]:
                    total["clips"] += row["clips"]
                    total["confidence"] += row["clips"] * row["confidence"]
                    total["accuracy"] += row["clips"] * row["accuracy"]
    for kinds in pooled.values():
        for table in kinds.values():
            for row in table:
                clips = row["clips"]
                row["confidence"], row["accuracy"] = ((row["confidence"] / clips, row["accuracy"] / clips) if clips
                                                      else (None, None))
    return pooled


def summed_confusions(runs: pd.DataFrame, metrics: dict[str, dict]) -> dict[str, tuple[np.ndarray, list[str]]]:
    """Each configuration's confusion matrix summed over its runs (seeds, folds): every test clip once."""
    confusions = {}
    for label, d in zip(runs["configuration"], runs["run_dir"]):
        matrix, classes = np.asarray(metrics[d]["confusion_matrix"]), metrics[d]["classes"]
        if label in confusions and confusions[label][1] == classes:
            matrix = matrix + confusions[label][0]
        confusions[label] = (matrix, classes)
    return confusions


STYLE = ("body{font-family:sans-serif;margin:1.5em auto;max-width:1200px;padding:0 1em;font-size:14px}"
         "table{border-collapse:collapse;margin:1em 0;max-width:100%;font-size:12px}"
         "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right;overflow-wrap:anywhere}"
         "td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}.wide{overflow-x:auto;max-width:100%}"
         "img{max-width:100%;margin:0.5em 0}img.cm{width:380px;margin:0.3em}.failed{color:#b00}"
         "p.note{color:#555;max-width:60em}")


def html_page(title: str, sections: list[tuple[str, str]]) -> str:
    """One self-contained page, no wider than its 1200 px column: each section is (heading, HTML body)."""
    body = "".join(f"<h2>{html.escape(heading)}</h2>\n{content}\n" for heading, content in sections)
    return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>\n{body}</body></html>\n")


def embedded_image(path: Path, css_class: str = "") -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"<img class='{css_class}' alt='{html.escape(path.stem)}' src='data:image/png;base64,{data}'>"


def html_table(table: pd.DataFrame, index: bool = False) -> str:
    return "<div class='wide'>" + table.to_html(index=index, float_format=lambda v: f"{v:.3f}", na_rep="", border=0) + "</div>"


def note(text: str) -> str:
    return f"<p class='note'>{html.escape(text)}</p>"


def learning_curve(run_dir: str) -> pd.DataFrame | None:
    """Train loss and val UA per epoch from the run's CSV log (logger=csv), if it has one."""
    for path in sorted(Path(run_dir).glob("*/metrics.csv")) + sorted(Path(run_dir).glob("*/*/metrics.csv")):
        log_table = pd.read_csv(path)
        if {"epoch", "train_loss", "val_ua"} <= set(log_table.columns):
            return log_table.groupby("epoch", as_index=False)[["train_loss", "val_ua"]].first()
    return None


def run_name(run: pd.Series, jobs: dict[str, str]) -> str:
    fold = run.get("fold")
    return f"seed {run['seed']}" + (f", fold {int(fold)}" if fold is not None and not pd.isna(fold) else "") + \
        f" ({jobs.get(run['run_dir'], Path(run['run_dir']).name)})"


def held_out_speakers(runs: pd.DataFrame, metrics: dict[str, dict], jobs: dict[str, str]) -> pd.DataFrame:
    """Per run: its configuration, the speakers it was tested on and the UA on each of them."""
    rows = []
    for run in runs.sort_values(["configuration", "seed"]).to_dict("records"):
        record = metrics[run["run_dir"]]
        per_speaker = record.get("breakdowns", {}).get("speaker")
        speakers = (", ".join(f"{speaker} {scores['ua']:.3f}" for speaker, scores in per_speaker.items()) if per_speaker
                    else ", ".join(record.get("test_speakers", [])))
        rows.append({"configuration": run["configuration"], "run": run_name(run, jobs), "test UA": run["test_ua"],
                     "held-out speakers (UA each)": speakers})
    return pd.DataFrame(rows)


def build_report(folders: str | Path | list, out: str | Path) -> dict[str, pd.DataFrame]:
    """Write the report over one or more run/multirun folders into `out`; return its tables by name
    (jobs, summary, comparisons, per_emotion_f1, ...)."""
    folders = [Path(f) for f in (folders if isinstance(folders, (list, tuple)) else [folders])]
    missing = [str(folder) for folder in folders if not folder.is_dir()]
    if missing:  # a typo would otherwise leave its configurations out of a report that names it
        raise MissingFileError(f"no such folder: {', '.join(missing)}; check the path (e.g. outputs/multiruns/NAME)")
    out, title = Path(out), ", ".join(map(str, folders))
    root = folders[0] if len(folders) == 1 else Path(os.path.commonpath([f.resolve() for f in folders]))
    runs, metrics = read_results(folders)
    unfinished = pd.concat([read_unfinished(folder) for folder in folders], ignore_index=True)
    if runs.empty and unfinished.empty:
        raise MissingFileError(f"no metrics.json, failure.json or Hydra run dir under {title}; "
                               "point the report at a run or multirun folder (e.g. outputs/multiruns/NAME)")
    if len(folders) > 1:
        runs["run_dir"] = [str(Path(d).resolve()) for d in runs["run_dir"]]
        unfinished["run_dir"] = [str(Path(d).resolve()) for d in unfinished["run_dir"]]
        metrics = {str(Path(d).resolve()): m for d, m in metrics.items()}
    tables = {"jobs": job_table(root, runs, metrics, unfinished)}
    markdown_parts = [f"# Report: {title}\n"]
    html_sections = []
    failed = tables["jobs"][tables["jobs"]["status"] != "ok"]
    finished_note = f"{len(runs)} finished, {len(failed)} failed or without result"
    if not runs.empty:
        jobs = {d: str(Path(d).relative_to(root)) if Path(d) != root else root.name for d in runs["run_dir"]}
        summary = aggregate.aggregate(runs)
        tables["summary"] = summary_table(summary)
        board = aggregate.leaderboard(summary)
        grouping = ("Runs are pooled only over seed and fold: every other setting that can change a result (model, "
                    "data, split, condition, augmentation, recipe) makes its own row, named in `settings` where the "
                    "columns do not tell rows apart. A single run shows its number alone.")
        markdown_parts += ["## Results (mean ± sd over runs, 95% bootstrap CI)\n", grouping + "\n",
                           aggregate.markdown_frame(board)]
        chart = _ua_chart(out, summary)
        html_sections.append(("Results (mean ± sd over runs, 95% bootstrap CI)",
                              note(grouping) + html_table(board) + embedded_image(chart)))
        html_sections += _comparison_sections(runs, metrics, tables, markdown_parts)
        tables["per_dataset"] = per_dataset(runs, metrics)
        matrix = aggregate.cross_corpus_matrix(runs)
        tables["cross_corpus"] = matrix
        for name, heading in (("per_dataset", "Per test corpus (mean WA and UA)"),
                              ("cross_corpus", "Cross-corpus: mean test UA, train corpora x test corpora")):
            if tables[name] is not None:
                markdown_parts += [f"## {heading}\n", aggregate.markdown_matrix(tables[name], "train \\ test")
                                   if name == "cross_corpus" else aggregate.markdown_frame(tables[name], index=True)]
                html_sections.append((heading, html_table(tables[name], index=True)))
        tables["per_emotion_f1"] = per_emotion_f1(runs, metrics)
        markdown_parts += ["## Per-emotion test F1 (mean over runs)\n", aggregate.markdown_frame(tables["per_emotion_f1"], index=True)]
        html_sections.append(("Per-emotion test F1 (mean over runs)", html_table(tables["per_emotion_f1"], index=True)
                              + embedded_image(_figure(out, "per_emotion_f1", plot_grouped_bars,
                                                       tables["per_emotion_f1"], "test F1"))))
        html_sections += _condition_sections(runs, out, tables, markdown_parts)
        html_sections += _calibration_sections(runs, metrics, summary, out, markdown_parts)
        html_sections += _learning_curve_sections(runs, out, jobs)
        tables["speakers"] = held_out_speakers(runs, metrics, jobs)
        markdown_parts += ["## Held-out speakers per run (UA on each)\n", aggregate.markdown_frame(tables["speakers"])]
        html_sections.append(("Held-out speakers per run (UA on each)", html_table(tables["speakers"])))
        html_sections.append(("Confusion matrices (summed over each configuration's runs; rows true)",
                              "".join(embedded_image(_confusion_figure(out, i, label, *confusion), "cm")
                                      for i, (label, confusion) in enumerate(summed_confusions(runs, metrics).items()))))
    jobs_md = aggregate.markdown_frame(tables["jobs"])
    markdown_parts += [f"## Jobs ({finished_note})\n", jobs_md]
    html_sections.append((f"Jobs ({finished_note})", html_table(tables["jobs"])))
    if not failed.empty:
        markdown_parts.insert(1, "## Failed jobs\n\n" + aggregate.markdown_frame(failed[["job", "status", "error"]]))
        html_sections.insert(0, ("Failed jobs", f"<div class='failed'>{html_table(failed[['job', 'status', 'error']])}</div>"))

    for name, table in tables.items():
        if table is not None:
            write_text(out / f"{name}.csv", table.to_csv(index=name in ("per_emotion_f1", "per_dataset", "cross_corpus", "robustness")))
    write_text(out / "report.md", "\n".join(markdown_parts))
    write_text(out / "report.html", html_page(f"Report: {title}", html_sections))
    log.info("report of %s -> %s (%s)", title, out, finished_note)
    return tables


def _figure(out: Path, name: str, plot, table: pd.DataFrame, ylabel: str) -> Path:
    path = out / "figures" / f"{name}.png"
    plot(table, path, ylabel=ylabel)
    return path


def without_shared_fields(labels: list[str]) -> tuple[list[str], str]:
    """Configuration labels (`model / augment / data / split / condition [...]`) without the fields that all of
    them share, and those shared fields: a chart's rows then show what differs, its title what they have in common."""
    if len(labels) < 2:
        return list(labels), ""
    parts = [label.partition(" [") for label in labels]
    heads = [head.split(" / ") for head, _, _ in parts]
    tails = [bracket + settings for _, bracket, settings in parts]  # ` [settings]`, or empty
    if len({len(fields) for fields in heads}) > 1:
        return list(labels), ""
    shared = [i for i in range(len(heads[0])) if len({fields[i] for fields in heads}) == 1]
    if len(shared) == len(heads[0]):
        shared = shared[1:]  # keep the model when nothing but the bracketed settings differs
    short = [" / ".join(f for i, f in enumerate(fields) if i not in shared) + tail for fields, tail in zip(heads, tails)]
    return short, " / ".join(heads[0][i] for i in shared)


def _ua_chart(out: Path, summary: list[dict]) -> Path:
    path = out / "figures" / "ua_per_configuration.png"
    entries = sorted(summary, key=lambda entry: -entry["test_ua"]["mean"])  # best first, read from the top
    labels, shared = without_shared_fields([entry["configuration"] for entry in entries])
    ua = [entry["test_ua"] for entry in entries]
    plot_ua_intervals(labels, [s["mean"] for s in ua], [(s["ci95"] or [s["mean"]])[0] for s in ua],
                      [(s["ci95"] or [s["mean"]])[-1] for s in ua], path, title=f"all on {shared}" if shared else "")
    return path


def _calibration_sections(runs: pd.DataFrame, metrics: dict, summary: list[dict], out: Path,
                          markdown_parts: list) -> list:
    """Reliability diagrams per configuration (its runs' test clips pooled), before and after temperature scaling,
    with the pooled ECE that `summary` (aggregate's) holds."""
    pooled = pooled_reliability(runs, metrics)
    pooled_ece = {entry["configuration"]: entry.get("pooled_calibration") for entry in summary}
    if not pooled:
        return []
    images, lines = [], []
    for index, (label, tables) in enumerate(pooled.items()):
        path = out / "figures" / f"reliability_{index:02d}.png"
        plot_reliability(tables, path, title=textwrap.fill(label, 60))
        images.append(embedded_image(path, "cm"))
        scores = pooled_ece.get(label)
        lines.append(f"- {label}: `figures/{path.name}`" + (
            f"; ECE on its {scores['clips']} test clips {scores['ece_before']:.3f} as trained, {scores['ece']:.3f} "
            f"reported (floor {scores['floor']:.3f})" if scores else ""))
    heading = "Calibration: accuracy against confidence (test clips of each configuration's runs pooled)"
    text = ("ECE is the clip-weighted gap between the diagonal and the points; the leaderboard's ECE column is its "
            "mean over runs, after temperature scaling. The floor is the ECE that perfectly calibrated probabilities "
            "with the same confidences would show on as many clips: binned ECE is biased upwards on few clips, so an "
            "ECE near its floor is as calibrated as the clips can tell.")
    markdown_parts += [f"## {heading}\n", text + "\n", "\n".join(lines) + "\n"]
    return [(heading, note(text) + "".join(images))]


def _confusion_figure(out: Path, index: int, label: str, confusion: np.ndarray, classes: list[str]) -> Path:
    path = out / "figures" / f"confusion_{index:02d}.png"
    plot_confusion_matrix(confusion, classes, path, title=textwrap.fill(label, 60))
    return path


def _comparison_sections(runs: pd.DataFrame, metrics: dict, tables: dict, markdown_parts: list) -> list:
    """Paired comparisons of configurations tested on the same clips (evaluation/paired.py), when there are any."""
    comparisons = paired_comparisons(runs, metrics)
    if comparisons.empty:
        return []
    tables["comparisons"] = comparisons
    heading = "Paired comparisons (same clips): A vs B, ΔUA [95% CI], p"
    text = ("A is the configuration with the higher UA on the shared clips. ΔUA is A's UA minus B's, averaged over "
            "pairs of runs with the same seed and the same test clips; the interval is a paired bootstrap over clips "
            "(10,000 draws within each set of clips, shared by the pairs of runs on it); p is McNemar's exact "
            "binomial test on per-clip correctness, or, where several pairs of runs (seeds) share the same clips, a "
            "sign-flip permutation test on each clip's correctness difference averaged over them, so that a clip "
            "counts once. `clips` counts distinct clips.")
    shown = comparison_table(comparisons)
    markdown_parts += [f"## {heading}\n", text + "\n",
                       "\n".join(f"- {row['A vs B']}: {row['ΔUA [95% CI]']}, p = {row['p']} ({row['test']})"
                                 for row in shown.to_dict("records")) + "\n", aggregate.markdown_frame(shown)]
    return [(heading, note(text) + html_table(shown))]


def _learning_curve_sections(runs: pd.DataFrame, out: Path, jobs: dict[str, str]) -> list:
    """Train loss and val UA per epoch, one figure per configuration, from its runs' CSV logs."""
    images = []
    for index, (label, group) in enumerate(runs.groupby("configuration", sort=True)):
        curves = {run_name(run, jobs): curve for run in group.to_dict("records")
                  if (curve := learning_curve(run["run_dir"])) is not None}
        if curves:
            path = out / "figures" / f"learning_curves_{index:02d}.png"
            plot_learning_curves(curves, path, title=label)
            images.append(embedded_image(path))
    if not images:
        return []
    return [("Learning curves (train loss and val UA per epoch, from each run's CSV log)", "".join(images))]


def _condition_sections(runs: pd.DataFrame, out: Path, tables: dict, markdown_parts: list) -> list:
    """Mean test UA per configuration under each test condition (aggregate.robustness_matrix), when there are several."""
    matrix = aggregate.robustness_matrix(runs)
    if matrix is None:
        return []
    tables["robustness"] = matrix
    heading = "Mean test UA under each condition"
    markdown_parts += [f"## {heading}\n", aggregate.markdown_matrix(matrix, "model")]
    return [(heading, html_table(matrix, index=True)
             + embedded_image(_figure(out, "ua_per_condition", plot_grouped_bars, matrix, "test UA")))]
