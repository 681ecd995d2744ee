"""Results a researcher can trust (issue 13), the parts that need no training: run identity and grouping,
split.csv round trips, McNemar and the paired bootstrap, the report's tables and page."""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from emotion_lightning.data.corpora import Ravdess
from emotion_lightning.data.datamodule import EmotionDataModule
from emotion_lightning.data.splits import FileSplit, SpeakerIndependentSplit
from emotion_lightning.data.taxonomy import EMOTIONS
from emotion_lightning.evaluation.aggregate import aggregate, markdown_table, read_runs
from emotion_lightning.evaluation.identity import (comparable, differences, identity, member_identities,
                                                   result_settings)
from emotion_lightning.evaluation.metrics import confusion_matrix, metrics_from_confusion, resampled_ua
from emotion_lightning.evaluation.paired import compare, mcnemar_exact, paired_comparisons
from emotion_lightning.evaluation.report import build_report, without_shared_fields
from tests.helpers.configs import emotion_map

CLASSES = ["neutral", "happy", "sad", "angry"]


def test_settings_added_later_at_their_neutral_value_keep_older_runs_the_same_configuration():
    before = {"seed": 0, "model": {"name": "whisper", "network": {"dropout": 0.2}}, "data": {"batch_size": 32}}
    after = {"seed": 0, "model": {"name": "whisper", "label_smoothing": 0.0,
                                  "network": {"dropout": 0.2, "encoder_lr_scale": 1.0, "layer_decay": 1.0,
                                              "frozen_layers": None, "frame_masks": 0, "frame_mask_width": 10}},
             "data": {"batch_size": 32, "test_crops": 1}}
    assert identity(result_settings(before)) == identity(result_settings(after))
    assert not differences(result_settings(before), result_settings(after))
    after["model"]["network"]["layer_decay"] = 0.8  # a value that changes training is a new configuration
    assert differences(result_settings(before), result_settings(after)) == \
        [("model.network.layer_decay", "(unset)", 0.8)]


def test_identity_ignores_paths_loggers_and_pools_only_seed_and_fold():
    config = {"seed": 0, "paths": {"output_dir": "/a"}, "logger": {"csv": {"save_dir": "/a"}}, "run_name": "x",
              "trainer": {"max_epochs": 30, "default_root_dir": "/a", "devices": [1]},
              "split": {"_target_": "S", "seed": 0, "fold": 2},
              "data": {"cache_dir": "/c", "batch_size": 32, "corpora": {"ravdess": {"root": "/d/ravdess", "vocal_channel": "speech"}}}}
    settings = result_settings(config)
    assert settings == {"seed": 0, "trainer.max_epochs": 30, "trainer.devices": 1, "split._target_": "S",
                        "split.seed": 0, "split.fold": 2, "data.batch_size": 32,
                        "data.corpora.ravdess.vocal_channel": "speech"}
    moved = {**config, "seed": 3, "paths": {"output_dir": "/b"}, "split": {"_target_": "S", "seed": 3, "fold": 0},
             "trainer": {**config["trainer"], "devices": [0], "default_root_dir": "/b"}}
    assert identity(result_settings(moved)) == identity(settings)
    recipe = {**config, "trainer": {**config["trainer"], "max_epochs": 1}}
    assert differences(result_settings(recipe), settings) == [("trainer.max_epochs", 1, 30)]


def write_run(folder: Path, name: str, ua: float, seed: int = 0, predictions: pd.DataFrame | None = None, **settings):
    """A finished run dir: metrics.json with `settings` (as train writes it) and, optionally, predictions.csv."""
    run = folder / name
    run.mkdir(parents=True)
    full = {"model._target_": "R", "trainer.max_epochs": 30, "seed": seed, "split.seed": seed, **settings}
    confusion = np.eye(len(CLASSES), dtype=int).tolist()
    metrics = {"model": "resnet", "data": "ravdess", "split": "speaker_independent", "augment": "none",
               "condition": "clean", "seed": seed, "params": 10, "train_seconds": 1.0, "test_ua": ua, "test_wa": ua,
               "test_macro_f1": ua, "classes": CLASSES, "confusion_matrix": confusion,
               "per_class": {c: {"f1": ua} for c in CLASSES}, "test_speakers": ["ravdess:01"],
               "breakdowns": {"speaker": {"ravdess:01": {"ua": ua}}}, "settings": full}
    (run / "metrics.json").write_text(json.dumps(metrics))
    if predictions is not None:
        predictions.to_csv(run / "predictions.csv", index=False)
    return run


def test_a_1_epoch_and_a_2_epoch_run_are_two_rows_and_one_run_shows_no_spread(tmp_path):
    write_run(tmp_path, "one_epoch", 0.3, **{"trainer.max_epochs": 1})
    write_run(tmp_path, "two_epochs", 0.4, **{"trainer.max_epochs": 2})
    write_run(tmp_path, "two_epochs_seed1", 0.5, seed=1, **{"trainer.max_epochs": 2})
    summary = aggregate(read_runs(tmp_path))
    rows = {entry["settings"]: entry for entry in summary}
    assert set(rows) == {"trainer.max_epochs=1", "trainer.max_epochs=2"}
    assert rows["trainer.max_epochs=2"]["runs"] == 2 and rows["trainer.max_epochs=1"]["runs"] == 1
    table = markdown_table(summary)
    assert "| trainer.max_epochs=1 | 10 | 1 |  | 0.300 | 0.300 | 0.300 |  | 1 s |" in table  # no ± 0.000 [0.3, 0.3]
    assert "| trainer.max_epochs=2 | 10 | 2 |  | 0.450 ± 0.071 [0.400, 0.500] |" in table


def test_a_run_stored_before_a_setting_was_added_later_pools_with_newer_runs(tmp_path):
    # metrics.json written before data.test_crops joined ADDED_LATER stores its neutral value; newer ones lack it.
    write_run(tmp_path, "older", 0.3, **{"data.test_crops": 1, "model.network.pooling": "mean"})
    write_run(tmp_path, "newer", 0.5, seed=1)
    write_run(tmp_path, "five_crops", 0.6, **{"data.test_crops": 5})
    summary = aggregate(read_runs(tmp_path))
    rows = {entry["settings"]: entry for entry in summary}
    assert set(rows) == {"data.test_crops=1", "data.test_crops=5"}  # the pair pools; pooling=mean is no difference
    assert rows["data.test_crops=1"]["runs"] == 2
    assert rows["data.test_crops=1"]["test_ua"]["mean"] == pytest.approx(0.4)


def test_a_run_stored_before_a_setting_joined_ignored_pools_with_newer_runs(tmp_path):
    # metrics.json written while callbacks.model_checkpoint._target_ still counted stores Lightning's class;
    # newer runs store none (the class that writes checkpoints cannot change a result).
    write_run(tmp_path, "older", 0.3,
              **{"callbacks.model_checkpoint._target_": "lightning.pytorch.callbacks.ModelCheckpoint"})
    write_run(tmp_path, "newer", 0.5, seed=1)
    write_run(tmp_path, "other_monitor", 0.6, seed=2, **{"callbacks.model_checkpoint.monitor": "val_loss"})
    summary = aggregate(read_runs(tmp_path))
    assert sorted((entry["runs"], entry["settings"]) for entry in summary) == [
        (1, "callbacks.model_checkpoint.monitor=val_loss"), (2, "callbacks.model_checkpoint.monitor=null")]
    assert [entry["test_ua"]["mean"] for entry in summary if entry["runs"] == 2] == [pytest.approx(0.4)]


def test_settings_stored_before_a_key_joined_ignored_match_todays_settings():
    # what a rerun compares to tell a finished job (fit.finished_record) and a resume compares with its checkpoint
    today = result_settings({"seed": 1, "callbacks": {"model_checkpoint": {
        "_target_": "emotion_lightning.training.checkpoints.LastEveryEpochCheckpoint", "monitor": "val_ua"}}})
    stored = {"seed": 1, "callbacks.model_checkpoint._target_": "lightning.pytorch.callbacks.ModelCheckpoint",
              "callbacks.model_checkpoint.monitor": "val_ua"}
    assert today == {"seed": 1, "callbacks.model_checkpoint.monitor": "val_ua"} == comparable(stored)
    assert differences(today, comparable({**stored, "callbacks.model_checkpoint.monitor": "val_loss"})) == [
        ("callbacks.model_checkpoint.monitor", "val_ua", "val_loss")]


def test_configurations_whose_shortened_labels_read_alike_stay_separate_rows(tmp_path):
    # Two ensembles whose member lists share their first 37 characters once written out.
    same = ["simple_cnn:e684221702"] * 3
    mixed = ["simple_cnn:e684221702", "simple_cnn:60ca08691b", "simple_cnn:42332ac07e"]
    for fold in range(2):
        write_run(tmp_path, f"seeds{fold}", 0.6, **{"model.checkpoints": same, "split.fold": fold})
        write_run(tmp_path, f"mixed{fold}", 0.4, **{"model.checkpoints": mixed, "split.fold": fold})
    summary = aggregate(read_runs(tmp_path))
    assert sorted((entry["runs"], entry["test_ua"]["mean"]) for entry in summary) == [(2, 0.4), (2, 0.6)]
    assert len({entry["configuration"] for entry in summary}) == 2


def test_labels_name_a_callback_by_its_class_and_a_long_member_list_by_its_length(tmp_path):
    ema = "emotion_lightning.training.weight_averaging.ExponentialMovingAverage"
    write_run(tmp_path, "ema", 0.6, **{"callbacks.ema._target_": ema, "callbacks.ema.decay": 0.99})
    write_run(tmp_path, "plain", 0.5, **{"callbacks.ema._target_": None})
    write_run(tmp_path, "ensemble", 0.7, **{"callbacks.ema._target_": None,
                                             "model.checkpoints": ["simple_cnn:e684221702"] * 3})
    write_run(tmp_path, "mixed", 0.8, **{"callbacks.ema._target_": None, "model.checkpoints": [
        "simple_cnn:e684221702", "whisper_finetune:60ca08691b", "simple_cnn:42332ac07e"]})
    write_run(tmp_path, "grid", 0.3, **{"callbacks.ema._target_": None, "model.checkpoints": [f"run{i}.ckpt" for i in range(12)]})
    summary = aggregate(read_runs(tmp_path))
    labels = {entry["test_ua"]["mean"]: entry["configuration"] for entry in summary}
    assert "model.checkpoints=[2 x simple_cnn, 1 x whisper_finetune]" in labels[0.8]
    assert "model.checkpoints=[12 items]" in labels[0.3]
    assert {entry["settings"] for entry in summary if entry["test_ua"]["mean"] == 0.7} == {
        "callbacks.ema=null, model.checkpoints=[3 x simple_cnn]"}  # the table's settings column keeps the "]"
    assert "callbacks.ema=ExponentialMovingAverage" in labels[0.6] and "callbacks.ema=null" in labels[0.5]
    assert "model.checkpoints=[3 x simple_cnn]" in labels[0.7] and "model.checkpoints=null" in labels[0.5]
    assert "._target_" not in " ".join(labels.values())
    assert "decay" not in labels[0.6]  # the class differs, so its settings do: the class alone is shown


def test_evaluations_of_a_checkpoint_are_grouped_apart_from_training_runs(tmp_path):
    write_run(tmp_path, "trained", 0.4)
    evaluated = write_run(tmp_path, "evaluated", 0.4, evaluation="checkpoint")
    record = json.loads((evaluated / "metrics.json").read_text())
    (evaluated / "metrics.json").write_text(json.dumps({**record, "ckpt_path": "/x/last.ckpt", "seen_test_clips": 0}))
    summary = aggregate(read_runs(tmp_path))
    assert sorted((entry["kind"], entry["runs"]) for entry in summary) == [("eval", 1), ("train", 1)]
    assert "eval of checkpoints" in markdown_table(summary)


def test_split_csv_round_trips_through_split_file(data_dir, tmp_path):
    corpus = {"ravdess": Ravdess(data_dir / "ravdess", emotion_map("ravdess"))}
    original = EmotionDataModule(corpus, list(EMOTIONS), SpeakerIndependentSplit(seed=2), cache_dir=str(tmp_path / "cache"))
    original.setup()
    table = original.split_table()
    assert list(table.columns) == ["file", "corpus", "speaker", "part"] and len(table) == len(original.manifest)
    assert table["file"].iloc[0].startswith("Actor_")  # relative to the corpus root: the same on any machine
    table.to_csv(tmp_path / "split.csv", index=False)
    again = EmotionDataModule(corpus, list(EMOTIONS), FileSplit(str(tmp_path / "split.csv")), cache_dir=str(tmp_path / "cache"))
    again.setup()
    for part in ("train", "val", "test"):
        assert again.clip_ids(part) == original.clip_ids(part)
    pd.testing.assert_frame_equal(again.split_table(), table)


def test_mcnemar_exact_binomial_on_known_discordant_counts():
    # 8 clips only A gets right, 2 only B, 10 both, 5 neither: p = 2 * P(X <= 2), X ~ Bin(10, 1/2) = 2 * 56 / 1024
    a = [True] * 8 + [False] * 2 + [True] * 10 + [False] * 5
    b = [False] * 8 + [True] * 2 + [True] * 10 + [False] * 5
    assert mcnemar_exact(a, b) == (8, 2, pytest.approx(112 / 1024))
    assert mcnemar_exact(a, a) == (0, 0, 1.0)
    assert mcnemar_exact([True] * 6, [False] * 6)[2] == pytest.approx(2 / 64)


def test_resampled_ua_is_the_ua_of_each_resample():
    rng = np.random.default_rng(0)
    true, predicted = rng.integers(0, 4, 50), rng.integers(0, 4, 50)
    draws = rng.integers(0, 50, size=(20, 50))
    expected = [metrics_from_confusion(confusion_matrix(true[d], predicted[d], 4), list("abcd"))["ua"] for d in draws]
    np.testing.assert_allclose(resampled_ua(true, predicted, draws, 4, chunk=7), expected)


def fixture_predictions(correct: list[bool]) -> pd.DataFrame:
    """Predictions of 40 clips (10 per class): right where `correct`, else the next class."""
    true = [CLASSES[i % 4] for i in range(len(correct))]
    predicted = [t if ok else CLASSES[(CLASSES.index(t) + 1) % 4] for t, ok in zip(true, correct)]
    return pd.DataFrame({"file": [f"Actor_01/clip{i:02d}.wav" for i in range(len(correct))], "corpus": "ravdess",
                         "speaker": "ravdess:01", "true": true, "predicted": predicted,
                         **{f"p_{c}": 0.25 for c in CLASSES}})


@pytest.fixture
def paired_runs(tmp_path):
    """Two models on the same 40 clips (seed 0): A right on clips 0-29, B on 0-19 and 30-33."""
    a = [i < 30 for i in range(40)]
    b = [i < 20 or 30 <= i < 34 for i in range(40)]
    folder = tmp_path / "runs"
    write_run(folder, "a", 0.75, predictions=fixture_predictions(a), **{"model._target_": "A"})
    write_run(folder, "b", 0.6, predictions=fixture_predictions(b), **{"model._target_": "B"})
    return folder


def test_paired_comparison_gives_the_exact_mcnemar_and_a_bootstrap_interval(paired_runs):
    runs = read_runs(paired_runs)
    metrics = {d: json.loads((Path(d) / "metrics.json").read_text()) for d in runs["run_dir"]}
    (row,) = paired_comparisons(runs, metrics).to_dict("records")
    assert row["A"].endswith("[model=A]") and row["B"].endswith("[model=B]")
    assert (row["only_a_right"], row["only_b_right"], row["clips"], row["paired runs"]) == (10, 4, 40, 1)
    # exact two-sided binomial: 2 * P(X <= 4), X ~ Bin(14, 1/2)
    assert row["p"] == pytest.approx(2 * sum(math.comb(14, k) for k in range(5)) / 2**14)  # 0.1796
    assert row["test"] == "exact McNemar"
    assert row["delta_ua"] == pytest.approx(0.75 - 0.6)  # 10 clips per class: UA = WA here
    assert row["ci_low"] < row["delta_ua"] < row["ci_high"]


def test_seeds_tested_on_the_same_clips_count_each_clip_once():
    # Three seeds with the same predictions on the same 40 clips are no more evidence about those clips than one:
    # the interval and the test must not narrow as if there were 120 independent clips.
    def frame(correct):
        table = fixture_predictions(correct)
        index = {name: i for i, name in enumerate(CLASSES)}
        return pd.DataFrame({"clip": "ravdess:" + table["file"], "true": table["true"].map(index),
                             "predicted": table["predicted"].map(index)})

    a, b = frame([i < 30 for i in range(40)]), frame([i < 20 or 30 <= i < 34 for i in range(40)])
    one, three = compare([(a, b)], 4), compare([(a, b)] * 3, 4)
    assert (three["ci_low"], three["ci_high"]) == (one["ci_low"], one["ci_high"])
    assert three["clips"] == one["clips"] == 40 and three["test"] == "clip sign-flip"
    # the sign-flip test on 14 discordant clips approximates the exact McNemar p of one pair (0.1796)
    assert three["p"] == pytest.approx(one["p"], abs=0.02)


def test_runs_on_other_clips_are_not_paired(paired_runs):
    other = fixture_predictions([True] * 40)
    other["file"] = other["file"].str.replace("Actor_01", "Actor_02")
    write_run(paired_runs, "c", 1.0, predictions=other, **{"model._target_": "C"})
    runs = read_runs(paired_runs)
    metrics = {d: json.loads((Path(d) / "metrics.json").read_text()) for d in runs["run_dir"]}
    assert len(paired_comparisons(runs, metrics)) == 1  # A vs B only


def test_report_shows_the_leaderboard_comparison_speakers_and_learning_curves(paired_runs, tmp_path):
    log = paired_runs / "a" / "csv"
    log.mkdir()
    pd.DataFrame({"epoch": [0, 0, 1, 1], "train_loss": [2.0, None, 1.5, None],
                  "val_ua": [None, 0.3, None, 0.5]}).to_csv(log / "metrics.csv", index=False)
    tables = build_report(paired_runs, tmp_path / "report")
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "## Paired comparisons" in markdown and ": +0.150 [" in markdown and "p = 0.18" in markdown
    assert set(tables["speakers"]["held-out speakers (UA each)"]) == {"ravdess:01 0.750", "ravdess:01 0.600"}
    page = (tmp_path / "report" / "report.html").read_text()
    assert "0.750" in page and "± 0.000" not in page and "max-width:1200px" in page
    assert (tmp_path / "report" / "figures" / "learning_curves_00.png").is_file()
    assert (tmp_path / "report" / "figures" / "ua_per_configuration.png").is_file()
    assert (tmp_path / "report" / "comparisons.csv").is_file()


def test_per_emotion_f1_leaves_out_a_class_a_run_never_tested_or_predicted():
    from emotion_lightning.evaluation.report import per_emotion_f1

    def run(confusion):  # classes a, b, c; c untested in the first run (cross-corpus), tested in the second
        scores = metrics_from_confusion(np.array(confusion), ["a", "b", "c"])
        return {"per_class": scores["per_class"], "confusion_matrix": confusion}

    metrics = {"r1": run([[2, 0, 0], [0, 2, 0], [0, 0, 0]]), "r2": run([[1, 1, 0], [0, 2, 0], [0, 0, 2]])}
    runs = pd.DataFrame({"configuration": ["x", "x"], "run_dir": ["r1", "r2"]})
    table = per_emotion_f1(runs, metrics)
    assert table.loc["x", "c"] == pytest.approx(1.0)  # the second run's F1 alone, not (0 + 1) / 2
    assert table.loc["x", "a"] == pytest.approx((1.0 + 2 / 3) / 2)


def test_a_sweep_whose_every_job_failed_is_reported_with_each_error_on_its_row(tmp_path):
    for job in ("0_resnet", "1_resnet"):
        (tmp_path / "sweep" / job).mkdir(parents=True)
        (tmp_path / "sweep" / job / "failure.json").write_text(json.dumps({
            "error": "MissingFileError: No audio found under data/.\nRAVDESS goes in data/ravdess", "overrides": []}))
    tables = build_report(tmp_path / "sweep", tmp_path / "report")  # used to crash on the empty results
    assert list(tables["jobs"]["status"]) == ["failed", "failed"]
    markdown = (tmp_path / "report" / "report.md").read_text()
    rows = [line for line in markdown.splitlines() if line.startswith("| 0_resnet")]
    assert len(rows) == 2  # the failed jobs' table and the jobs table, each row whole on one line
    assert all(row.endswith("No audio found under data/. RAVDESS goes in data/ravdess |") for row in rows)


def test_a_report_over_a_folder_that_does_not_exist_is_refused(paired_runs, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder: .*kfold6_tpyo"):
        build_report([paired_runs, tmp_path / "kfold6_tpyo"], tmp_path / "report")


def test_ua_vs_snr_draws_one_line_per_configuration_like_the_robustness_table(tmp_path, monkeypatch):
    from emotion_lightning.evaluation import aggregate as aggregating

    for epochs in (1, 2):  # two trainings of one model: two lines and two clean baselines, never one average
        for condition, snr, ua in (("clean", None, 0.5 + epochs / 10), ("noise_white_0dB", 0, 0.2),
                                   ("noise_white_30dB", 30, 0.4)):
            run = write_run(tmp_path / "runs", f"e{epochs}_{condition}", ua, **{"trainer.max_epochs": epochs,
                                                                                  "condition": condition})
            metrics = json.loads((run / "metrics.json").read_text())
            (run / "metrics.json").write_text(json.dumps(metrics | {"condition": condition, "snr_db": snr}))
    drawn = {}
    monkeypatch.setattr(aggregating, "plot_ua_vs_snr",
                        lambda series, snr, ua, clean, path: drawn.update(series=set(series), clean=clean))
    aggregating.write_aggregate(tmp_path / "runs", tmp_path / "out")
    assert drawn["series"] == {"resnet [trainer.max_epochs=1], noise_white", "resnet [trainer.max_epochs=2], noise_white"}
    assert drawn["clean"] == {"resnet [trainer.max_epochs=1]": pytest.approx(0.6),
                              "resnet [trainer.max_epochs=2]": pytest.approx(0.7)}


def test_chart_rows_drop_the_fields_every_configuration_shares_and_the_title_names_them():
    labels = ["simple_cnn / mixup / ravdess / speaker_kfold / clean [callbacks.ema=null]",
              "simple_cnn / mixup / ravdess / speaker_kfold / clean [callbacks.ema=ExponentialMovingAverage]",
              "ensemble / none / ravdess / speaker_kfold / clean"]
    short, shared = without_shared_fields(labels)
    assert shared == "ravdess / speaker_kfold / clean"
    assert short == ["simple_cnn / mixup [callbacks.ema=null]",
                     "simple_cnn / mixup [callbacks.ema=ExponentialMovingAverage]", "ensemble / none"]
    # Only settings differ: the model stays as the row's name; one label is left whole.
    assert without_shared_fields(labels[:2])[0][0] == "simple_cnn [callbacks.ema=null]"
    assert without_shared_fields(labels[:1]) == (labels[:1], "") and without_shared_fields([]) == ([], "")


def test_ensembles_are_identified_by_their_members_configurations_not_checkpoint_paths():
    def member(model, fold, seed=0):
        return {"model": {"name": model, "lr": 1e-3}, "split": {"fold": fold, "seed": 0}, "seed": seed,
                "paths": {"output_dir": f"/runs/{model}/{fold}"}}
    fold0 = member_identities([member("resnet", 0), member("whisper", 0)])
    assert fold0 == member_identities([member("resnet", 3, seed=2), member("whisper", 3)])  # pools over folds
    assert fold0[0].startswith("resnet:") and fold0[1].startswith("whisper:")
    other = member("resnet", 0)
    other["model"]["lr"] = 1e-4
    assert member_identities([other, member("whisper", 0)])[0] != fold0[0]
