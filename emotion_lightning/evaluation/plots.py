"""Figures written to run dirs."""

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: runs happen on headless machines
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from emotion_lightning.data.atomic import atomic_path


def plot_confusion_matrix(confusion, classes: list[str], path: str | Path, title: str = "") -> None:
    """Row-normalised confusion matrix (recall per true class) with the counts in each cell."""
    confusion = np.asarray(confusion)
    rates = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    figure, axes = plt.subplots(figsize=(1.0 + 0.75 * len(classes), 0.8 + 0.7 * len(classes)))
    image = axes.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for (row, column), count in np.ndenumerate(confusion):
        axes.text(column, row, f"{rates[row, column]:.2f}\n({count})", ha="center", va="center", fontsize=7,
                  color="white" if rates[row, column] > 0.5 else "black")
    axes.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    axes.set_yticks(range(len(classes)), classes)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    figure.colorbar(image, ax=axes, fraction=0.046, label="recall")
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=120, format="png")
    plt.close(figure)


def plot_ua_vs_snr(series, snr_db, ua, clean_ua: dict[str, float], path: str | Path) -> None:
    """Mean test UA against SNR: one colour per noise kind, one line style per model (series names are
    "model, kind"), each model's clean UA as a grey line of its style. Series with a single SNR are left out."""
    table = pd.DataFrame({"series": list(series), "snr_db": list(snr_db), "ua": list(ua)})
    table[["model", "kind"]] = table["series"].str.rsplit(", ", n=1, expand=True)  # a model label may hold ", "
    styles = dict(zip(sorted(set(table["model"]) | set(clean_ua)), ["-", "--", ":", "-."] * 10))
    colours = dict(zip(sorted(set(table["kind"])), plt.get_cmap("tab10").colors * 3))
    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    for (model, kind), points in table.groupby(["model", "kind"]):
        mean = points.groupby("snr_db")["ua"].mean()
        if len(mean) > 1:
            axes.plot(mean.index, mean.to_numpy(), marker="o", linestyle=styles[model], color=colours[kind],
                      label=f"{model}, {kind}")
    for model, value in clean_ua.items():
        if model in set(table["model"]):
            axes.axhline(value, linestyle=styles[model], linewidth=1, color="grey", label=f"{model}, clean")
    axes.set_xlabel("SNR (dB)")
    axes.set_ylabel("test UA")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=120, format="png")
    plt.close(figure)


def plot_grouped_bars(table, path: str | Path, ylabel: str, title: str = "") -> None:
    """Bars of a table's values: one group per column (e.g. emotion, condition), one colour per row."""
    values = table.to_numpy(dtype=float)
    rows, columns = values.shape
    width = 0.8 / max(rows, 1)
    figure, axes = plt.subplots(figsize=(min(12.0, max(6.0, 0.2 * rows * columns + 4)), 4.0))
    for index, (label, heights) in enumerate(zip(table.index, values)):
        axes.bar(np.arange(columns) + (index - (rows - 1) / 2) * width, np.nan_to_num(heights), width, label=str(label))
    axes.set_xticks(range(columns), [str(c) for c in table.columns], rotation=30, ha="right")
    axes.set_ylim(0, 1)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(axis="y", alpha=0.3)
    # Below the axes, and saved with a tight box: a legend of long configuration names is never cut off.
    axes.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=1 if rows > 4 else 2)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=100, format="png", bbox_inches="tight")
    plt.close(figure)


def wrapped(label: str, width: int = 60) -> str:
    return "\n".join(textwrap.wrap(label, width)) or label


def plot_ua_intervals(labels: list[str], means, lows, highs, path: str | Path, title: str = "") -> None:
    """Mean test UA per configuration with its 95% interval as whiskers (a single run: a dot alone)."""
    means, lows, highs = (np.asarray(values, dtype=float) for values in (means, lows, highs))
    texts = [wrapped(label) for label in labels]
    # Each row is as tall as its wrapped label (in units of one text line), so long labels never overlap.
    heights = np.array([max(2.5, text.count("\n") + 1.6) for text in texts])
    positions = heights.sum() - (np.cumsum(heights) - heights / 2)
    figure, axes = plt.subplots(figsize=(9.5, 0.16 * heights.sum() + 1.2))
    errors = np.nan_to_num(np.vstack([means - lows, highs - means]))
    axes.errorbar(means, positions, xerr=errors, fmt="o", capsize=4, color="tab:blue")
    axes.set_yticks(positions, texts, fontsize=8)
    axes.set_ylim(0, heights.sum())
    axes.set_xlim(0, 1)
    axes.set_xlabel("test UA (mean; whiskers: 95% bootstrap CI over runs)")
    axes.grid(axis="x", alpha=0.3)
    axes.set_title(title, fontsize=9)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=100, format="png", bbox_inches="tight")
    plt.close(figure)


def plot_learning_curves(curves: dict[str, pd.DataFrame], path: str | Path, title: str = "") -> None:
    """Train loss and val UA per epoch, one line per run (`curves`: run name -> epoch, train_loss, val_ua)."""
    figure, (loss_axes, ua_axes) = plt.subplots(1, 2, figsize=(9.5, 3.2))
    for name, curve in curves.items():
        for axes, column in ((loss_axes, "train_loss"), (ua_axes, "val_ua")):
            points = curve.dropna(subset=[column])
            axes.plot(points["epoch"] + 1, points[column], marker=".", label=name)
    loss_axes.set_ylabel("train loss")
    ua_axes.set_ylabel("val UA")
    for axes in (loss_axes, ua_axes):
        axes.set_xlabel("epoch")
        axes.grid(alpha=0.3)
    ua_axes.legend(fontsize=7)
    figure.suptitle(wrapped(title, 110), fontsize=9)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=100, format="png", bbox_inches="tight")
    plt.close(figure)
