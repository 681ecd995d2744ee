"""Whether a model's probabilities mean what they say: expected calibration error, negative log-likelihood,
Brier score, temperature scaling and the reliability diagram.

ECE follows torchmetrics' MulticlassCalibrationError (top-1 confidence, equal-width bins, L1), written in numpy so
the predictor's torch-free ONNX path and the report can use it too.
"""

from pathlib import Path

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

from emotion_lightning.data.atomic import atomic_path

BINS = 15
# Temperatures searched (log-uniform bounds): wide enough for any network's over- or under-confidence.
TEMPERATURE_BOUNDS = (0.05, 20.0)


def probabilities(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """softmax(logits / T), row by row. Log-probabilities serve as logits (they differ by a constant per row), so
    softmax(log p / T) calibrates probabilities p; T = 1 gives p back."""
    return np.exp(log_softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=1))


def logits_of(probs: np.ndarray, temperature: float | None = 1.0) -> np.ndarray:
    """The logits behind probabilities reported at `temperature` (softmax(logits / T)), up to a constant per row:
    T x log p. Only zeros (underflow) are raised, to the smallest positive double, so their log stays finite."""
    return np.log(np.clip(np.asarray(probs, dtype=np.float64), np.finfo(np.float64).tiny, None)) * (temperature or 1.0)


def bin_table(probs: np.ndarray, true: np.ndarray, bins: int = BINS) -> list[dict]:
    """Per equal-width confidence bin (top-1): clips, mean confidence, accuracy."""
    probs, true = np.asarray(probs, dtype=np.float64), np.asarray(true)
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == true
    # torchmetrics' bucketing: bin i holds confidences in (i/bins, (i+1)/bins], the first one [0, 1/bins].
    index = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    table = []
    for number in range(bins):
        chosen = index == number
        table.append({"low": number / bins, "high": (number + 1) / bins, "clips": int(chosen.sum()),
                      "confidence": float(confidence[chosen].mean()) if chosen.any() else None,
                      "accuracy": float(correct[chosen].mean()) if chosen.any() else None})
    return table


def table_ece(table: list[dict]) -> float:
    """Sum over a bin table's bins of (share of clips) x |accuracy - mean confidence|."""
    total = sum(row["clips"] for row in table)
    return float(sum(row["clips"] / total * abs(row["accuracy"] - row["confidence"]) for row in table if row["clips"]))


def expected_calibration_error(probs: np.ndarray, true: np.ndarray, bins: int = BINS) -> float:
    return table_ece(bin_table(probs, true, bins))


def ece_floor(probs: np.ndarray, draws: int = 200, seed: int = 0) -> float:
    """The ECE a perfectly calibrated model with these confidences would show on this many clips: the mean ECE
    over `draws` label sets drawn from the probabilities themselves. Binned ECE is biased upwards on few clips
    (about 0.07 on 240 clips at 60% accuracy), so a measured ECE near its floor is as calibrated as the clips can
    tell."""
    probs = np.asarray(probs, dtype=np.float64)
    if not len(probs):
        raise ValueError("no clips to compute an ECE floor on")
    cumulative = np.cumsum(probs / probs.sum(axis=1, keepdims=True), axis=1)
    uniform = np.random.default_rng(seed).random((draws, len(probs), 1))
    labels = np.minimum((uniform > cumulative).sum(axis=2), probs.shape[1] - 1)  # inverse-CDF draws, per clip
    return float(np.mean([expected_calibration_error(probs, drawn) for drawn in labels]))


def negative_log_likelihood(probs: np.ndarray, true: np.ndarray) -> float:
    picked = np.asarray(probs, dtype=np.float64)[np.arange(len(true)), np.asarray(true)]
    return float(-np.log(np.clip(picked, 1e-12, None)).mean())


def brier_score(probs: np.ndarray, true: np.ndarray) -> float:
    """Mean over clips of the squared distance between the probabilities and the one-hot truth (0 to 2)."""
    probs = np.asarray(probs, dtype=np.float64)
    onehot = np.eye(probs.shape[1])[np.asarray(true)]
    return float(((probs - onehot) ** 2).sum(axis=1).mean())


def calibration_scores(probs: np.ndarray, true: np.ndarray) -> dict:
    return {"ece": expected_calibration_error(probs, true), "ece_floor": ece_floor(probs),
            "nll": negative_log_likelihood(probs, true), "brier": brier_score(probs, true)}


def fit_temperature(logits: np.ndarray, true: np.ndarray) -> float:
    """The one temperature T minimising the NLL of softmax(logits / T) (a bounded search over log T). Dividing
    by a positive T never changes an argmax, so accuracy and UA are untouched."""
    logits, true = np.asarray(logits, dtype=np.float64), np.asarray(true)
    if len(true) == 0:
        raise ValueError("no clips to fit a temperature on")

    def nll(log_temperature: float) -> float:
        scaled = log_softmax(logits / np.exp(log_temperature), axis=1)
        return float(-scaled[np.arange(len(true)), true].mean())

    low, high = np.log(TEMPERATURE_BOUNDS)
    return float(np.exp(minimize_scalar(nll, bounds=(low, high), method="bounded",
                                        options={"xatol": 1e-5}).x))


def plot_reliability(tables: dict[str, list[dict]], path: str | Path, title: str = "") -> None:
    """Accuracy against confidence per bin for each named table (e.g. before and after scaling), the diagonal
    being perfect calibration; bars below show how many clips each bin holds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (top, bottom) = plt.subplots(2, 1, figsize=(5, 5.5), height_ratios=[3, 1], sharex=True)
    top.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfectly calibrated")
    width = 1 / BINS / max(len(tables), 1)
    for offset, (name, table) in enumerate(tables.items()):
        filled = [row for row in table if row["clips"]]
        top.plot([row["confidence"] for row in filled], [row["accuracy"] for row in filled], marker="o",
                 label=f"{name} (ECE {table_ece(table):.3f})")
        bottom.bar([row["low"] + width * (offset + 0.5) for row in table], [row["clips"] for row in table],
                   width=width, label=name)
    top.set_ylabel("accuracy")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.legend(fontsize=8, loc="upper left")
    top.set_title(title, fontsize=9)
    bottom.set_xlabel("confidence (top-1)")
    bottom.set_ylabel("clips")
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=110, format="png")
    plt.close(figure)
