"""The main job end to end, as a user runs it: `python -m emotion_lightning.train ...` in a subprocess."""

import csv
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tests.helpers.training import REPO, run_train

pytestmark = pytest.mark.slow  # every test here runs a command in a subprocess


@pytest.fixture(scope="module")
def fixture_run(data_dir, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    result = run_train(f"paths.data_dir={data_dir}", f"paths.cache_dir={run_dir.parent}/cache",
                       f"hydra.run.dir={run_dir}", "trainer.max_epochs=4", "data.batch_size=16", "seed=1")
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def test_run_dir_holds_metrics_plot_checkpoints_and_split_summary(fixture_run):
    metrics = json.loads((fixture_run / "metrics.json").read_text())
    for key in ("test_ua", "test_wa", "test_macro_f1", "classes", "confusion_matrix", "per_class", "model",
                "params", "data", "split", "seed", "train_seconds", "best_epoch"):
        assert key in metrics, key
    assert (metrics["model"], metrics["data"], metrics["split"], metrics["seed"]) == (
        "resnet", "ravdess", "speaker_independent", 1)
    assert metrics["params"] == 174_840
    assert 1 <= metrics["best_epoch"] <= 4
    confusion = torch.tensor(metrics["confusion_matrix"])
    assert confusion.shape == (8, 8) and confusion.sum() == metrics["clips"]["test"] == 15  # one held-out actor
    assert metrics["test_wa"] == pytest.approx(confusion.diag().sum().item() / confusion.sum().item())
    assert (fixture_run / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    assert len(list((fixture_run / "checkpoints").glob("epoch*.ckpt"))) == 1
    with open(fixture_run / "split_summary.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert sum(int(r["train"]) for r in rows) == 6 * 15 and sum(int(r["test"]) for r in rows) == 15


def test_training_loss_falls(fixture_run):
    with open(fixture_run / "csv" / "metrics.csv") as handle:
        losses = [float(r["train_loss"]) for r in csv.DictReader(handle) if r.get("train_loss")]
    # the loop trains and logs every epoch; how far the loss falls in 4 epochs depends on the machine's numerics
    # (whether networks can learn is tested on one batch, test_metrics_and_model.py)
    assert len(losses) == 4 and all(map(math.isfinite, losses)) and len(set(losses)) == 4


def test_checkpoint_carries_what_a_predictor_needs(fixture_run):
    checkpoint = torch.load(fixture_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert checkpoint["classes"] == ["neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"]
    assert checkpoint["run_config"]["model"]["network"]["_target_"] == "emotion_lightning.models.resnet.ResNet"
    assert checkpoint["run_config"]["audio"] == {"sample_rate": 16000, "clip_seconds": 3.0}


def test_main_job_without_data_says_where_to_put_it(tmp_path):
    env = {**os.environ, "EMOTION_DATA_DIR": str(tmp_path / "empty")}
    result = run_train(f"hydra.run.dir={tmp_path}/run", env=env, timeout=300)
    assert result.returncode != 0
    assert "No audio found for any configured corpus" in result.stderr
    assert "zenodo.org/records/1188976" in result.stderr and "EMOTION_DATA_DIR" in result.stderr
    assert f"emotion-lightning download ravdess paths.data_dir={tmp_path / 'empty'}" in result.stderr
    assert "\nerror: No audio found" in "\n" + result.stderr and "Traceback" not in result.stderr  # one message


def run_eval(*overrides, timeout=300):
    return subprocess.run([sys.executable, "-m", "emotion_lightning.eval", *overrides], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def test_eval_reproduces_the_test_metrics_and_adds_breakdowns(fixture_run, data_dir, tmp_path):
    trained = json.loads((fixture_run / "metrics.json").read_text())
    best = next((fixture_run / "checkpoints").glob("epoch*.ckpt"))
    result = run_eval(f"ckpt={best}", f"paths.data_dir={data_dir}", f"paths.cache_dir={fixture_run.parent}/cache",
                      f"hydra.run.dir={tmp_path}", "seed=1")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["test_ua"] == pytest.approx(trained["test_ua"])
    assert metrics["confusion_matrix"] == trained["confusion_matrix"]
    held_out = trained["test_speakers"]
    assert sorted(metrics["breakdowns"]["speaker"]) == held_out
    assert set(metrics["breakdowns"]["intensity"]) == {"normal", "strong"}
    assert sum(v["clips"] for v in metrics["breakdowns"]["gender"].values()) == 15


def test_eval_cross_corpus_on_every_tess_clip(fixture_run, data_dir, tmp_path):
    best = next((fixture_run / "checkpoints").glob("epoch*.ckpt"))
    result = run_eval(f"ckpt={best}", f"paths.data_dir={data_dir}", f"paths.cache_dir={fixture_run.parent}/cache",
                      f"hydra.run.dir={tmp_path}", "data=combined", "split=cross_corpus",
                      "split.train_corpora=[ravdess]", "split.test_corpora=[tess]")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["test_corpora"] == ["tess"] and metrics["clips"]["test"] == 70
    assert metrics["classes"] == json.loads((fixture_run / "metrics.json").read_text())["classes"]
    assert sorted(metrics["breakdowns"]["speaker"]) == ["tess:OAF", "tess:YAF"]


def test_eval_on_another_corpus_counts_as_trained_on_the_checkpoints_corpus(fixture_run, data_dir, tmp_path):
    from emotion_lightning.evaluation.aggregate import cross_corpus_matrix, read_runs

    best = next((fixture_run / "checkpoints").glob("epoch*.ckpt"))
    result = run_eval(f"ckpt={best}", f"paths.data_dir={data_dir}", f"paths.cache_dir={fixture_run.parent}/cache",
                      f"hydra.run.dir={tmp_path}/eval", "data=tess", "split=random")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    # the split's own train part is TESS; the checkpoint learned RAVDESS, so this is RAVDESS -> TESS
    assert metrics["train_corpora"] == ["ravdess"] and metrics["test_corpora"] == ["tess"]
    matrix = cross_corpus_matrix(read_runs(tmp_path))
    assert matrix.loc["resnet: ravdess", "tess"] == pytest.approx(metrics["test_ua"]) and matrix.shape == (1, 1)


def test_eval_of_a_missing_checkpoint_says_so(tmp_path):
    result = run_eval(f"ckpt={tmp_path}/nope.ckpt", f"hydra.run.dir={tmp_path}")
    assert result.returncode != 0 and "nope.ckpt does not exist" in result.stderr


def test_svm_runs_through_the_same_entry_point(data_dir, fixture_run, tmp_path):
    result = run_train("model=svm", f"paths.data_dir={data_dir}", f"paths.cache_dir={fixture_run.parent}/cache",
                       f"hydra.run.dir={tmp_path}", "seed=1")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    trained = json.loads((fixture_run / "metrics.json").read_text())
    assert metrics["model"] == "svm" and metrics["test_speakers"] == trained["test_speakers"]
    assert metrics["test_ua"] > 0.9  # one pitch per emotion in the fixture


def test_ensemble_of_checkpoints_is_tested_like_a_model(data_dir, fixture_run, tmp_path):
    from emotion_lightning.calibrate import calibrate_sweep
    from emotion_lightning.evaluation.calibration import fit_temperature

    checkpoints = sorted(str(p) for p in (fixture_run / "checkpoints").glob("*.ckpt") if not p.is_symlink())  # best, last
    member_temperatures = [torch.load(path, weights_only=False)["temperature"] for path in checkpoints]
    (tmp_path / "test_logits.csv").write_text("left by calibrate from an earlier build in this folder\n")
    result = run_train("model=ensemble", f"model.checkpoints=[{','.join(checkpoints)}]", f"paths.data_dir={data_dir}",
                       f"paths.cache_dir={fixture_run.parent}/cache", f"hydra.run.dir={tmp_path}", "seed=1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (tmp_path / "test_logits.csv").exists()  # stale once the run is built again
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["model"] == "ensemble" and metrics["params"] == 2 * 174_840
    assert metrics["best_epoch"] is None and sum(map(sum, metrics["confusion_matrix"])) == 15
    # its own temperature, fitted on the averaged probabilities of the validation clips, which it keeps
    classes, split = metrics["classes"], pd.read_csv(tmp_path / "split.csv")
    val = pd.read_csv(tmp_path / "val_logits.csv")
    assert sorted(val["file"]) == sorted(split.loc[split["part"] == "val", "file"]) and len(val) == metrics["clips"]["val"]
    temperature = fit_temperature(val[[f"logit_{name}" for name in classes]].to_numpy(), val["true"].map(classes.index))
    assert metrics["temperature_fitted_on"] == "val"
    assert metrics["calibration"]["temperature"] == pytest.approx(temperature, rel=1e-4)
    # so `calibrate` pools an ensemble sweep's runs without a checkpoint to score them with
    for job in (0, 1):
        shutil.copytree(tmp_path, tmp_path / "sweep" / f"{job}_ensemble", ignore=shutil.ignore_patterns("sweep"))
    printed = calibrate_sweep(tmp_path / "sweep")
    calibrated = json.loads((tmp_path / "sweep" / "0_ensemble" / "metrics.json").read_text())
    assert calibrated["calibration"]["temperature"] == pytest.approx(temperature, rel=1e-4)  # the same clips twice
    assert calibrated["calibration"]["run_temperature"] == metrics["calibration"]["temperature"]
    assert "sweep's 2 runs" in calibrated["temperature_fitted_on"] and "2 runs" in printed
    assert calibrated["test_ua"] == metrics["test_ua"]
    # the same temperature again: the same probabilities (applied once, to the logits as first reported)
    columns = [f"p_{name}" for name in classes]
    np.testing.assert_allclose(pd.read_csv(tmp_path / "sweep" / "0_ensemble" / "predictions.csv")[columns],
                               pd.read_csv(tmp_path / "predictions.csv")[columns], atol=1e-4)
    # the members' own temperatures are theirs: neither the ensemble's fit nor its sweep's touched them
    assert [torch.load(path, weights_only=False)["temperature"] for path in checkpoints] == member_temperatures


def test_an_ensemble_of_members_that_saw_its_test_speakers_is_refused(data_dir, fixture_run, tmp_path):
    # the members trained with seed=1; seed=2 draws other test speakers, some of them the members' training ones
    checkpoints = sorted(str(p) for p in (fixture_run / "checkpoints").glob("*.ckpt") if not p.is_symlink())  # best, last
    result = run_train("model=ensemble", f"model.checkpoints=[{','.join(checkpoints)}]", f"paths.data_dir={data_dir}",
                       f"paths.cache_dir={fixture_run.parent}/cache", f"hydra.run.dir={tmp_path}", "seed=2")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "model.checkpoints[0] trained or validated on" in result.stderr and "would be inflated" in result.stderr
    assert not (tmp_path / "metrics.json").exists()


def test_an_ensemble_finds_its_members_in_a_sweep_dir(data_dir, fixture_run, tmp_path):
    for seed in (0, 1):  # two runs of the same split, as a sweep over seeds leaves them
        shutil.copytree(fixture_run, tmp_path / "sweep" / f"{seed}_resnet", ignore=shutil.ignore_patterns("csv"))
    result = run_train("model=ensemble", f"model.sweeps=[{tmp_path}/sweep]", f"paths.data_dir={data_dir}",
                       f"paths.cache_dir={fixture_run.parent}/cache", f"hydra.run.dir={tmp_path}/ensemble", "seed=1")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "ensemble" / "metrics.json").read_text())
    tested = json.loads((fixture_run / "metrics.json").read_text())["tested_checkpoint"]
    assert tested.startswith("checkpoints/epoch")
    assert metrics["member_checkpoints"] == [f"{tmp_path}/sweep/{seed}_resnet/{tested}" for seed in (0, 1)]
    assert metrics["settings"]["model.sweeps"] == [f"{tmp_path}/sweep"] and metrics["params"] == 2 * 174_840


def test_a_failed_job_of_an_eval_sweep_is_recorded_for_the_report(fixture_run, data_dir, tmp_path):
    from emotion_lightning.evaluation.unfinished import read_unfinished

    best = next((fixture_run / "checkpoints").glob("epoch*.ckpt"))
    result = run_eval("-m", f"ckpt={best},{tmp_path}/nope.ckpt", f"paths.data_dir={data_dir}",
                      f"paths.cache_dir={fixture_run.parent}/cache", f"hydra.sweep.dir={tmp_path}/sweep")
    assert result.returncode != 0 and "nope.ckpt does not exist" in result.stderr
    failed = read_unfinished(tmp_path / "sweep")  # its run dir used to be deleted: the report said 1 finished, 0 failed
    assert list(failed["status"]) == ["failed"] and "nope.ckpt does not exist" in failed["error"][0]
    assert len(list((tmp_path / "sweep").rglob("metrics.json"))) == 1


def test_eval_sweep_over_conditions_gives_the_robustness_table_and_snr_plot(fixture_run, data_dir, tmp_path):
    from emotion_lightning.aggregate import main as aggregate_main

    best = next((fixture_run / "checkpoints").glob("epoch*.ckpt"))
    common = [f"ckpt={best}", f"paths.data_dir={data_dir}", f"paths.cache_dir={fixture_run.parent}/cache",
              "seed=1"]
    for name, sweep in (("conditions", "robustness=clean,volume,sampling"), ("snr", "robustness=noise")):
        extra = ["robustness.snr_db=0,30"] if name == "snr" else []
        result = run_eval("-m", *common, sweep, *extra, f"hydra.sweep.dir={tmp_path}/{name}")
        assert result.returncode == 0, result.stderr[-3000:]
    paths = {json.loads(p.read_text())["condition"]: p.parent for p in tmp_path.rglob("metrics.json")}
    runs = {condition: json.loads((path / "metrics.json").read_text()) for condition, path in paths.items()}
    assert sorted(runs) == ["clean", "gain_20dB", "noise_white_0dB", "noise_white_30dB", "resample_8000Hz"]
    assert runs["clean"]["test_ua"] == pytest.approx(json.loads((fixture_run / "metrics.json").read_text())["test_ua"])
    assert runs["noise_white_0dB"]["snr_db"] == 0 and runs["clean"]["snr_db"] is None
    assert all(run["augment"] == "none" for run in runs.values())
    # every condition reached the audio: each changed the model's probabilities on the same clips (how much a score
    # falls depends on how well 4 epochs trained the fixture model, so no ordering of scores is asserted)
    probabilities = {condition: pd.read_csv(path / "predictions.csv") for condition, path in paths.items()}
    assert all(table["file"].equals(probabilities["clean"]["file"]) for table in probabilities.values())
    columns = [column for column in probabilities["clean"] if column.startswith("p_")]
    for condition in sorted(set(runs) - {"clean"}):
        difference = (probabilities[condition][columns] - probabilities["clean"][columns]).abs().to_numpy().max()
        assert difference > 0, condition
    assert not probabilities["noise_white_0dB"][columns].equals(probabilities["noise_white_30dB"][columns])

    aggregate_main([str(tmp_path)])
    table = (tmp_path / "robustness.md").read_text().splitlines()
    header = [cell.strip() for cell in table[2].split("|")[1:-1]]
    assert header[0] == "model \\ condition" and header[1] == "clean" and len(header) == 6
    values = [cell.strip() for cell in table[4].split("|")[1:-1]]
    assert values[0] == "resnet"
    assert dict(zip(header[1:], map(float, values[1:]))) == {
        condition: pytest.approx(run["test_ua"], abs=1e-3) for condition, run in runs.items()}
    assert (tmp_path / "ua_vs_snr.png").read_bytes()[:4] == b"\x89PNG"
