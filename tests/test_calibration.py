"""Calibration metrics and temperature scaling on known probabilities."""

import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassCalibrationError

from emotion_lightning.evaluation.calibration import (brier_score, expected_calibration_error, fit_temperature,
                                                      negative_log_likelihood, plot_reliability, probabilities,
                                                      bin_table)


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


def test_reliability_diagram_is_written(tmp_path):
    probs = probabilities(np.random.default_rng(3).normal(size=(200, 4)) * 3)
    true = np.random.default_rng(4).integers(0, 4, size=200)
    path = tmp_path / "reliability.png"
    plot_reliability({"before": bin_table(probs, true), "after": bin_table(probabilities(np.log(probs), 2.0), true)},
                     path, title="fixture")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
