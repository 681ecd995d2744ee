"""Classical baselines: scikit-learn classifiers on engineered acoustic features.

Each clip (the whole cached waveform, not a crop) becomes one vector: mean and standard deviation over
time of MFCCs with deltas and delta-deltas, chroma, spectral contrast, zero-crossing rate and RMS, plus
statistics of the YIN pitch track. Features are computed once per waveform cache and stored beside it.
"""

import hashlib
import logging
from pathlib import Path

import librosa
import numpy as np
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from tqdm.auto import tqdm

from emotion_lightning.data.atomic import atomic_path
from emotion_lightning.data.errors import SettingError
from emotion_lightning.evaluation.metrics import confusion_matrix, metrics_from_confusion

log = logging.getLogger(__name__)
FRAME, HOP = 1024, 512


def engineered_features(waveform: np.ndarray, sample_rate: int) -> np.ndarray:
    """A fixed-length description of one clip (168 values)."""
    if len(waveform) < FRAME:  # librosa needs at least one analysis frame
        waveform = np.pad(waveform, (0, FRAME - len(waveform)))
    waveform = waveform.astype(np.float32)
    spectrum = np.abs(librosa.stft(waveform, n_fft=FRAME, hop_length=HOP))
    mfcc = librosa.feature.mfcc(y=waveform, sr=sample_rate, n_mfcc=20, n_fft=FRAME, hop_length=HOP)
    frames = [
        mfcc, librosa.feature.delta(mfcc, width=3), librosa.feature.delta(mfcc, order=2, width=3),
        librosa.feature.chroma_stft(S=spectrum**2, sr=sample_rate),
        librosa.feature.spectral_contrast(S=spectrum, sr=sample_rate),
        librosa.feature.zero_crossing_rate(waveform, frame_length=FRAME, hop_length=HOP),
        librosa.feature.rms(S=spectrum, frame_length=FRAME),
    ]
    stacked = np.concatenate(frames, axis=0)
    pitch = librosa.yin(waveform, fmin=60, fmax=500, sr=sample_rate, frame_length=FRAME * 2, hop_length=HOP)
    voiced = pitch[(pitch > 61) & (pitch < 499)]
    pitch_stats = [voiced.mean(), voiced.std(), np.median(voiced), voiced.min(), voiced.max()] if len(voiced) \
        else [0.0] * 5
    return np.concatenate([stacked.mean(axis=1), stacked.std(axis=1), pitch_stats, [len(voiced) / len(pitch)]])


def cached_features(datamodule) -> np.ndarray:
    """Features of every clip of the datamodule's waveform cache, in cache order (computed once)."""
    cache = datamodule.cache
    key = hashlib.sha1(("\n".join(cache.paths) + f"\n{cache.sample_rate}").encode()).hexdigest()[:16]
    path = Path(datamodule.cache_dir) / "features" / f"engineered-{key}.npy"
    if path.is_file():
        return np.load(path)
    rows = [engineered_features(np.asarray(cache[i]), cache.sample_rate) if len(cache[i]) else None
            for i in tqdm(range(len(cache)), desc="engineered features", unit="clip")]
    width = len(next(r for r in rows if r is not None))
    table = np.stack([r if r is not None else np.zeros(width) for r in rows]).astype(np.float32)
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        np.save(handle, table)
    return table


def stored_numbers(estimator) -> int:
    """Numbers a fitted estimator keeps: an SVC's support vectors and coefficients, a forest's tree nodes, a
    Platt-scaled classifier's own plus a sigmoid's two per class."""
    if hasattr(estimator, "calibrated_classifiers_"):
        return sum(stored_numbers(calibrated.estimator) + 2 * len(calibrated.calibrators)
                   for calibrated in estimator.calibrated_classifiers_)
    if hasattr(estimator, "support_vectors_"):
        return int(estimator.support_vectors_.size + estimator.dual_coef_.size)
    if hasattr(estimator, "estimators_"):
        return int(sum(tree.tree_.node_count for tree in estimator.estimators_))
    return 0


class FeatureClassifier:
    """A scikit-learn estimator behind standardisation, trained on train+val (it has no epochs to select)."""

    def __init__(self, estimator, classes: list[str], name: str = "classical", run_config: dict | None = None,
                 spec_augment=None, mixup_alpha: float | None = None, batch_augment=None):
        if spec_augment is not None or mixup_alpha is not None or batch_augment is not None:
            raise SettingError(f"augment={(run_config or {}).get('augment', {}).get('name', '?')} needs a model trained "
                               f"by gradient descent; {name} is fitted on clean features (use augment=none)")
        self.pipeline = make_pipeline(StandardScaler(), estimator)
        self.classes, self.name, self.run_config = list(classes), name, run_config
        self.test_results: dict | None = None

    @property
    def num_parameters(self) -> int:
        """Stored numbers of the fitted model (support vectors or tree nodes), the nearest to a parameter count."""
        return stored_numbers(self.pipeline[-1])

    def fit_and_test(self, datamodule) -> None:
        """Fit on train+val features, predict test; results in `test_results` like EmotionClassifier's."""
        features = cached_features(datamodule)
        parts = {part: (features[dataset.rows], dataset.labels) for part, dataset in datamodule.datasets.items()}
        train_x = np.concatenate([parts["train"][0], parts["val"][0]])
        train_y = np.concatenate([parts["train"][1], parts["val"][1]])
        self._check_calibration_folds(train_y)
        self.pipeline.fit(train_x, train_y)
        test_x, test_y = parts["test"]
        test = datamodule.datasets["test"]
        if test.transform:  # a robustness condition: the test clips' features under it, not the clean cache's
            test_x = np.stack([engineered_features(test.degraded_whole(i), test.sample_rate)
                               for i in tqdm(range(len(test)), desc="test features under the condition", unit="clip")])
        predicted = self.pipeline.predict(test_x)
        confusion = confusion_matrix(test_y, predicted, len(self.classes))
        self.test_results = {**metrics_from_confusion(confusion, self.classes), "confusion_matrix": confusion.tolist(),
                             "predicted": predicted, "probabilities": self._probabilities(test_x),
                             "positions": np.arange(len(test_y))}

    def _check_calibration_folds(self, labels: np.ndarray) -> None:
        """Platt scaling by k-fold cross-validation (model=svm) needs k clips of each class in train+val: say so
        with the fix rather than let scikit-learn fail mid-sweep."""
        folds = getattr(self.pipeline[-1], "cv", None)
        counts = np.bincount(labels)
        rarest = int(counts[counts > 0].min())
        if isinstance(folds, int) and rarest < folds:
            fix = f"lower model.estimator.cv to {rarest}" if rarest >= 2 else "give that class more clips"
            raise SettingError(f"model={self.name}: its probabilities are fitted by {folds}-fold cross-validation, but "
                               f"a class has only {rarest} clip(s) in train+val; {fix}")

    def _probabilities(self, features: np.ndarray) -> np.ndarray | None:
        """Class probabilities, one column per class, where the estimator gives them (a random forest and a
        Platt-scaled SVC do, a bare SVC does not); None otherwise."""
        if not hasattr(self.pipeline, "predict_proba"):
            return None
        try:
            fitted = self.pipeline.predict_proba(features)
        except AttributeError:  # SVC(probability=False) has the method but refuses to use it
            return None
        probabilities = np.zeros((len(features), len(self.classes)))
        probabilities[:, self.pipeline.classes_] = fitted  # classes never trained on keep probability 0
        return probabilities
