"""The documentation stays usable: a short README, links that resolve, every command in it composes, figures
rendered from the one leaderboard file, and words of a user rather than of how the project was built."""

import io
import re
import shlex
import subprocess
import tokenize
from pathlib import Path

import pytest

from emotion_lightning.evaluation import leaderboard
from emotion_lightning.evaluation.leaderboard import chart_data, chart_metadata, read_rows, render_encoders, stale_files

from tests.helpers.configs import CONF_DIR

ROOT = CONF_DIR.parent
DOCS = sorted(path for path in [ROOT / "README.md", ROOT / "CHANGELOG.md", *ROOT.glob("docs/**/*.md")] if path.exists())
HYDRA_COMMANDS = {"train", "eval", "predict", "export", "serve", "download"}
# Stand-ins for the capitalised placeholders the docs use in commands.
PLACEHOLDERS = {"CKPT": "outputs/runs/example/checkpoints/last.ckpt", "RUN": "outputs/runs/example",
                "SWEEP": "outputs/multiruns/example", "SWEEP_A": "outputs/multiruns/a", "SWEEP_B": "outputs/multiruns/b"}


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"[`*]|\[|\]\(.*?\)", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return {slug(line.lstrip("#")) for line in text.splitlines() if re.match(r"#{1,6} ", line)}


def test_readme_is_short():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 400


@pytest.mark.parametrize("page", DOCS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto: not checked offline
        file, _, anchor = target.partition("#")
        path = (page.parent / file).resolve() if file else page
        if not path.exists():
            broken.append(f"{target}: no file {path}")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(f"{target}: no heading #{anchor} in {path.name}")
    assert not broken, "\n".join(broken)


def doc_commands() -> list[tuple[str, str]]:
    """(page, command) for every `emotion-lightning ...` / `python -m emotion_lightning...` in code blocks and
    inline code of the docs, continuation lines joined and `&&` chains split."""
    found = []
    for page in DOCS:
        text = page.read_text()
        snippets = []
        for language, block in re.findall(r"```(\w*)\n(.*?)```", text, flags=re.S):
            if language in ("", "bash", "sh", "console"):
                snippets += block.replace("\\\n", " ").splitlines()
        prose = re.sub(r"```.*?```", "", text, flags=re.S).replace("\n", " ")  # code spans may wrap lines
        snippets += re.findall(r"(?<!`)`([^`]+)`(?!`)", prose)
        for snippet in snippets:
            for part in snippet.split("&&"):
                part = part.split(" # ")[0].strip()
                match = re.search(r"(emotion-lightning \S.*|python -m emotion_lightning\.\S.*)", part)
                # Generic forms (`emotion-lightning COMMAND [ARGS]`, `--help`, `...`) name no real command.
                if match and not re.search(r"COMMAND|\.\.\.|^emotion-lightning -", match.group(1)):
                    found.append((str(page.relative_to(ROOT)), match.group(1).strip()))
    return found


def command_name(words: list[str]) -> tuple[str, list[str]]:
    if words[0] == "emotion-lightning":
        return words[1], words[2:]
    return words[2].removeprefix("emotion_lightning."), words[3:]


def first_of_sweeps(overrides: list[str]) -> list[str]:
    """A multirun's overrides with each swept value replaced by its first."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    composed = []
    for override in OverridesParser.create().parse_overrides(overrides):
        if override.is_sweep_override():
            value = next(iter(override.sweep_string_iterator()))
            composed.append(f"{override.get_key_element()}={value}")
        else:
            composed.append(override.input_line)
    return composed


COMMANDS = doc_commands()


def test_the_docs_have_commands():
    assert len(COMMANDS) > 50, "the command extraction found too few commands: its patterns are broken"


@pytest.mark.parametrize("page, command", COMMANDS, ids=[f"{page}: {command[:80]}" for page, command in COMMANDS])
def test_every_documented_command_composes(page, command):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    import emotion_lightning  # noqa: F401  (registers resolvers)

    for name, value in PLACEHOLDERS.items():
        command = re.sub(rf"\b{name}\b", value, command)
    name, args = command_name(shlex.split(command))
    named_files = [arg.partition("=")[2] or arg for arg in args
                   if re.match(r"(\w+=)?(conf|experiments|docs|benchmarks|tests)/", arg)]
    assert all((ROOT / file).exists() for file in named_files), f"{command} names a file that does not exist"
    if name not in HYDRA_COMMANDS:
        module = __import__(f"emotion_lightning.{name}", fromlist=["parser"])
        module.parser().parse_args([arg for arg in args if arg not in ("-h", "--help")])
        return
    overrides = [arg for arg in args if not arg.startswith("-")
                 and arg not in ("job", "hydra", "all") and not re.match(r"(job|hydra|all)$", arg)]
    if name == "download" and overrides and "=" not in overrides[0]:
        overrides[0] = f"corpus={overrides[0]}"
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            compose(name, overrides=first_of_sweeps(overrides), return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()


def test_the_leaderboard_pages_and_chart_are_rendered_from_its_file():
    csv_path = ROOT / "docs/results/leaderboard.csv"
    stale = stale_files(csv_path, ROOT / "docs/results/leaderboard.md", ROOT / "README.md",
                        ROOT / "docs/results/leaderboard.png")
    assert not stale, f"{stale} differ from leaderboard.csv: run `emotion-lightning leaderboard`"
    assert chart_metadata(ROOT / "docs/results/leaderboard.png") == chart_data(read_rows(csv_path))


def test_a_row_shows_its_figures_rounded_once_as_the_report_shows_them(monkeypatch):
    """A 95% interval ending at 0.784505 reads 0.785 in `report`; stored at 4 places (0.7845) it rendered 0.784."""
    entry = {"settings": "", "model": "m", "params": 1, "runs": 6, "val_ua": 0.7747396, "train_seconds": 10.0,
             "test_ua": {"mean": 0.73828125, "sd": 0.0600598, "ci95": [0.6985677, 0.7845052]}}
    monkeypatch.setattr(leaderboard, "read_runs", lambda folder: [])
    monkeypatch.setattr(leaderboard, "aggregate", lambda runs: [entry])
    row = leaderboard.row_from_sweep("sweep", "m", "train hydra.sweep.dir=sweep")
    assert leaderboard.stat_text(row) == "0.738 ± 0.060 [0.699, 0.785]"
    assert float(row["val_ua"]) == pytest.approx(entry["val_ua"], abs=5e-7)


def test_chart_labels_break_long_recipes_at_spaces_and_after_commas():
    label = "model=ensemble model.sweeps=[outputs/multiruns/pretrained_finetune,outputs/multiruns/pretrained_finetune_base]"
    assert leaderboard.tick_label(label) == ("model=ensemble\nmodel.sweeps=[outputs/multiruns/pretrained_finetune,\n"
                                             "outputs/multiruns/pretrained_finetune_base]")
    assert leaderboard.tick_label("experiment=pretrained_frozen model=whisper_base") == "experiment=pretrained_frozen model=whisper_base"
    assert leaderboard.tick_label("a,b c", width=2) == "a,\nb\nc"


def test_the_encoder_table_places_each_row_by_its_model_and_marks_the_rest_not_run():
    row = {"model": "Whisper base, top 2 of 6 layers fine-tuned", "test_ua": "0.7", "test_ua_sd": "0.05",
           "test_ua_ci_low": "0.66", "test_ua_ci_high": "0.74", "val_ua": "0.71", "fit_seconds": "600"}
    table = render_encoders([row, {**row, "model": "Whisper tiny.en, frozen (the model's defaults)"}])
    tiny, base = table.splitlines()[2:]
    assert tiny.count("not run") == 3  # a model's defaults are not the frozen recipe's cell
    assert base.split(" | ")[1:] == ["not run", "0.700 ± 0.050 [0.660, 0.740]; val 0.710; 600 s a fold", "not run |"]


def test_readme_headline_rows_are_the_leaderboards():
    readme = (ROOT / "README.md").read_text()
    for row in read_rows(ROOT / "docs/results/leaderboard.csv"):
        shown = f"{float(row['test_ua']):.3f} ± {float(row['test_ua_sd']):.3f}" in readme
        assert shown == (row["headline"] == "yes"), row["name"]


# Words about how the project was built, not about the product.
BUILD_WORDS = re.compile(r"\bsessions?\b|\blent\b|\bthe seeds\b|\bseeds'|\bissues? ?#?\d+|(?<![\w&/#])#\d{1,3}\b",
                         re.IGNORECASE)


def tracked(*patterns: str) -> list[Path]:
    listed = subprocess.run(["git", "ls-files", *patterns], cwd=ROOT, capture_output=True, text=True).stdout
    return [ROOT / line for line in listed.splitlines() if (ROOT / line).is_file()]


def python_prose(path: Path) -> str:
    """A module's comments and docstrings."""
    parts = []
    for token in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
        if token.type == tokenize.COMMENT or (token.type == tokenize.STRING and token.string.startswith(('"""', "'''"))):
            parts.append(token.string)
    return "\n".join(parts)


def test_docs_configs_and_comments_speak_of_the_product():
    files = tracked("*.md", "*.cff", "conf", "experiments", "emotion_lightning", "benchmarks")
    assert len(files) > 100, "git ls-files listed too few files"
    found = []
    for path in files:
        if path.suffix == ".py":
            text = python_prose(path)
        elif path.suffix in (".md", ".yaml", ".cff"):
            text = path.read_text()
        else:
            continue
        for line in text.splitlines():
            if BUILD_WORDS.search(line):
                found.append(f"{path.relative_to(ROOT)}: {line.strip()[:120]}")
    assert not found, "\n".join(found)


def test_the_word_check_catches_build_words():
    for text in ["since session 8", "no GPU was lent", "the seeds' table", "Issue #15's recipe", "see #14"]:
        assert BUILD_WORDS.search(text), text
    for text in ["an InferenceSession", "seeds 0, 1, 2", "colour #1f77b4", "CUDA 13"]:
        assert not BUILD_WORDS.search(text), text
