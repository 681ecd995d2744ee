"""Report over a run or multirun folder: the results tables as Markdown and CSV, and one HTML page.

    python -m emotion_lightning.report outputs/multiruns/NAME [MORE_FOLDERS...]   [--out DIR]

Gathers every metrics.json under the folders (and every failed or unfinished job, listed as such) and
writes into --out (default FIRST_FOLDER/report): report.md; runs.csv (one row per job), summary.csv (mean, sd
and 95% CI per configuration), per_emotion_f1.csv, and per_dataset.csv / cross_corpus.csv / robustness.csv when
runs test several corpora, cross them or test under several conditions; figures/*.png (confusion matrices summed over each configuration's runs,
per-emotion F1 bars, UA under each condition); report.html with the tables and the figures embedded.
"""

import base64
import html
import json
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from emotion_lightning.data.errors import MissingFileError
from emotion_lightning.evaluation import aggregate
from emotion_lightning.data.atomic import write_text
from emotion_lightning.evaluation.unfinished import read_unfinished
from emotion_lightning.evaluation.plots import plot_confusion_matrix, plot_grouped_bars

log = logging.getLogger(__name__)
JOB_COLUMNS = ["job", "status", *aggregate.GROUP_BY, "seed", *aggregate.METRICS, "best_val_ua", "best_epoch",
               "params", "train_seconds", "error"]


def configuration(row) -> str:
    """A configuration's label: its group-by values (model / data / split ...)."""
    return " / ".join(str(row[key]) for key in aggregate.GROUP_BY)


def read_results(folders: list[Path]) -> tuple[pd.DataFrame, dict[str, dict]]:
    """Finished runs (aggregate.read_runs, plus a configuration label) and each run's metrics.json."""
    found = []
    for folder in folders:
        try:
            found.append(aggregate.read_runs(folder))
        except FileNotFoundError:
            continue
    if not found:
        return pd.DataFrame(columns=["run_dir", *aggregate.GROUP_BY, *aggregate.METRICS]), {}
    runs = pd.concat(found, ignore_index=True)
    runs["configuration"] = runs.apply(configuration, axis=1)
    metrics = {run_dir: json.loads((Path(run_dir) / "metrics.json").read_text()) for run_dir in runs["run_dir"]}
    return runs, metrics


def job_table(root: Path, runs: pd.DataFrame, metrics: dict[str, dict], unfinished: pd.DataFrame) -> pd.DataFrame:
    """One row per job: finished ones with their scores, failed or unfinished ones with why."""
    finished = runs.assign(status="ok", error="",
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
    """aggregate.aggregate's entries as flat columns (mean, sd, CI bounds per metric)."""
    rows = []
    for entry in summary:
        row = {key: entry[key] for key in (*aggregate.GROUP_BY, "runs", "params", "train_seconds")}
        for metric in aggregate.METRICS:
            stats = entry[metric]
            row |= {f"{metric}_mean": stats["mean"], f"{metric}_sd": stats["sd"],
                    f"{metric}_ci_low": stats["ci95"][0], f"{metric}_ci_high": stats["ci95"][1]}
        rows.append(row)
    return pd.DataFrame(rows)


def per_emotion_f1(runs: pd.DataFrame, metrics: dict[str, dict]) -> pd.DataFrame:
    """Mean test F1 of each emotion (columns) per configuration (rows), over its runs."""
    rows = [{"configuration": label, **{name: scores["f1"] for name, scores in metrics[d]["per_class"].items()}}
            for label, d in zip(runs["configuration"], runs["run_dir"])]
    return pd.DataFrame(rows).groupby("configuration", sort=True).mean()


def per_dataset(runs: pd.DataFrame, metrics: dict[str, dict]) -> pd.DataFrame | None:
    """Mean test WA (the seeds' "accuracy") and UA per test corpus, for configurations tested on several."""
    rows = []
    for label, d in zip(runs["configuration"], runs["run_dir"]):
        corpora = metrics[d].get("breakdowns", {}).get("corpus", {})
        if len(corpora) > 1:
            rows.append({"configuration": label, **{f"{c} WA": s["wa"] for c, s in corpora.items()},
                         **{f"{c} UA": s["ua"] for c, s in corpora.items()}})
    return pd.DataFrame(rows).groupby("configuration", sort=True).mean() if rows else None


def summed_confusions(runs: pd.DataFrame, metrics: dict[str, dict]) -> dict[str, tuple[np.ndarray, list[str]]]:
    """Each configuration's confusion matrix summed over its runs (seeds, folds): every test clip once."""
    confusions = {}
    for label, d in zip(runs["configuration"], runs["run_dir"]):
        matrix, classes = np.asarray(metrics[d]["confusion_matrix"]), metrics[d]["classes"]
        if label in confusions and confusions[label][1] == classes:
            matrix = matrix + confusions[label][0]
        confusions[label] = (matrix, classes)
    return confusions


def html_page(title: str, sections: list[tuple[str, str]]) -> str:
    """One self-contained page: each section is (heading, HTML body)."""
    style = ("body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f3f3}"
             "img{max-width:100%;margin:0.5em}.failed{color:#b00}")
    body = "".join(f"<h2>{html.escape(heading)}</h2>\n{content}\n" for heading, content in sections)
    return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>\n{body}</body></html>\n")


def embedded_image(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"<img alt='{html.escape(path.stem)}' src='data:image/png;base64,{data}'>"


def html_table(table: pd.DataFrame, index: bool = False) -> str:
    return table.to_html(index=index, float_format=lambda v: f"{v:.3f}", na_rep="", border=0)


def build_report(folders: str | Path | list, out: str | Path) -> dict[str, pd.DataFrame]:
    """Write the report over one or more run/multirun folders into `out`; return its tables by name
    (jobs, summary, per_emotion_f1, ...)."""
    folders = [Path(f) for f in (folders if isinstance(folders, (list, tuple)) else [folders])]
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
        summary = aggregate.aggregate(runs)
        tables["summary"] = summary_table(summary)
        tables["per_emotion_f1"] = per_emotion_f1(runs, metrics)
        markdown_parts += ["## Results (mean ± sd over runs, 95% bootstrap CI)\n", aggregate.markdown_table(summary)]
        html_sections.append(("Results", html_table(tables["summary"])))
        tables["per_dataset"] = per_dataset(runs, metrics)
        matrix = aggregate.cross_corpus_matrix(runs)
        tables["cross_corpus"] = matrix
        for name, heading in (("per_dataset", "Per test corpus (mean WA and UA)"),
                              ("cross_corpus", "Cross-corpus: mean test UA, train corpora x test corpora")):
            if tables[name] is not None:
                markdown_parts += [f"## {heading}\n", aggregate.markdown_matrix(tables[name], "train \\ test")
                                   if name == "cross_corpus" else aggregate.markdown_frame(tables[name], index=True)]
                html_sections.append((heading, html_table(tables[name], index=True)))
        markdown_parts += ["## Per-emotion test F1 (mean over runs)\n", aggregate.markdown_frame(tables["per_emotion_f1"], index=True)]
        html_sections.append(("Per-emotion test F1 (mean over runs)", html_table(tables["per_emotion_f1"], index=True)
                              + embedded_image(_figure(out, "per_emotion_f1", plot_grouped_bars,
                                                       tables["per_emotion_f1"], "test F1"))))
        html_sections += _condition_sections(runs, out, tables, markdown_parts)
        html_sections.append(("Confusion matrices (summed over each configuration's runs; rows true)",
                              "".join(embedded_image(_confusion_figure(out, i, label, *confusion))
                                      for i, (label, confusion) in enumerate(summed_confusions(runs, metrics).items()))))
    jobs_md = aggregate.markdown_frame(tables["jobs"])
    markdown_parts += [f"## Jobs ({finished_note})\n", jobs_md]
    html_sections.insert(0, (f"Jobs ({finished_note})", html_table(tables["jobs"])))
    if not failed.empty:
        markdown_parts += ["## Failed jobs\n", aggregate.markdown_frame(failed[["job", "status", "error"]])]
        html_sections.insert(1, ("Failed jobs", f"<div class='failed'>{html_table(failed[['job', 'status', 'error']])}</div>"))

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


def _confusion_figure(out: Path, index: int, label: str, confusion: np.ndarray, classes: list[str]) -> Path:
    path = out / "figures" / f"confusion_{index:02d}.png"
    plot_confusion_matrix(confusion, classes, path, title=label)
    return path


def _condition_sections(runs: pd.DataFrame, out: Path, tables: dict, markdown_parts: list) -> list:
    """Mean test UA per model under each test condition (aggregate.robustness_matrix), when there are several."""
    matrix = aggregate.robustness_matrix(runs)
    if matrix is None:
        return []
    tables["robustness"] = matrix
    heading = "Mean test UA under each condition"
    markdown_parts += [f"## {heading}\n", aggregate.markdown_matrix(matrix, "model")]
    return [(heading, html_table(matrix, index=True)
             + embedded_image(_figure(out, "ua_per_condition", plot_grouped_bars, matrix, "test UA")))]
