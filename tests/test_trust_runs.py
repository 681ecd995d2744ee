"""Results a researcher can trust (issue 13), through the commands: run-dir files, eval's seen-clip check,
resume only of the same run, Lightning's smoke tests, the report over real runs."""

import json
import subprocess
import sys

import pandas as pd
import pytest
import torch

from tests.helpers.training import REPO, run_train

pytestmark = pytest.mark.slow  # every test here runs a command in a subprocess


def common(data_dir, cache):
    return [f"paths.data_dir={data_dir}", f"paths.cache_dir={cache}", "data.batch_size=16", "seed=1"]


def run_eval(*overrides):
    return subprocess.run([sys.executable, "-m", "emotion_lightning.eval", *overrides], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def short_runs(data_dir, tmp_path_factory):
    """A 1-epoch and a 2-epoch ResNet run on the same split (seed 1)."""
    folder = tmp_path_factory.mktemp("trust") / "runs"
    for epochs in (1, 2):
        result = run_train(*common(data_dir, folder.parent / "cache"), f"hydra.run.dir={folder}/epochs{epochs}",
                           f"trainer.max_epochs={epochs}")
        assert result.returncode == 0, result.stderr[-3000:]
    return folder


def test_run_dir_has_split_csv_predictions_csv_and_the_checkpoint_its_clips(short_runs):
    run = short_runs / "epochs2"
    split = pd.read_csv(run / "split.csv")
    assert list(split.columns) == ["file", "corpus", "speaker", "part"]
    assert split["part"].value_counts().to_dict() == {"train": 90, "val": 15, "test": 15}
    predictions = pd.read_csv(run / "predictions.csv")
    metrics = json.loads((run / "metrics.json").read_text())
    assert list(predictions.columns) == ["file", "corpus", "speaker", "true", "predicted",
                                         *[f"p_{c}" for c in metrics["classes"]]]
    assert sorted(predictions["file"]) == sorted(split["file"][split["part"] == "test"])
    assert predictions.filter(like="p_").sum(axis=1).to_numpy() == pytest.approx(1, abs=1e-4)
    assert (predictions["true"] == predictions["predicted"]).mean() == pytest.approx(metrics["test_wa"])
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    for part in ("train", "val"):
        assert sorted(checkpoint["clips"][part]) == sorted(
            "ravdess:" + split["file"][split["part"] == part])
    assert checkpoint["choices"]["split"] == "speaker_independent"


def test_eval_defaults_to_the_checkpoint_split_and_refuses_seen_clips(short_runs, data_dir, tmp_path):
    run = short_runs / "epochs2"
    ckpt = next((run / "checkpoints").glob("epoch*.ckpt"))
    paths = [f"ckpt={ckpt}", f"paths.data_dir={data_dir}", f"paths.cache_dir={short_runs.parent}/cache"]
    own = run_eval(*paths, f"hydra.run.dir={tmp_path}/own")
    assert own.returncode == 0, own.stderr[-3000:]
    metrics = json.loads((tmp_path / "own" / "metrics.json").read_text())
    trained = json.loads((run / "metrics.json").read_text())
    assert metrics["seen_test_clips"] == 0 and metrics["test_ua"] == pytest.approx(trained["test_ua"])
    assert metrics["seed"] == 1 and metrics["split"] == "speaker_independent"

    refused = run_eval(*paths, f"hydra.run.dir={tmp_path}/random", "split=random")
    assert refused.returncode != 0 and not (tmp_path / "random" / "metrics.json").exists()
    assert refused.stderr.startswith("error: ") and "Traceback" not in refused.stderr
    assert "test clips were in the checkpoint's training data" in refused.stderr
    assert "split=random here, split=speaker_independent in the checkpoint" in refused.stderr
    assert "allow_seen_clips=true" in refused.stderr

    allowed = run_eval(*paths, f"hydra.run.dir={tmp_path}/allowed", "split=random", "allow_seen_clips=true")
    assert allowed.returncode == 0, allowed.stderr[-3000:]
    leaked = json.loads((tmp_path / "allowed" / "metrics.json").read_text())
    assert 0 < leaked["seen_test_clips"] <= leaked["clips"]["test"]
    assert leaked["settings"]["seen_test_clips"] == leaked["seen_test_clips"]

    other_seed = run_eval(*paths, f"hydra.run.dir={tmp_path}/seed", "seed=2")
    assert other_seed.returncode != 0 and "seed=2: the split is the checkpoint's own" in other_seed.stderr


def test_eval_part_val_scores_the_clips_that_chose_the_checkpoint(short_runs, data_dir, tmp_path):
    run = short_runs / "epochs2"
    ckpt = next((run / "checkpoints").glob("epoch*.ckpt"))
    result = run_eval(f"ckpt={ckpt}", f"paths.data_dir={data_dir}", f"paths.cache_dir={short_runs.parent}/cache",
                      f"hydra.run.dir={tmp_path}", "part=val")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    split = pd.read_csv(run / "split.csv")
    predictions = pd.read_csv(tmp_path / "predictions.csv")
    assert sorted(predictions["file"]) == sorted(split["file"][split["part"] == "val"])
    # One centre crop per clip, as validation scored them: the checkpoint's own best val UA.
    assert metrics["test_ua"] == pytest.approx(json.loads((run / "metrics.json").read_text())["best_val_ua"], abs=1e-6)
    assert metrics["tested_part"] == "val" and metrics["settings"]["part"] == "val" and metrics["seen_test_clips"] == 0


def test_split_csv_read_back_by_split_file_gives_the_same_partition(short_runs, data_dir, tmp_path):
    run = short_runs / "epochs1"
    ckpt = run / "checkpoints" / "last.ckpt"
    result = run_eval(f"ckpt={ckpt}", f"paths.data_dir={data_dir}", f"paths.cache_dir={short_runs.parent}/cache",
                      f"hydra.run.dir={tmp_path}", "split=file", f"split.path={run}/split.csv")
    assert result.returncode == 0, result.stderr[-3000:]
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "split.csv"), pd.read_csv(run / "split.csv"))
    assert json.loads((tmp_path / "metrics.json").read_text())["seen_test_clips"] == 0


def test_a_restart_with_another_recipe_in_the_same_run_dir_is_refused(short_runs, data_dir):
    run = short_runs / "epochs1"
    kept = {name: (run / name).read_bytes() for name in ("metrics.json", "split.csv", "csv/metrics.csv")}
    result = run_train(*common(data_dir, short_runs.parent / "cache"), f"hydra.run.dir={run}", "trainer.max_epochs=3",
                       "data.batch_size=8")
    assert result.returncode != 0
    assert "not resuming" in result.stderr and "it was written by a run with other settings" in result.stderr
    assert "trainer.max_epochs: 3 here, 1 in the checkpoint" in result.stderr
    assert "data.batch_size: 8 here, 16 in the checkpoint" in result.stderr
    assert "force_resume=true" in result.stderr and "new run dir" in result.stderr
    assert {name: (run / name).read_bytes() for name in kept} == kept  # refused before anything is rewritten


def test_resuming_another_runs_checkpoint_with_other_settings_never_advises_deleting_it(short_runs, data_dir,
                                                                                       tmp_path):
    ckpt = short_runs / "epochs1" / "checkpoints" / "last.ckpt"
    result = run_train(*common(data_dir, short_runs.parent / "cache"), f"hydra.run.dir={tmp_path}/run",
                       "trainer.max_epochs=3", f"ckpt={ckpt}")
    assert result.returncode != 0
    assert f"not resuming ckpt={ckpt}" in result.stderr and "trainer.max_epochs: 3 here" in result.stderr
    assert "leave out ckpt to start fresh" in result.stderr and "delete" not in result.stderr
    assert ckpt.is_file()


def test_best_scratch_runs_are_recorded_as_the_simple_cnn_they_are(data_dir, tmp_path):
    # its model config (simple_cnn_deep) is simple_cnn with a fifth block: recorded under the config group's choice,
    # its runs read as another model than the same network given by overrides, and did not pool with them
    result = run_train(*common(data_dir, tmp_path / "cache"), f"hydra.run.dir={tmp_path}/run", "experiment=best_scratch",
                       "trainer.fast_dev_run=true")
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["model"] == "simple_cnn"


@pytest.mark.parametrize("override", ["trainer.fast_dev_run=true", "+trainer.fast_dev_run=true"])
def test_fast_dev_run_runs_end_to_end_and_tests_the_last_weights(override, data_dir, tmp_path):
    result = run_train(*common(data_dir, tmp_path / "cache"), f"hydra.run.dir={tmp_path}/run", override)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["tested_weights"] == "last" and metrics["settings"]["trainer.fast_dev_run"] is True
    assert metrics["tested_clips"] == 15 and (tmp_path / "run" / "predictions.csv").is_file()


def test_a_run_shortened_with_limit_batches_runs_end_to_end(data_dir, tmp_path):
    result = run_train(*common(data_dir, tmp_path / "cache"), f"hydra.run.dir={tmp_path}/run", "trainer.max_epochs=1",
                       "trainer.limit_train_batches=2", "trainer.limit_val_batches=2")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["tested_weights"] in ("best", "last") and metrics["clips"]["test"] == 15


def test_report_over_a_1_and_a_2_epoch_run_gives_two_rows_and_pairs_them(short_runs, tmp_path):
    result = subprocess.run([sys.executable, "-m", "emotion_lightning.report", str(short_runs), "--out", str(tmp_path)],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert sorted(summary["settings"]) == ["trainer.max_epochs=1", "trainer.max_epochs=2"]
    assert list(summary["runs"]) == [1, 1] and summary["test_ua_sd"].isna().all()
    comparisons = pd.read_csv(tmp_path / "comparisons.csv")
    assert len(comparisons) == 1 and comparisons["clips"][0] == 15
    page = (tmp_path / "report.html").read_text()
    assert "Learning curves" in page and "Held-out speakers" in page and "Paired comparisons" in page
