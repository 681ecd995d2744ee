"""The published leaderboard: one CSV of figures, and the Markdown tables and the chart rendered from it.

docs/results/leaderboard.csv is the only place a leaderboard figure is written by hand or by `add_row` (from a
sweep's aggregate); docs/results/leaderboard.md, the README's headline rows and docs/results/leaderboard.png are
rendered from it between marker comments, so no copy of a figure can drift from the file.
"""

import csv
import json
import re
import shlex
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only
import matplotlib.pyplot as plt
from PIL import Image

from emotion_lightning.data.atomic import atomic_path
from emotion_lightning.data.errors import SettingError
from emotion_lightning.evaluation.aggregate import aggregate, read_runs

COLUMNS = ["name", "settings", "model", "params", "runs", "val_ua", "test_ua", "test_ua_sd", "test_ua_ci_low",
           "test_ua_ci_high", "test_ece", "test_ece_sd", "test_ece_before", "pooled_ece_before", "pooled_ece",
           "pooled_ece_floor", "test_nll_before", "test_nll", "test_nll_change_ci_low", "test_nll_change_ci_high",
           "fit_seconds", "hardware", "headline", "command", "notes"]
# The encoder-size table: each cell the row whose `model` text it names (what a row's model column says).
ENCODER_GRID = {
    "Whisper tiny.en (4 layers, width 384)": ("Whisper tiny.en, frozen", "Whisper tiny.en, top 2 of 4 layers fine-tuned",
                                              "Whisper tiny.en, fine-tuned"),
    "Whisper base (6 layers, width 512)": ("Whisper base, frozen", "Whisper base, top 2 of 6 layers fine-tuned",
                                           "Whisper base, fine-tuned"),
}
CHART_KEY = "leaderboard"  # the PNG text chunk holding the chart's data, so a test can compare it with the CSV


def read_rows(path: str | Path) -> list[dict]:
    """The leaderboard's rows, best mean test UA first."""
    with open(path, newline="") as file:
        rows = list(csv.DictReader(file))
    for number, row in enumerate(rows, start=2):
        if list(row) != COLUMNS:
            raise SettingError(f"{path}: columns {list(row)} differ from {COLUMNS}")
        for key in ("test_ua", "test_ua_sd", "test_ua_ci_low", "test_ua_ci_high"):
            try:
                float(row[key])
            except ValueError:
                raise SettingError(f"{path}, line {number}: {key} {row[key]!r} is not a number") from None
    return sorted(rows, key=lambda row: -float(row["test_ua"]))


def write_rows(path: str | Path, rows: list[dict]) -> None:
    with atomic_path(path) as temporary, open(temporary, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(sorted(rows, key=lambda row: -float(row["test_ua"])))


def sweep_dir(command: str) -> str:
    """The `hydra.sweep.dir=...` a row's command writes into (every row names its own)."""
    for word in shlex.split(command):
        if word.startswith("hydra.sweep.dir="):
            return word.partition("=")[2]
    raise SettingError(f"leaderboard command {command!r} names no hydra.sweep.dir=...; give each row its own sweep dir")


def stat_text(row: dict) -> str:
    mean, sd, low, high = (float(row[key]) for key in ("test_ua", "test_ua_sd", "test_ua_ci_low", "test_ua_ci_high"))
    return f"{mean:.3f} ± {sd:.3f} [{low:.3f}, {high:.3f}]"


def _cell(text: str) -> str:
    return text.replace("|", "\\|") if text else "–"


def _ece_text(row: dict) -> str:
    """ECE per run as trained -> after temperature scaling, mean ± sd over the runs (blank for rows measured
    before it was recorded)."""
    if not row["test_ece"]:
        return "–"
    before = f"{float(row['test_ece_before']):.3f} → " if row["test_ece_before"] else ""
    return before + f"{float(row['test_ece']):.3f}" + (f" ± {float(row['test_ece_sd']):.3f}" if row["test_ece_sd"] else "")


def _pooled_ece_text(row: dict) -> str:
    """ECE over all the row's test clips at once, as trained -> after scaling, and (in brackets) the ECE a perfectly
    calibrated model would show on as many clips."""
    if not row["pooled_ece"]:
        return "–"
    before = f"{float(row['pooled_ece_before']):.3f} → " if row["pooled_ece_before"] else ""
    return before + f"{float(row['pooled_ece']):.3f} ({float(row['pooled_ece_floor']):.3f})"


def _nll_text(row: dict) -> str:
    """Test NLL per run (mean) as trained -> after temperature scaling, and the 95% interval of the paired change
    (each run against itself); one number for a row that fitted no temperature."""
    if not row.get("test_nll"):
        return "–"
    after = f"{float(row['test_nll']):.3f}"
    if not row["test_nll_change_ci_low"]:
        return after
    before = float(row["test_nll_before"])
    low, high = float(row["test_nll_change_ci_low"]), float(row["test_nll_change_ci_high"])
    return f"{before:.3f} → {after} (Δ {float(row['test_nll']) - before:+.3f} [{low:+.3f}, {high:+.3f}])"


def _fit_text(row: dict) -> str:
    return f"{float(row['fit_seconds']):,.0f} s" if row["fit_seconds"] else ""


def render_table(rows: list[dict]) -> str:
    lines = ["| # | recipe | settings | model | params | runs | val UA | test UA mean ± sd [95% CI] "
             "| test ECE per run | test ECE, all clips (floor) | test NLL per run | fit per run (2-core x86 CPU) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for rank, row in enumerate(rows, start=1):
        lines.append("| " + " | ".join([
            str(rank), f"`{row['name']}`", f"`{row['settings']}`" if row["settings"] else "–", _cell(row["model"]),
            f"{int(row['params']):,}" if row["params"] else "–", row["runs"],
            f"{float(row['val_ua']):.3f}" if row["val_ua"] else "–", stat_text(row), _ece_text(row),
            _pooled_ece_text(row), _nll_text(row), _cell(_fit_text(row))]) + " |")
    return "\n".join(lines)


def render_commands(rows: list[dict]) -> str:
    """One block per row: the sweep that makes it, then the aggregate that prints its figures."""
    blocks = []
    for rank, row in enumerate(rows, start=1):
        title = f"{rank}. `{row['name']}`" + (f" `{row['settings']}`" if row["settings"] else "")
        note = f" {row['notes']}" if row["notes"] else ""
        blocks.append(f"{title}:{note}\n\n```bash\n{row['command']}\n"
                      f"emotion-lightning aggregate {sweep_dir(row['command'])}\n```")
    return "\n\n".join(blocks)


def render_headline(rows: list[dict]) -> str:
    lines = ["| recipe | model | test UA mean ± sd [95% CI] | runs |", "|---|---|---|---|"]
    for row in rows:
        if row["headline"] == "yes":
            recipe = row["name"] + (f" {row['settings']}" if row["settings"] else "")
            lines.append(f"| `{recipe}` | {_cell(row['model'])} | **{stat_text(row)}** | {row['runs']} |")
    return "\n".join(lines)


def render_encoders(rows: list[dict]) -> str:
    """Encoder size against how much of it trains: each cell the test UA of its row (val UA and fit time beside)."""
    by_model = {row["model"]: row for row in rows}
    lines = ["| encoder | frozen: layer mix + head | partial: top 2 layers + mix + head | full fine-tuning |",
             "|---|---|---|---|"]
    for encoder, models in ENCODER_GRID.items():
        cells = []
        for model in models:
            row = by_model.get(model)
            cells.append("not run" if row is None else stat_text(row)
                         + (f"; val {float(row['val_ua']):.3f}" if row["val_ua"] else "")
                         + (f"; {_fit_text(row)} a fold" if row["fit_seconds"] else ""))
        lines.append(f"| {encoder} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def chart_data(rows: list[dict]) -> list[list]:
    return [[row["name"] + (f" {row['settings']}" if row["settings"] else ""), float(row["test_ua"]),
             float(row["test_ua_ci_low"]), float(row["test_ua_ci_high"])] for row in rows]


def tick_label(label: str, width: int = 60) -> str:
    """A row's label in lines of at most about `width` characters, broken at spaces or after commas (a list of
    sweeps is one long word), so that a long label does not squeeze the plot."""
    lines, line = [], ""
    for piece in re.findall(r"[^ ,]*(?:,| |$)", label):  # each word with the comma or space that ends it
        if line and len(line + piece) > width:
            lines.append(line.rstrip())
            line = ""
        line += piece
    return "\n".join(lines + [line.rstrip()])


def plot_chart(rows: list[dict], path: str | Path) -> None:
    """Mean test UA per row, whiskers the 95% interval, best at the top; the data rides in the PNG's metadata."""
    data = chart_data(rows)
    figure, axes = plt.subplots(figsize=(9, 0.8 + 0.38 * len(data)))
    positions = range(len(data))[::-1]
    means = [mean for _, mean, _, _ in data]
    errors = [[mean - low for _, mean, low, _ in data], [high - mean for _, mean, _, high in data]]
    axes.errorbar(means, list(positions), xerr=errors, fmt="o", color="tab:blue", capsize=3)
    for position, (_, mean, _, high) in zip(positions, data):
        axes.text(high + 0.01, position, f"{mean:.3f}", va="center", fontsize=8)
    axes.set_yticks(list(positions), [tick_label(label) for label, *_ in data], fontsize=8)
    axes.axvline(0.125, color="grey", linestyle=":", label="chance (8 classes)")
    axes.set_xlabel("test UA, mean over RAVDESS's 6 speaker folds (95% interval)")
    axes.set_xlim(0, 1)
    axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=110, format="png", metadata={CHART_KEY: json.dumps(data)})
    plt.close(figure)


def chart_metadata(path: str | Path) -> list[list] | None:
    with Image.open(path) as image:
        text = image.text.get(CHART_KEY)
    return json.loads(text) if text else None


def replace_between(text: str, marker: str, content: str, where: str) -> str:
    """`text` with what lies between `<!-- marker -->` and `<!-- /marker -->` replaced by `content`."""
    pattern = re.compile(rf"(<!-- {re.escape(marker)} -->\n)(?:.*?\n)?(<!-- /{re.escape(marker)} -->)", re.S)
    if not pattern.search(text):
        raise SettingError(f"{where} has no <!-- {marker} --> ... <!-- /{marker} --> block to render into")
    return pattern.sub(lambda match: match.group(1) + content + "\n" + match.group(2), text)


def rendered_files(csv_path: str | Path, page: str | Path, readme: str | Path) -> dict[Path, str]:
    """What the page and the README should hold, rendered from the CSV."""
    rows = read_rows(csv_path)
    page_text = Path(page).read_text()
    page_text = replace_between(page_text, "leaderboard:table", render_table(rows), str(page))
    page_text = replace_between(page_text, "leaderboard:commands", render_commands(rows), str(page))
    page_text = replace_between(page_text, "leaderboard:encoders", render_encoders(rows), str(page))
    readme_text = replace_between(Path(readme).read_text(), "leaderboard:headline", render_headline(rows), str(readme))
    return {Path(page): page_text, Path(readme): readme_text}


def render(csv_path: str | Path, page: str | Path, readme: str | Path, chart: str | Path) -> list[Path]:
    """Rewrite the page's and README's rendered blocks and the chart; the files that changed."""
    changed = []
    for path, text in rendered_files(csv_path, page, readme).items():
        if path.read_text() != text:
            with atomic_path(path) as temporary:
                temporary.write_text(text)
            changed.append(path)
    rows = read_rows(csv_path)
    if not Path(chart).exists() or chart_metadata(chart) != chart_data(rows):
        plot_chart(rows, chart)
        changed.append(Path(chart))
    return changed


def stale_files(csv_path: str | Path, page: str | Path, readme: str | Path, chart: str | Path) -> list[Path]:
    """The rendered files that do not match the CSV (nothing written)."""
    stale = [path for path, text in rendered_files(csv_path, page, readme).items() if path.read_text() != text]
    if not Path(chart).exists() or chart_metadata(chart) != chart_data(read_rows(csv_path)):
        stale.append(Path(chart))
    return stale


def _stored(value: float) -> str:
    """A figure as the CSV keeps it: 6 places, so the 3 shown are rounded once, as `report` rounds them (0.784505
    shows 0.785; kept as 0.7845 it would show 0.784)."""
    return f"{value:.6f}"


def row_from_sweep(folder: str | Path, name: str, command: str, model: str = "", notes: str = "",
                   hardware: str = "2-core x86 CPU") -> dict:
    """A leaderboard row from a sweep's runs, which must form one configuration (seeds and folds pooled)."""
    summary = aggregate(read_runs(folder))
    if len(summary) != 1:
        labels = "; ".join(entry["configuration"] for entry in summary)
        raise SettingError(f"{folder} holds {len(summary)} configurations ({labels}); a leaderboard row is one "
                           "configuration: give the folder of one sweep")
    entry = summary[0]
    ua, ece, before = entry["test_ua"], entry.get("test_ece"), entry.get("test_ece_before")
    nll, nll_before, change = (entry.get(key) for key in ("test_nll", "test_nll_before", "test_nll_change"))
    # a row that fitted no temperature (classical models) shows its scores once, not "as trained -> the same"
    scaled = change is not None and change["ci95"] is not None and any(change["values"])
    pooled = entry.get("pooled_calibration") or {}
    if ua["sd"] is None:
        raise SettingError(f"{folder} holds one run; a leaderboard row is a mean over folds or seeds")
    return {"name": name, "settings": entry["settings"], "model": model or entry["model"],
            "params": entry["params"] or "", "runs": entry["runs"],
            "val_ua": _stored(entry["val_ua"]) if entry["val_ua"] is not None else "",
            "test_ua": _stored(ua["mean"]), "test_ua_sd": _stored(ua["sd"]), "test_ua_ci_low": _stored(ua["ci95"][0]),
            "test_ua_ci_high": _stored(ua["ci95"][1]),
            "test_ece": _stored(ece["mean"]) if ece else "", "test_ece_sd": _stored(ece["sd"]) if ece and ece["sd"] is not None else "",
            "test_ece_before": _stored(before["mean"]) if before and scaled else "",
            **{f"pooled_{key}": _stored(pooled[source]) if pooled and (scaled or key != "ece_before") else ""
               for key, source in (("ece_before", "ece_before"), ("ece", "ece"), ("ece_floor", "floor"))},
            "test_nll_before": _stored(nll_before["mean"]) if nll_before else "",
            "test_nll": _stored(nll["mean"]) if nll else "",
            **{f"test_nll_change_ci_{end}": _stored(change["ci95"][index]) if scaled else ""
               for index, end in enumerate(("low", "high"))},
            "fit_seconds": f"{entry['train_seconds']:.0f}" if entry["train_seconds"] is not None else "",
            "hardware": hardware, "headline": "", "command": command, "notes": notes}


def add_row(csv_path: str | Path, row: dict) -> str:
    """Insert `row`, or replace the row of the same name and settings (whose headline mark it keeps);
    "added" or "replaced"."""
    rows = read_rows(csv_path)
    same = [old for old in rows if (old["name"], old["settings"]) == (row["name"], row["settings"])]
    if same:
        row = {**row, "headline": same[0]["headline"]}
        rows.remove(same[0])
    write_rows(csv_path, rows + [{key: str(row[key]) for key in COLUMNS}])
    return "replaced" if same else "added"
