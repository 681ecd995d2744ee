"""Calibration metrics and temperature scaling on known probabilities."""

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf
from scipy.special import gammaln
from torchmetrics.classification import MulticlassCalibrationError

from emotion_lightning.data.errors import SettingError
from emotion_lightning.evaluation.aggregate import aggregate, read_runs
from emotion_lightning.evaluation.identity import differences, result_settings
from emotion_lightning.evaluation.leaderboard import _ece_text, _nll_text, _pooled_ece_text, row_from_sweep
from emotion_lightning.evaluation.report import build_report, pooled_reliability
from emotion_lightning.inference.export import export
from emotion_lightning.inference.predictor import EmotionPredictor
from emotion_lightning.models.module import EmotionClassifier
from emotion_lightning.training.checkpoints import store_temperature
from emotion_lightning.training.fit import calibrate
from tests.helpers.audio import speech_like

from emotion_lightning.evaluation.calibration import (brier_score, ece_floor, expected_calibration_error,
                                                      fit_temperature, logits_of, negative_log_likelihood,
                                                      plot_reliability, probabilities, bin_table)


def test_ece_nll_and_brier_match_a_computation_by_hand():
    probs = np.array([[0.9, 0.1, 0.0], [0.9, 0.05, 0.05], [0.2, 0.6, 0.2], [0.3, 0.3, 0.4]])
    true = np.array([0, 1, 1, 0])
    # Bins of 1/15: 0.9 -> bin 13 (2 clips, 1 right: |0.5 - 0.9|), 0.6 -> bin 8 (right: |1 - 0.6|),
    # 0.4 -> bin 5 (wrong: |0 - 0.4|).
    expected_ece = 2 / 4 * 0.4 + 1 / 4 * 0.4 + 1 / 4 * 0.4
    assert expected_calibration_error(probs, true) == pytest.approx(expected_ece)
    assert negative_log_likelihood(probs, true) == pytest.approx(-np.mean(np.log([0.9, 0.05, 0.6, 0.3])))
    by_hand = [(0.1 ** 2 + 0.1 ** 2), (0.9 ** 2 + 0.95 ** 2 + 0.05 ** 2), (0.2 ** 2 + 0.4 ** 2 + 0.2 ** 2),
               (0.7 ** 2 + 0.3 ** 2 + 0.4 ** 2)]
    assert brier_score(probs, true) == pytest.approx(np.mean(by_hand))


def test_ece_equals_torchmetrics_on_random_probabilities():
    generator = np.random.default_rng(0)
    logits = generator.normal(size=(500, 8)) * 3
    true = generator.integers(0, 8, size=500)
    probs = probabilities(logits)
    reference = MulticlassCalibrationError(num_classes=8, n_bins=15, norm="l1")(
        torch.tensor(probs, dtype=torch.float64), torch.tensor(true))
    assert expected_calibration_error(probs, true) == pytest.approx(float(reference), abs=1e-6)


def test_fitted_temperature_recovers_the_true_one_on_overconfident_logits():
    generator = np.random.default_rng(1)
    true_temperature = 2.5
    logits = generator.normal(size=(20_000, 8)) * 4  # the model's logits: too sharp by 2.5x
    calibrated = probabilities(logits, true_temperature)
    true = np.array([generator.choice(8, p=row) for row in calibrated])
    assert fit_temperature(logits, true) == pytest.approx(true_temperature, rel=0.05)
    assert expected_calibration_error(probabilities(logits, fit_temperature(logits, true)), true) < \
        expected_calibration_error(probabilities(logits), true)


def test_scaling_leaves_every_argmax_unchanged():
    logits = np.random.default_rng(2).normal(size=(1000, 8)) * 5
    for temperature in (0.05, 0.5, 1.7, 20.0):
        assert (probabilities(logits, temperature).argmax(axis=1) == logits.argmax(axis=1)).all()


def test_logits_of_reported_probabilities_give_them_back_at_any_temperature():
    logits = np.random.default_rng(5).normal(size=(50, 8)) * 6
    for temperature in (0.3, 1.0, 4.0):
        recovered = logits_of(probabilities(logits, temperature), temperature)
        offset = recovered - logits  # the logits up to a constant per clip
        np.testing.assert_allclose(offset, offset[:, :1].repeat(8, axis=1), atol=1e-9)
    # an underflowed zero stays finite and least likely; a tiny probability is kept as it is, not raised to a floor
    recovered = logits_of(np.array([[0.0, 1e-20, 1.0 - 1e-20]]), 2.0)
    assert np.isfinite(recovered).all() and recovered[0, 0] < recovered[0, 1] == pytest.approx(2 * np.log(1e-20))


def test_logits_files_are_read_in_the_order_asked_and_a_repeated_file_is_refused(tmp_path):
    from emotion_lightning.evaluation.sweep_calibration import read_logits

    table = pd.DataFrame({"file": ["c.wav", "a.wav", "b.wav"], "speaker": ["s"] * 3, "true": ["sad", "angry", "sad"],
                          "logit_angry": [0.1, 2.0, 0.3], "logit_sad": [1.5, 0.0, 0.9]})
    table.to_csv(tmp_path / "val_logits.csv", index=False)
    logits, true = read_logits(tmp_path / "val_logits.csv", ["angry", "sad"], ["a.wav", "b.wav", "c.wav"])
    np.testing.assert_allclose(logits, [[2.0, 0.0], [0.3, 0.9], [0.1, 1.5]])
    assert true.tolist() == [0, 1, 1]
    with pytest.raises(SettingError, match="does not hold this run's clips"):
        read_logits(tmp_path / "val_logits.csv", ["angry", "sad"], ["a.wav", "b.wav"])
    pd.concat([table, table.iloc[:1]]).to_csv(tmp_path / "val_logits.csv", index=False)
    with pytest.raises(SettingError, match="lists c.wav twice"):
        read_logits(tmp_path / "val_logits.csv", ["angry", "sad"], ["a.wav", "b.wav", "c.wav", "c.wav"])


def test_reliability_diagram_is_written(tmp_path):
    probs = probabilities(np.random.default_rng(3).normal(size=(200, 4)) * 3)
    true = np.random.default_rng(4).integers(0, 4, size=200)
    path = tmp_path / "reliability.png"
    plot_reliability({"before": bin_table(probs, true), "after": bin_table(probabilities(np.log(probs), 2.0), true)},
                     path, title="fixture")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- in runs, checkpoints, exports and the predictor -----------------------------------------------------------
def best_checkpoint(trained_checkpoint) -> tuple[Path, dict]:
    """The fixture run's tested (best) checkpoint, which holds the fitted temperature, and its metrics.json."""
    run_dir = trained_checkpoint.parent.parent
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return run_dir / metrics["tested_checkpoint"], metrics


def test_a_trained_run_fits_its_temperature_on_validation_and_records_before_and_after(trained_checkpoint):
    best, metrics = best_checkpoint(trained_checkpoint)
    calibration = metrics["calibration"]
    assert metrics["temperature_fitted_on"] == "val"
    assert calibration["temperature"] == torch.load(best, weights_only=False)["temperature"] > 0
    assert {key: metrics[f"test_{key}"] for key in ("ece", "ece_floor", "nll", "brier")} == calibration["after"]
    assert set(calibration["before"]) == {"ece", "ece_floor", "nll", "brier"}
    # predictions.csv holds the calibrated probabilities: their ECE is the recorded one, their argmax the label
    predictions = pd.read_csv(best.parent.parent / "predictions.csv")
    classes = metrics["classes"]
    probs = predictions[[f"p_{name}" for name in classes]].to_numpy()
    true = predictions["true"].map(classes.index).to_numpy()
    assert expected_calibration_error(probs, true) == pytest.approx(metrics["test_ece"], abs=1e-4)
    assert (np.array(classes)[probs.argmax(axis=1)] == predictions["predicted"].to_numpy()).all()
    assert (best.parent.parent / "reliability.png").is_file()
    assert (best.parent / "best.ckpt").resolve() == best.resolve()  # the one file name commands can be given


def test_an_export_and_its_checkpoint_give_the_same_calibrated_probabilities(trained_checkpoint, data_dir, tmp_path):
    checkpoint = tmp_path / "model.ckpt"
    shutil.copy(best_checkpoint(trained_checkpoint)[0], checkpoint)
    store_temperature(checkpoint, 2.5)  # far from 1, so calibrated and raw probabilities differ visibly
    exported = export(checkpoint, "onnx")
    files = sorted((data_dir / "ravdess" / "Actor_02").glob("*.wav"))[:4]
    from_torch = EmotionPredictor.from_checkpoint(checkpoint, vad="none").predict_files(files)
    from_onnx = EmotionPredictor.from_checkpoint(exported, vad="none").predict_files(files)
    raw = EmotionPredictor.from_checkpoint(checkpoint, vad="none")
    raw.temperature = 1.0
    uncalibrated = raw.predict_files(files)
    for torch_entry, onnx_entry, raw_entry in zip(from_torch, from_onnx, uncalibrated):
        assert torch_entry["calibrated"] and onnx_entry["temperature"] == torch_entry["temperature"] == 2.5
        assert onnx_entry["probabilities"] == pytest.approx(torch_entry["probabilities"], abs=1e-4)
        assert torch_entry["emotion"] == raw_entry["emotion"]  # scaling never changes the label
        assert torch_entry["confidence"] < raw_entry["confidence"]  # T > 1 softens every confident answer


def test_a_checkpoint_written_before_calibration_loads_and_predicts_with_temperature_1(trained_checkpoint,
                                                                                        data_dir, tmp_path):
    checkpoint = tmp_path / "old.ckpt"
    saved = torch.load(best_checkpoint(trained_checkpoint)[0], weights_only=False)
    del saved["temperature"]
    torch.save(saved, checkpoint)
    assert EmotionClassifier.from_checkpoint(checkpoint).temperature == 1.0
    entry = EmotionPredictor.from_checkpoint(checkpoint, vad="none").predict_file(
        sorted((data_dir / "ravdess" / "Actor_02").glob("*.wav"))[0])
    assert entry["emotion"] is not None and entry["calibrated"] is False and entry["temperature"] == 1.0


class NoValidation:
    """A trainer that must not be asked to validate."""

    def validate(self, *args, **kwargs):
        raise AssertionError("validated although calibration is off")


def test_calibration_none_fits_nothing_and_an_unknown_method_is_named():
    assert calibrate(OmegaConf.create({"calibration": "none"}), NoValidation(), None, None, "best.ckpt") is None
    trained = SimpleNamespace(trainable=True)  # ... that saved no checkpoint to fit a temperature for
    assert calibrate(OmegaConf.create({"calibration": "temperature"}), NoValidation(), trained, None, "") is None
    with pytest.raises(SettingError, match="calibration='platt'; use one of temperature, none"):
        calibrate(OmegaConf.create({"calibration": "platt"}), NoValidation(), None, None, "best.ckpt")


class Validation:
    """A trainer whose validation pass scores `scored` of the clips with fixed over-confident logits."""

    def __init__(self, scored: int):
        generator = np.random.default_rng(6)
        self.logits = generator.normal(size=(scored, 4)) * 5
        self.true = generator.integers(0, 4, size=scored)

    def validate(self, model, **kwargs):
        model.val_scores = (self.logits, self.true)


def test_an_ensemble_fits_its_own_temperature_unless_its_members_trained_on_its_validation_clips():
    val = [f"clip{index}" for index in range(40)]
    datamodule = SimpleNamespace(clip_ids=lambda part: val if part == "val" else [])
    member = SimpleNamespace(trained_clips={"train": ["other"], "val": val})  # validated on them: as a fold's seeds
    ensemble = SimpleNamespace(trainable=False, temperature=1.0, network=SimpleNamespace(members=[member, member]))
    cfg = OmegaConf.create({"calibration": "temperature"})
    trainer = Validation(40)
    temperature = calibrate(cfg, trainer, ensemble, datamodule, "")
    assert temperature == pytest.approx(fit_temperature(trainer.logits, trainer.true)) and temperature > 1
    assert ensemble.temperature == temperature  # held for its test: it has no checkpoint to store it in
    # a smoke test's few validation batches fit nothing
    ensemble.temperature = 1.0
    assert calibrate(cfg, Validation(8), ensemble, datamodule, "") is None and ensemble.temperature == 1.0
    # members that trained on these clips are too sure of them: nothing fitted
    member.trained_clips["train"] = val[:3]
    assert calibrate(cfg, Validation(40), ensemble, datamodule, "") is None and ensemble.temperature == 1.0


def test_aggregate_and_report_pool_calibration_over_runs(trained_checkpoint, tmp_path):
    run_dir = trained_checkpoint.parent.parent
    record = json.loads((run_dir / "metrics.json").read_text())
    for job, ece in (("0_run", 0.1), ("1_run", 0.3)):
        (tmp_path / "sweep" / job).mkdir(parents=True)
        (tmp_path / "sweep" / job / "metrics.json").write_text(json.dumps({**record, "test_ece": ece}))
    summary = aggregate(read_runs(tmp_path / "sweep"))
    assert len(summary) == 1 and summary[0]["test_ece"]["mean"] == pytest.approx(0.2)
    tables = build_report(tmp_path / "sweep", tmp_path / "report")
    assert tables["summary"]["test_ece_mean"].iloc[0] == pytest.approx(0.2)
    assert (tmp_path / "report" / "figures" / "reliability_00.png").is_file()
    assert "Calibration" in (tmp_path / "report" / "report.md").read_text()
    pooled = pooled_reliability(read_runs(tmp_path / "sweep"), {str(tmp_path / "sweep" / job): record
                                                                for job in ("0_run", "1_run")})
    (kinds,) = pooled.values()
    for kind, table in kinds.items():
        assert sum(row["clips"] for row in table) == 2 * record["tested_clips"], kind


class FixedWindows:
    """A model whose windows answer, in turn, the given probabilities of classes a and b."""

    def __init__(self, answers):
        self.answers = iter(answers)

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        return np.array([next(self.answers) for _ in windows], dtype=np.float32)


def test_a_file_s_label_does_not_depend_on_the_temperature_however_many_windows():
    # One very sure window for a and two fairly sure for b: the mean as trained says b. Scaling each window before
    # the mean would say a at T=3; the predictor scales the mean, as a run's test scales its crops' mean.
    answers = [[0.999, 0.001], [0.2, 0.8], [0.2, 0.8]]
    audio = speech_like(3.0)
    for temperature in (1.0, 3.0, 0.3):
        predictor = EmotionPredictor(FixedWindows(answers), ["a", "b"], 16000, window_seconds=1.0, hop_seconds=1.0,
                                     vad="none", temperature=temperature)
        entry = predictor.predict_array(audio, 16000)
        assert len(entry["windows"]) == 3 and entry["emotion"] == "b", temperature
        assert [window["emotion"] for window in entry["windows"]] == ["a", "b", "b"]
        expected = probabilities(np.log(np.mean(answers, axis=0))[None], temperature)[0]
        assert entry["probabilities"]["b"] == pytest.approx(expected[1], abs=1e-6)


def test_runs_from_before_calibration_pool_and_resume_with_calibrated_ones():
    old = {"model": {"name": "resnet"}, "seed": 0}
    assert differences(result_settings({**old, "calibration": "temperature"}), result_settings(old)) == []
    assert differences(result_settings({**old, "calibration": "none"}), result_settings(old)) != []


def test_the_leaderboard_shows_an_ece_without_a_spread_or_a_before():
    row = {"test_ece": "0.0412", "test_ece_sd": "", "test_ece_before": ""}
    assert _ece_text(row) == "0.041"
    assert _ece_text({**row, "test_ece_sd": "0.0100"}) == "0.041 ± 0.010"
    assert _ece_text({**row, "test_ece_sd": "0.0100", "test_ece_before": "0.1381"}) == "0.138 → 0.041 ± 0.010"
    assert _ece_text({"test_ece": "", "test_ece_sd": "", "test_ece_before": ""}) == "–"
    pooled = {"pooled_ece_before": "0.1237", "pooled_ece": "0.0538", "pooled_ece_floor": "0.0296"}
    assert _pooled_ece_text(pooled) == "0.124 → 0.054 (0.030)"
    assert _pooled_ece_text({key: "" for key in pooled}) == "–"
    nll = {"test_nll_before": "1.0539", "test_nll": "1.0143", "test_nll_change_ci_low": "-0.0662",
           "test_nll_change_ci_high": "-0.0125"}
    assert _nll_text(nll) == "1.054 → 1.014 (Δ -0.040 [-0.066, -0.013])"
    assert _nll_text({**nll, "test_nll_change_ci_low": "", "test_nll_change_ci_high": ""}) == "1.014"  # no temperature
    assert _nll_text({key: "" for key in nll}) == "–"


def test_the_ece_floor_is_what_perfect_probabilities_show_on_so_many_clips():
    # Certain and right: nothing to miss. Every clip at [0.7, 0.2, 0.1]: all confidences fall in one bin, whose
    # accuracy is the share of draws of class 0, so the floor is E|Binomial(n, 0.7) / n - 0.7|, computed exactly
    # (a sampler drawing the classes in another order, or uniformly, is far off it).
    assert ece_floor(np.eye(8)[np.arange(40) % 8]) == 0.0
    clips = 100
    counts = np.arange(clips + 1)
    log_pmf = (gammaln(clips + 1) - gammaln(counts + 1) - gammaln(clips - counts + 1)
               + counts * np.log(0.7) + (clips - counts) * np.log(0.3))
    exact = float((np.exp(log_pmf) * np.abs(counts / clips - 0.7)).sum())
    assert exact == pytest.approx(0.0366, abs=0.001)
    assert ece_floor(np.tile([0.7, 0.2, 0.1], (clips, 1)), draws=2000) == pytest.approx(exact, abs=0.002)
    # the floor falls as clips are added (about as one over their square root: a quarter of 4x the clips' halves it)
    generator = np.random.default_rng(3)
    many = probabilities(generator.normal(size=(4 * 240, 8)) * 2)
    assert 0.35 < ece_floor(many) / ece_floor(many[:240]) < 0.65


def test_aggregate_pools_every_test_clip_of_a_configuration_before_and_after_scaling(tmp_path):
    generator = np.random.default_rng(4)
    classes = ["a", "b", "c"]
    given, truths = [], []
    for fold, temperature in ((0, 2.0), (1, 0.5)):
        logits = generator.normal(size=(30, 3)) * 3
        true = generator.integers(0, 3, size=30)
        calibrated = probabilities(logits, temperature)
        run = tmp_path / "sweep" / f"{fold}_run"
        run.mkdir(parents=True)
        pd.DataFrame({"true": [classes[index] for index in true],
                      **{f"p_{name}": calibrated[:, index] for index, name in enumerate(classes)}}
                     ).to_csv(run / "predictions.csv", index=False)
        ece = expected_calibration_error(calibrated, true)
        nll = {"before": 1.0 + fold, "after": 0.9 + fold / 2}
        (run / "metrics.json").write_text(json.dumps({
            "model": "m", "data": "d", "split": "s", "test_ua": 0.5, "test_wa": 0.5, "test_macro_f1": 0.5, "test_ece": ece,
            "test_nll": nll["after"],
            "calibration": {"temperature": temperature, "before": {"ece": expected_calibration_error(
                probabilities(logits), true), "nll": nll["before"]}, "after": {"ece": ece, "nll": nll["after"]}},
            "settings": {"model.name": "m", "split.fold": fold}}))
        given.append((logits, calibrated))
        truths.append(true)
    (entry,) = aggregate(read_runs(tmp_path / "sweep"))
    true = np.concatenate(truths)
    pooled = entry["pooled_calibration"]
    assert pooled["clips"] == 60
    assert pooled["ece"] == pytest.approx(expected_calibration_error(np.concatenate([c for _, c in given]), true),
                                          abs=1e-5)
    assert pooled["ece_before"] == pytest.approx(
        expected_calibration_error(np.concatenate([probabilities(l) for l, _ in given]), true), abs=1e-4)
    assert 0 < pooled["floor"] < 1
    assert entry["test_ece_before"]["values"] == pytest.approx(
        [expected_calibration_error(probabilities(l), t) for (l, _), t in zip(given, truths)])
    # NLL before and after, and each run's change against itself: -0.1 and -0.6
    assert entry["test_nll_before"]["values"] == [1.0, 2.0] and entry["test_nll"]["values"] == [0.9, 1.4]
    assert entry["test_nll_change"]["values"] == pytest.approx([-0.1, -0.6])
    row = row_from_sweep(tmp_path / "sweep", "m", "train hydra.sweep.dir=x")
    assert (row["test_nll_before"], row["test_nll"]) == ("1.500000", "1.150000")
    assert float(row["test_nll_change_ci_low"]) == pytest.approx(-0.6) and float(row["test_nll_change_ci_high"]) == pytest.approx(-0.1)
    assert row["test_ece_before"] and row["pooled_ece_before"]
    # runs that fitted no temperature (classical models): their scores once, no "before" and no change
    for path in (tmp_path / "sweep").glob("*/metrics.json"):
        path.write_text(json.dumps({key: value for key, value in json.loads(path.read_text()).items()
                                    if key != "calibration"}))
    row = row_from_sweep(tmp_path / "sweep", "m", "train hydra.sweep.dir=x")
    assert (row["test_nll_before"], row["test_nll"]) == ("1.150000", "1.150000") and row["test_ece"]
    assert not (row["test_nll_change_ci_low"] or row["test_ece_before"] or row["pooled_ece_before"])
    # a run without probabilities leaves nothing to pool
    (tmp_path / "sweep" / "1_run" / "predictions.csv").unlink()
    assert aggregate(read_runs(tmp_path / "sweep"))[0]["pooled_calibration"] is None


# --- one temperature for a sweep --------------------------------------------------------------------------------
def test_calibrate_fits_one_temperature_on_every_run_s_validation_clips_and_rescores_each_run(
        trained_checkpoint, data_dir, tmp_path, monkeypatch):
    from emotion_lightning.calibrate import calibrate_sweep
    from emotion_lightning.evaluation.sweep_calibration import (VAL_LOGITS_FILE, apply_temperature, read_logits,
                                                                val_files)

    source = trained_checkpoint.parent.parent
    runs = [tmp_path / "sweep" / f"{job}_resnet" for job in (0, 1)]
    for run in runs:
        shutil.copytree(source, run, ignore=shutil.ignore_patterns("cache"), symlinks=True)
    # the second run as if trained to other logits: its reported probabilities sharpened, its own temperature kept
    predictions = pd.read_csv(runs[1] / "predictions.csv")
    columns = [column for column in predictions.columns if column.startswith("p_")]
    predictions[columns] = probabilities(np.log(predictions[columns].to_numpy()), 0.5).round(6)
    predictions.to_csv(runs[1] / "predictions.csv", index=False)
    monkeypatch.setenv("EMOTION_DATA_DIR", str(data_dir))  # the eval that scores validation clips reads them here
    monkeypatch.setenv("EMOTION_CACHE_DIR", str(tmp_path / "cache"))
    before = [json.loads((run / "metrics.json").read_text()) for run in runs]

    printed = calibrate_sweep(tmp_path / "sweep")
    after = [json.loads((run / "metrics.json").read_text()) for run in runs]
    temperature = after[0]["calibration"]["temperature"]
    classes = before[0]["classes"]
    val = [read_logits(run / VAL_LOGITS_FILE, classes, val_files(run)) for run in runs]
    assert len(val[0][1]) == before[0]["clips"]["val"]
    assert temperature == pytest.approx(fit_temperature(np.concatenate([l for l, _ in val]),
                                                        np.concatenate([t for _, t in val])), rel=1e-6)
    # both runs are one checkpoint on the same validation clips: the sweep's fit is the run's own fit in training
    assert temperature == pytest.approx(before[0]["calibration"]["temperature"], rel=1e-3)
    assert f"temperature {temperature:.3f}" in printed
    for run, old, new in zip(runs, before, after):
        assert new["calibration"]["temperature"] == temperature and "sweep" in new["temperature_fitted_on"]
        assert new["calibration"]["run_temperature"] == old["calibration"]["temperature"]
        assert torch.load(run / new["tested_checkpoint"], weights_only=False)["temperature"] == temperature
        assert new["test_ua"] == old["test_ua"] and new["confusion_matrix"] == old["confusion_matrix"]
        probs = pd.read_csv(run / "predictions.csv")[columns].to_numpy()
        true = pd.read_csv(run / "predictions.csv")["true"].map(classes.index).to_numpy()
        assert expected_calibration_error(probs, true) == pytest.approx(new["test_ece"], abs=1e-4)
        assert (np.array(classes)[probs.argmax(axis=1)] == pd.read_csv(run / "predictions.csv")["predicted"]).all()
    # the logits as trained are the basis of every later temperature: another one and back gives the same files
    apply_temperature(runs[1], 3.0, "a test")
    apply_temperature(runs[1], temperature, after[1]["temperature_fitted_on"])
    assert json.loads((runs[1] / "metrics.json").read_text()) == after[1]
    calibrate_sweep(tmp_path / "sweep")  # run again (validation scored once, kept): the same results
    assert [json.loads((run / "metrics.json").read_text()) for run in runs] == after
    # scored again by the checkpoint that now holds the sweep's temperature: the same logits, the same fit
    (runs[0] / VAL_LOGITS_FILE).unlink()
    calibrate_sweep(tmp_path / "sweep")
    assert json.loads((runs[0] / "metrics.json").read_text())["calibration"]["temperature"] == \
        pytest.approx(temperature, rel=1e-5)
    # logits left from another training in the folder are refused, not used
    stale = pd.read_csv(runs[1] / "test_logits.csv")
    stale[[f"logit_{name}" for name in classes]] = stale[[f"logit_{name}" for name in classes]].to_numpy()[:, ::-1]
    stale.to_csv(runs[1] / "test_logits.csv", index=False)
    with pytest.raises(SettingError, match="test_logits.csv does not give predictions.csv's labels"):
        calibrate_sweep(tmp_path / "sweep")


def test_calibrate_refuses_a_sweep_with_unfinished_jobs_and_a_single_run(trained_checkpoint, tmp_path):
    from emotion_lightning.evaluation.sweep_calibration import finished_runs

    shutil.copytree(trained_checkpoint.parent.parent, tmp_path / "sweep" / "0_resnet",
                    ignore=shutil.ignore_patterns("cache"), symlinks=True)
    with pytest.raises(SettingError, match="1 trained run"):
        finished_runs(tmp_path / "sweep")
    (tmp_path / "sweep" / "1_resnet" / ".hydra").mkdir(parents=True)
    (tmp_path / "sweep" / "1_resnet" / ".hydra" / "config.yaml").write_text("seed: 1\n")
    with pytest.raises(SettingError, match="1 job.*without results.*run the sweep to its end"):
        finished_runs(tmp_path / "sweep")
    shutil.rmtree(tmp_path / "sweep" / "1_resnet")
    other = tmp_path / "sweep" / "1_other"
    shutil.copytree(tmp_path / "sweep" / "0_resnet", other, symlinks=True)
    record = json.loads((other / "metrics.json").read_text())
    record["settings"] = {**record["settings"], "model.optimizer.lr": 0.5}
    (other / "metrics.json").write_text(json.dumps(record))
    with pytest.raises(SettingError, match="holds 2 configurations.*calibrate each sweep folder on its own"):
        finished_runs(tmp_path / "sweep")
    # a trained run without a tested checkpoint is refused, validation logits or not (only an ensemble has none)
    shutil.rmtree(other)
    shutil.copytree(tmp_path / "sweep" / "0_resnet", other, symlinks=True)
    record = json.loads((other / "metrics.json").read_text())
    (other / "metrics.json").write_text(json.dumps({**record, "tested_checkpoint": None, "tested_weights": "last"}))
    (other / "val_logits.csv").write_text("file,speaker,true\n")
    with pytest.raises(SettingError, match="1_other: no predictions.csv, or no tested checkpoint"):
        finished_runs(tmp_path / "sweep")
    # an ensemble (nothing trained) without the validation logits it keeps
    (other / "metrics.json").write_text(json.dumps({**record, "tested_checkpoint": None, "tested_weights": None}))
    (other / "val_logits.csv").unlink()
    with pytest.raises(SettingError, match="for an ensemble, no val_logits.csv"):
        finished_runs(tmp_path / "sweep")
