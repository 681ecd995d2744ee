"""Paired comparison of configurations tested on the same clips: how a researcher shows one model beats another.

Two configurations are paired where they have runs with the same seed tested on exactly the same clips (same
split, seeds and folds) under the same condition; each such pair of runs contributes its clips. The UA
difference gets a paired percentile bootstrap interval: clips are resampled within each clip set (folds hold
different clips), the same draw for both configurations and for every pair of runs on those clips (seeds that
share a test set share its clips' luck, so they are not independent evidence).

The p-value treats the clip as the unit. With one pair of runs per clip set it is McNemar's exact test on
per-clip correctness: the two-sided binomial test on the discordant clips (b: only A right, c: only B right;
p = min(1, 2 P(X <= min(b, c))) for X ~ Binomial(b + c, 1/2)), exact where the chi-square approximation is poor.
With several pairs on the same clips (e.g. 3 seeds on each fold of a fixed split), a clip counted once per seed
would count as several independent clips, so the test is a sign-flip permutation test on each clip's difference
in correctness averaged over its pairs (A and B swapped per clip, 10,000 draws).
"""

import logging
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import binom

from emotion_lightning.evaluation.metrics import confusion_matrix, metrics_from_confusion, resampled_ua
from emotion_lightning.evaluation.test_results import PREDICTIONS_FILE

log = logging.getLogger(__name__)
RESAMPLES = 10_000


def mcnemar_exact(a_correct, b_correct) -> tuple[int, int, float]:
    """(b, c, p): clips only A got right, clips only B got right, and the exact two-sided McNemar p-value."""
    a_correct, b_correct = np.asarray(a_correct, dtype=bool), np.asarray(b_correct, dtype=bool)
    only_a, only_b = int((a_correct & ~b_correct).sum()), int((~a_correct & b_correct).sum())
    discordant = only_a + only_b
    p = 1.0 if discordant == 0 else min(1.0, 2 * float(binom.cdf(min(only_a, only_b), discordant, 0.5)))
    return only_a, only_b, p


def read_predictions(run_dir: str | Path, classes: list[str]) -> pd.DataFrame | None:
    """A run's predictions.csv as clip, true and predicted class indices, sorted by clip; None without one."""
    path = Path(run_dir) / PREDICTIONS_FILE
    if not path.is_file():
        return None
    table = pd.read_csv(path, dtype={"file": str, "corpus": str, "true": str, "predicted": str}, keep_default_na=False)
    index = {name: i for i, name in enumerate(classes)}
    return pd.DataFrame({"clip": table["corpus"] + ":" + table["file"], "true": table["true"].map(index),
                         "predicted": table["predicted"].map(index)}).sort_values("clip", ignore_index=True)


def ua(true: np.ndarray, predicted: np.ndarray, num_classes: int) -> float:
    return metrics_from_confusion(confusion_matrix(true, predicted, num_classes), list(range(num_classes)))["ua"]


def sign_flip_p(differences: np.ndarray, rng: np.random.Generator, draws: int = RESAMPLES) -> float:
    """Two-sided permutation p-value of sum(differences) under the null that each clip's A and B are exchangeable
    (each difference's sign flipped at random); (1 + as extreme) / (1 + draws), so never 0."""
    differences = differences[differences != 0]
    if differences.size == 0:
        return 1.0
    observed, extreme = abs(differences.sum()), 0
    for start in range(0, draws, 1000):
        signs = rng.choice(np.array([-1.0, 1.0]), size=(min(1000, draws - start), differences.size))
        extreme += int((np.abs(signs @ differences) >= observed - 1e-9).sum())
    return (1 + extreme) / (1 + draws)


def compare(pairs: list[tuple[pd.DataFrame, pd.DataFrame]], num_classes: int, seed: int = 0) -> dict:
    """ΔUA (A - B, mean over the pairs of runs), its paired bootstrap 95% interval (one resample of clips per clip
    set, shared by the pairs on it), and a per-clip test: exact McNemar, or a sign-flip test with replicates."""
    rng = np.random.default_rng(seed)
    clip_sets: dict[tuple, list] = {}  # the pairs of runs tested on each set of clips
    for a, b in pairs:
        clip_sets.setdefault(tuple(a["clip"]), []).append((a, b))
    differences, draws, clip_differences = [], np.zeros(RESAMPLES), []
    for group in clip_sets.values():
        true = group[0][0]["true"].to_numpy()
        resample = rng.integers(0, len(true), size=(RESAMPLES, len(true)))
        for a, b in group:
            differences.append(ua(true, a["predicted"].to_numpy(), num_classes)
                               - ua(true, b["predicted"].to_numpy(), num_classes))
            draws += (resampled_ua(true, a["predicted"].to_numpy(), resample, num_classes)
                      - resampled_ua(true, b["predicted"].to_numpy(), resample, num_classes))
        clip_differences.append(np.mean([(a["true"] == a["predicted"]).to_numpy().astype(float)
                                         - (b["true"] == b["predicted"]).to_numpy() for a, b in group], axis=0))
    draws /= len(pairs)
    low, high = np.percentile(draws, [2.5, 97.5])
    a_correct = np.concatenate([(a["true"] == a["predicted"]).to_numpy() for a, _ in pairs])
    b_correct = np.concatenate([(b["true"] == b["predicted"]).to_numpy() for _, b in pairs])
    only_a, only_b, p = mcnemar_exact(a_correct, b_correct)
    test = "exact McNemar"
    if any(len(group) > 1 for group in clip_sets.values()):
        p, test = sign_flip_p(np.concatenate(clip_differences), rng), "clip sign-flip"
    return {"delta_ua": float(np.mean(differences)), "ci_low": float(low), "ci_high": float(high),
            "only_a_right": only_a, "only_b_right": only_b, "p": p, "test": test,
            "clips": sum(len(clips) for clips in clip_sets)}


def paired_comparisons(runs: pd.DataFrame, metrics: dict[str, dict]) -> pd.DataFrame:
    """One row per pair of configurations with runs on the same clips (same seed, same test clips, same
    condition), A the better-scoring on those runs' mean: `A vs B: ΔUA [95% CI], p`."""
    tested = {}  # configuration -> {(seed, clips): predictions}
    for run in runs.itertuples():
        classes = metrics[run.run_dir]["classes"]
        predictions = read_predictions(run.run_dir, classes)
        if predictions is None or predictions[["true", "predicted"]].isna().any().any():
            continue
        key = (run.condition, tuple(classes), run.seed, hash(tuple(predictions["clip"])))
        tested.setdefault(run.configuration, {}).setdefault(key, predictions)
    rows = []
    for first, second in combinations(sorted(tested), 2):
        shared = sorted(set(tested[first]) & set(tested[second]), key=str)
        if not shared:
            continue
        pairs = [(tested[first][key], tested[second][key]) for key in shared]
        if any(not np.array_equal(a["true"], b["true"]) for a, b in pairs):
            continue  # same clips, other labels: not the same test
        result = compare(pairs, num_classes=len(shared[0][1]))
        if result["delta_ua"] < 0:  # A is the better one, so ΔUA reads as its margin
            first_, second_ = second, first
            result = compare([(b, a) for a, b in pairs], num_classes=len(shared[0][1]))
        else:
            first_, second_ = first, second
        rows.append({"A": first_, "B": second_, "condition": shared[0][0], "paired runs": len(pairs), **result})
    columns = ["A", "B", "condition", "paired runs", "clips", "delta_ua", "ci_low", "ci_high", "only_a_right",
               "only_b_right", "p", "test"]
    return pd.DataFrame(rows, columns=columns)


def comparison_table(comparisons: pd.DataFrame) -> pd.DataFrame:
    """The comparisons as text cells: `A vs B`, `ΔUA [95% CI]`, McNemar's p."""
    return pd.DataFrame({
        "A vs B": comparisons["A"] + " vs " + comparisons["B"],
        "paired runs": comparisons["paired runs"].astype(str), "clips": comparisons["clips"].astype(str),
        "ΔUA [95% CI]": [f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]" for d, lo, hi in
                         zip(comparisons["delta_ua"], comparisons["ci_low"], comparisons["ci_high"])],
        "only A right / only B right": comparisons["only_a_right"].astype(str) + " / " + comparisons["only_b_right"].astype(str),
        "p": [f"{p:.3g}" for p in comparisons["p"]], "test": comparisons["test"],
    })
