"""An installed copy works like a checkout: the wheel that `pip install .` builds carries conf/ and experiments/, and
its commands run away from any checkout, with data, cache and outputs under the current directory."""

import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.helpers.audio import write_clip
from tests.helpers.training import REPO

# What the wheel is built from (the source distribution's files): the rest of a checkout stays behind, so the build
# writes nothing (build/, *.egg-info) into this tree.
SOURCES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "LICENSE", "emotion_lightning", "conf", "experiments")


def run(*args, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run([str(arg) for arg in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh virtual environment with the wheel of this tree installed; its dependencies are this interpreter's
    (nothing is downloaded). Returns its bin/ folder."""
    root = tmp_path_factory.mktemp("installed")
    source = root / "source"
    source.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, source / name)
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", root / "dist",
        source, cwd=root)
    (wheel,) = (root / "dist").glob("emotion_lightning-*.whl")
    assert "emotion_lightning/conf/experiment/best_scratch.yaml" in zipfile.ZipFile(wheel).namelist()
    venv = root / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", venv, cwd=root)
    if sys.prefix != sys.base_prefix:  # inside a virtual environment, --system-site-packages reaches only the base's
        (site_dir,) = (venv / "lib").glob("python*/site-packages")
        (site_dir / "outer_environment.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    run(sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "--no-deps", "--no-index",
        "--force-reinstall", wheel, cwd=root)  # --force-reinstall: this interpreter may hold an editable copy
    return venv / "bin"


@pytest.fixture
def elsewhere(tmp_path) -> tuple[Path, dict]:
    """A working folder outside any checkout, and an environment without PYTHONPATH or EMOTION_* variables."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("PYTHONPATH", "HYDRA_FULL_ERROR") and not key.startswith("EMOTION_")}
    return tmp_path, env


@pytest.mark.slow  # builds and installs a wheel, then runs two commands in subprocesses
def test_the_installed_copy_composes_an_experiment_with_folders_under_the_current_directory(installed, elsewhere):
    cwd, env = elsewhere
    imported = run(installed / "python", "-c", "import emotion_lightning; print(emotion_lightning.__file__)",
                   cwd=cwd, env=env).stdout.strip()
    assert imported.startswith(str(installed.parent / "lib")), imported  # the venv's copy, not the source tree
    shown = run(installed / "emotion-lightning", "train", "--cfg", "job", "--resolve", "experiment=best_scratch",
                cwd=cwd, env=env).stdout
    assert "label_smoothing: 0.1" in shown and "simple_cnn_deep" in shown  # the experiment's own settings
    for name in ("data", "cache", "outputs"):
        assert f"{name}_dir: {cwd}/{name}\n" in shown


@pytest.mark.slow  # trains the fixture checkpoint and builds a wheel
def test_the_installed_copy_predicts_a_clip(installed, elsewhere, trained_checkpoint):
    cwd, env = elsewhere
    write_clip(cwd / "clip.wav", "angry", seconds=1.0)
    run(installed / "emotion-lightning", "predict", f"ckpt={trained_checkpoint}", "audio=clip.wav", "vad=none",
        "progress=false", cwd=cwd, env=env)
    report = json.loads((cwd / "predictions.json").read_text())
    assert report["files"] == 1 and report["failed"] == 0 and report["predictions"][0]["emotion"] is not None
    assert sorted(path.name for path in cwd.iterdir()) == ["clip.wav", "predictions.json"]
