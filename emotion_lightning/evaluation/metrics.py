"""Reported metrics from a confusion matrix (rows true, columns predicted).

UA (balanced accuracy) averages recall over the classes present in the truth; macro-F1 averages F1 over
classes present in truth or predictions: the conventions of scikit-learn, so results can be cross-checked.
"""

import numpy as np


def confusion_matrix(true: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts with rows true and columns predicted: the one way every test score in the package is counted."""
    true, predicted = np.asarray(true, dtype=np.int64), np.asarray(predicted, dtype=np.int64)
    return np.bincount(true * num_classes + predicted, minlength=num_classes**2).reshape(num_classes, num_classes)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    return np.divide(numerator, denominator, out=np.zeros_like(numerator, dtype=float), where=denominator > 0)


def metrics_from_confusion(confusion, classes: list[str]) -> dict:
    """WA, UA, macro-F1 and per-class precision/recall/F1/support from a confusion matrix."""
    confusion = np.asarray(confusion, dtype=np.int64)
    true_positives = np.diag(confusion).astype(float)
    support, predicted = confusion.sum(axis=1), confusion.sum(axis=0)
    precision = _ratio(true_positives, predicted)
    recall = _ratio(true_positives, support)
    f1 = _ratio(2 * precision * recall, precision + recall)
    present = support > 0
    seen = present | (predicted > 0)
    total = confusion.sum()
    return {
        "wa": float(true_positives.sum() / total) if total else 0.0,
        "ua": float(recall[present].mean()) if present.any() else 0.0,
        "macro_f1": float(f1[seen].mean()) if seen.any() else 0.0,
        "per_class": {
            name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                   "support": int(support[i])}
            for i, name in enumerate(classes)
        },
    }


def resampled_ua(true: np.ndarray, predicted: np.ndarray, draws: np.ndarray, num_classes: int,
                 chunk: int = 1000) -> np.ndarray:
    """UA of each bootstrap resample of clips, vectorised (`draws`: resamples x clips, clip indices): the same
    convention as metrics_from_confusion (mean recall over the classes present in the resample's truth)."""
    true, correct = np.asarray(true), np.asarray(true) == np.asarray(predicted)
    scores = []
    for start in range(0, len(draws), chunk):
        sample_true, sample_correct = true[draws[start:start + chunk]], correct[draws[start:start + chunk]]
        support = np.stack([(sample_true == c).sum(axis=1) for c in range(num_classes)], axis=1)
        hits = np.stack([((sample_true == c) & sample_correct).sum(axis=1) for c in range(num_classes)], axis=1)
        recall = np.divide(hits, support, out=np.full(support.shape, np.nan), where=support > 0)
        scores.append(np.nanmean(recall, axis=1))
    return np.concatenate(scores) if scores else np.zeros(0)
