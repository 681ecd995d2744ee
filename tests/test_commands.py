"""The project as a user meets it: the `emotion-lightning` command, per-command help, file permissions, paths that do
not depend on the current directory, expected errors as one message, quiet third-party libraries."""

import logging
import os
import stat
import subprocess
import sys
import tomllib
import warnings

import pytest

from emotion_lightning import cli
from emotion_lightning.data.atomic import atomic_path, temporary_dir, write_text
from emotion_lightning.data.errors import MissingFileError, SettingError, UsageError
from emotion_lightning.training import commands
from tests.helpers.training import REPO


def run_command(*args, cwd, env=None, timeout=300):
    """`emotion-lightning ARGS` through the dispatcher (what the console script calls), from `cwd`."""
    env = {**os.environ, **(env or {}), "PYTHONPATH": str(REPO)}
    env.pop("HYDRA_FULL_ERROR", None) if "HYDRA_FULL_ERROR" not in (env or {}) else None
    return subprocess.run([sys.executable, "-c", "from emotion_lightning.cli import main; main()", *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=timeout)


# The command ------------------------------------------------------------------------------------------------------

def test_pyproject_installs_the_emotion_lightning_command():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"emotion-lightning": "emotion_lightning.cli:main"}


def test_help_lists_every_command(capsys):
    cli.main(["--help"])
    out = capsys.readouterr().out
    for name in ("train", "eval", "predict", "export", "serve", "report", "aggregate", "download"):
        assert f"\n  {name} " in out
        assert (REPO / "emotion_lightning" / f"{name}.py").is_file()


def test_an_unknown_command_is_named_with_the_choices(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["trian"])
    assert exit_.value.code == 2 and "unknown command 'trian'" in capsys.readouterr().err


def test_download_takes_the_corpus_as_a_bare_name():
    from emotion_lightning.download import corpus_shorthand

    assert corpus_shorthand(["ravdess", "workers=2"]) == ["corpus=ravdess", "workers=2"]
    assert corpus_shorthand(["corpus=all"]) == ["corpus=all"] and corpus_shorthand([]) == []


@pytest.mark.slow  # runs the command in subprocesses (seconds each)
@pytest.mark.parametrize("name, own, foreign", [
    ("predict", ["audio: ???", "output: predictions.json", "backend: torch", "window_seconds"], ["model:", "trainer"]),
    ("export", ["format: onnx", "opset: 18", "ckpt: ???"], ["model:", "trainer", "backend"]),
    ("serve", ["port: 8000", "max_upload_mb", "backend: torch"], ["model:", "trainer", "audio:"]),
])
def test_help_of_the_inference_commands_shows_their_own_settings(name, own, foreign, tmp_path):
    result = run_command(name, "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"emotion-lightning {name}:")
    for text in own:
        assert text in result.stdout
    for text in foreign:
        assert text not in result.stdout, f"{name} --help shows {text!r}"
    assert "Configuration groups" not in result.stdout


@pytest.mark.slow  # runs the command in subprocesses (seconds each)
@pytest.mark.parametrize("name, groups, foreign", [
    ("train", ["data: combined, crema_d, ravdess, tess", "model: densenet,", "experiment: best_pretrained,",
               "experiment: robustness/lstm,"], ["corpus:", "scheduler:"]),
    ("eval", ["data: combined, crema_d, ravdess, tess", "split: cross_corpus,", "robustness: clean,"],
     ["model:", "experiment:"]),
])
def test_help_of_train_and_eval_lists_their_public_config_groups(name, groups, foreign, tmp_path):
    """Building blocks (names starting with `_`) and groups the command does not compose are left out."""
    result = run_command(name, "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"emotion-lightning {name}:") and "powered by Hydra" not in result.stdout
    listed = result.stdout.split("== Config groups")[1].split("== Settings")[0]
    for text in groups:
        assert text in listed
    for text in foreign:
        assert text not in listed
    options = [option.strip() for line in listed.splitlines() if ":" in line for option in line.split(":")[1].split(",")]
    assert options and not [option for option in options if option.startswith("_") or "/_" in option]


@pytest.mark.parametrize("argv, problem", [
    (["--cfg", "job", "-m", "seed=0,1"], "--cfg job shows one job and -m runs a sweep; drop -m"),
    (["-m", "--info"], "--info shows one job and -m runs a sweep; drop -m"),
    (["--cfg", "job", "--run"], "use one of --run, --multirun (-m), --cfg, --info and --shell-completion at a time"),
    (["ckpt_path=runs/last.ckpt", "part=val"], "ckpt_path: every command takes its checkpoint as ckpt= "
                                               "(ckpt=runs/last.ckpt)"),
    (["+ckpt_path=last"], "ckpt_path: every command takes its checkpoint as ckpt= (ckpt=last)"),
])
def test_command_lines_that_hydra_would_answer_with_a_traceback_are_named(argv, problem):
    assert commands.command_line_problem(argv).startswith(problem)


def test_a_usual_command_line_has_no_problem():
    for argv in (["--cfg", "job", "seed=0"], ["-m", "seed=0,1"], ["--help"], ["ckpt=last", "hydra.run.dir=x"], []):
        assert commands.command_line_problem(argv) is None


@pytest.mark.slow  # runs the command in subprocesses (seconds each)
@pytest.mark.parametrize("args", [("train", "--cfg", "job", "-m", "seed=0,1"), ("eval", "ckpt_path=x.ckpt"),
                                  ("predict", "-m", "--cfg", "job", "ckpt=x.ckpt", "audio=a.wav")])
def test_a_refused_command_line_is_one_line_without_traceback(args, tmp_path):
    result = run_command(*args, cwd=tmp_path)
    assert result.returncode == (2 if args[0] == "predict" else 1)  # predict: nothing could run
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1 and result.stdout == ""
    assert list(tmp_path.iterdir()) == []


# Files and paths --------------------------------------------------------------------------------------------------

@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_written_files_get_the_usual_permissions_not_0600(tmp_path, umask_022):
    write_text(tmp_path / "predictions.json", "{}")
    with atomic_path(tmp_path / "model.onnx") as temporary:
        temporary.write_bytes(b"x")
    folder = temporary_dir(tmp_path, ".unpack-")
    assert stat.S_IMODE((tmp_path / "predictions.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "model.onnx").stat().st_mode) == 0o644
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755
    assert sorted(p.name for p in tmp_path.iterdir()) == [".unpack-" + folder.name[len(".unpack-"):], "model.onnx",
                                                          "predictions.json"]  # no temporary left behind


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    write_text(tmp_path / "metrics.json", "old")
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "metrics.json") as temporary:
            temporary.write_text("half")
            raise RuntimeError("killed")
    assert (tmp_path / "metrics.json").read_text() == "old" and len(list(tmp_path.iterdir())) == 1


def test_a_killed_attempts_checkpoint_temporaries_are_swept_at_the_next_save(tmp_path):
    from emotion_lightning.training.checkpoints import AtomicCheckpointIO

    stale = tmp_path / ".last.ckpt.0a1b2c3d.tmp"  # what SIGKILL during a save leaves: never renamed, never removed
    stale.write_bytes(b"x" * 1000)
    other = tmp_path / ".metrics.json.0a1b2c3d.tmp"  # not a checkpoint's: left alone
    other.write_text("{}")
    AtomicCheckpointIO().save_checkpoint({"epoch": 1}, tmp_path / "epoch001.ckpt")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".metrics.json.0a1b2c3d.tmp", "epoch001.ckpt"]


def test_default_folders_are_under_the_project_root_whatever_the_cwd(tmp_path, monkeypatch):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    import emotion_lightning  # noqa: F401  (registers the resolvers)

    monkeypatch.chdir(tmp_path)
    for name in ("EMOTION_ROOT_DIR", "EMOTION_DATA_DIR", "EMOTION_CACHE_DIR", "EMOTION_OUTPUTS_DIR", "EMOTION_MODELS_DIR"):
        monkeypatch.delenv(name, raising=False)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            cfg = compose("train", return_hydra_config=True)
            HydraConfig.instance().set_config(cfg)
            paths = cfg.paths
            assert (paths.root_dir, paths.data_dir, paths.cache_dir, paths.outputs_dir) == (
                str(REPO), f"{REPO}/data", f"{REPO}/cache", f"{REPO}/outputs")
            assert cfg.hydra.run.dir.startswith(f"{REPO}/outputs/runs/")
            assert cfg.hydra.sweep.dir.startswith(f"{REPO}/outputs/multiruns/")
            monkeypatch.setenv("EMOTION_OUTPUTS_DIR", str(tmp_path / "elsewhere"))
            cfg = compose("train", return_hydra_config=True)
            HydraConfig.instance().set_config(cfg)
            assert cfg.hydra.run.dir.startswith(f"{tmp_path}/elsewhere/runs/")
    finally:
        GlobalHydra.instance().clear()
        HydraConfig.instance().cfg = None


def test_an_installed_copy_reads_its_own_conf_and_defaults_folders_to_the_current_directory(tmp_path, monkeypatch):
    from emotion_lightning.training import resolvers

    assert (resolvers.config_dir(), resolvers.project_root()) == (str(REPO / "conf"), str(REPO))  # this checkout
    package = tmp_path / "site-packages" / "emotion_lightning"
    (package / "conf").mkdir(parents=True)  # where the wheel puts conf/ (setup.py)
    monkeypatch.setattr(resolvers, "PACKAGE", package)
    monkeypatch.chdir(tmp_path)
    assert (resolvers.config_dir(), resolvers.project_root()) == (str(package / "conf"), str(tmp_path))


# Expected errors --------------------------------------------------------------------------------------------------

def test_expected_errors_keep_their_builtin_types():
    assert issubclass(SettingError, ValueError) and issubclass(MissingFileError, FileNotFoundError)
    from emotion_lightning.data.datamodule import DataNotFoundError
    from emotion_lightning.data.download import DownloadError

    assert issubclass(DataNotFoundError, UsageError) and issubclass(DownloadError, UsageError)


def test_command_turns_a_usage_error_into_one_message(capsys, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as exit_:
        with commands.command():
            raise MissingFileError("checkpoint nope.ckpt does not exist; pass the .ckpt in a run dir's checkpoints/")
    assert exit_.value.code == 1
    assert capsys.readouterr().err == "error: checkpoint nope.ckpt does not exist; pass the .ckpt in a run dir's checkpoints/\n"


def test_command_keeps_tracebacks_for_bugs_and_with_hydra_full_error(monkeypatch):
    with pytest.raises(KeyError):
        with commands.command():
            raise KeyError("a bug")
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(SettingError):
        with commands.command():
            raise SettingError("device='tpu'; use cpu, cuda or auto")


def test_only_a_run_dir_with_nothing_but_hydra_files_is_removed(tmp_path):
    empty, kept = tmp_path / "empty", tmp_path / "kept"
    for run_dir in (empty, kept):
        (run_dir / ".hydra").mkdir(parents=True)
        (run_dir / "eval.log").write_text("")
    (kept / "failure.json").write_text("{}")
    assert commands.remove_if_only_hydra_files(empty) and not empty.exists()
    assert not commands.remove_if_only_hydra_files(kept) and kept.is_dir()
    assert not commands.remove_if_only_hydra_files(tmp_path)  # no .hydra/: not a run dir (predict writes to .)


def test_lightning_tips_and_exporter_warnings_are_silenced(caplog):
    from lightning.pytorch.utilities.rank_zero import rank_zero_info

    commands.quiet_third_party()
    with caplog.at_level(logging.INFO):
        rank_zero_info("💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger]")
        rank_zero_info("GPU available: False")
        logging.getLogger("torch.onnx._internal.exporter._registration").warning("torchvision is not installed.")
        logging.getLogger("onnxscript.optimizer").info("Removed 137 unused nodes")
    assert "Tip" not in caplog.text and "torchvision" not in caplog.text and "unused nodes" not in caplog.text
    assert "GPU available" in caplog.text
    with warnings.catch_warnings(record=True) as caught:
        commands.quiet_third_party()
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated", FutureWarning)
    assert not caught


def test_wandb_goes_online_the_way_its_own_hint_says(monkeypatch):
    from emotion_lightning.training.resolvers import wandb_offline

    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert wandb_offline() is True
    monkeypatch.setenv("WANDB_MODE", "online")
    assert wandb_offline() is False


@pytest.mark.slow  # runs the command in subprocesses (seconds each)
def test_eval_of_a_missing_checkpoint_from_another_cwd(tmp_path):
    """One line, status 1, no traceback; nothing written into the cwd and no empty run dir under outputs/."""
    outputs = tmp_path / "outputs"
    result = run_command("eval", f"ckpt={tmp_path}/nope.ckpt", cwd=tmp_path,
                         env={"EMOTION_OUTPUTS_DIR": str(outputs)})
    assert result.returncode == 1
    assert result.stderr == f"error: checkpoint {tmp_path}/nope.ckpt does not exist; pass the .ckpt in a run dir's checkpoints/\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outputs"] and not list(outputs.rglob("eval.log"))
    full = run_command("eval", f"ckpt={tmp_path}/nope.ckpt", cwd=tmp_path,
                       env={"EMOTION_OUTPUTS_DIR": str(outputs), "HYDRA_FULL_ERROR": "1"})
    assert full.returncode != 0 and "Traceback" in full.stderr and "MissingFileError" in full.stderr


@pytest.mark.slow  # runs the command in a subprocess (seconds)
def test_a_monitor_where_lower_is_better_is_refused(tmp_path):
    # checkpointing, early stopping and ReduceLROnPlateau maximise the monitor: val_loss would keep the worst epoch
    result = run_command("train", "monitor=val_loss", f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().endswith("error: monitor=val_loss; use a validation score where higher is better: "
                                          "val_ua, val_wa, val_macro_f1")


@pytest.mark.slow  # runs the command in a subprocess (seconds)
def test_eval_names_a_split_setting_given_without_its_split(tmp_path):
    """`split.fold=1` alone: Hydra would say `Key 'split' is not in struct` and suggest `+split.fold=1`."""
    result = run_command("eval", f"ckpt={tmp_path}/any.ckpt", "split.fold=1", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr and "not in struct" not in result.stderr
    assert result.stderr.startswith("error: split.fold: eval tests on the checkpoint's own split")
    assert "split=speaker_kfold split.fold=1" in result.stderr and list(tmp_path.iterdir()) == []
    chosen = run_command("eval", f"ckpt={tmp_path}/any.ckpt", "split=speaker_kfold", "split.fold=1", cwd=tmp_path,
                         env={"EMOTION_OUTPUTS_DIR": str(tmp_path / "outputs")})
    assert "does not exist" in chosen.stderr  # composed: it got as far as the missing checkpoint


def test_predict_with_a_missing_checkpoint_is_one_message_and_status_2(tmp_path):
    """Nothing can run: predict's documented status 2, the checkpoint named, nothing written."""
    result = run_command("predict", f"ckpt={tmp_path}/nope.ckpt", f"audio={tmp_path}/missing.wav", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: checkpoint ") and "nope.ckpt does not exist" in result.stderr
    assert list(tmp_path.iterdir()) == []  # no predictions.json, no outputs/
