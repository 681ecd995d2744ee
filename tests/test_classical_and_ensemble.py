import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from emotion_lightning.models.classical import FeatureClassifier, engineered_features
from emotion_lightning.data.corpora import Ravdess
from emotion_lightning.data.datamodule import EmotionDataModule
from emotion_lightning.data.splits import SpeakerIndependentSplit
from emotion_lightning.models.features import LogMelFrontend
from emotion_lightning.models.ensemble import ProbabilityMean
from emotion_lightning.models.resnet import ResNet
from emotion_lightning.models.module import EmotionClassifier
from emotion_lightning.data.errors import SettingError
from emotion_lightning.data.taxonomy import EMOTIONS
from tests.helpers.configs import CONF_DIR, emotion_map


@pytest.mark.slow
def test_engineered_features_describe_pitch_and_survive_tiny_clips():
    t = np.arange(16000) / 16000
    features = engineered_features((0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000)
    assert features.shape == (168,) and np.isfinite(features).all()
    mean_pitch, _, median_pitch = features[162:165]
    assert median_pitch == pytest.approx(220, rel=0.03) and mean_pitch == pytest.approx(220, rel=0.05)
    assert features[-1] > 0.9  # voiced fraction
    assert np.isfinite(engineered_features(np.zeros(100, np.float32), 16000)).all()


def svm_estimator():
    """model=svm's estimator, as conf/model/svm.yaml configures it."""
    return instantiate(OmegaConf.load(CONF_DIR / "model" / "svm.yaml").estimator)


def test_svm_on_engineered_features_separates_the_fixture_pitches(data_dir, tmp_path):
    datamodule = EmotionDataModule({"ravdess": Ravdess(data_dir / "ravdess", emotion_map("ravdess"))}, list(EMOTIONS),
                                   SpeakerIndependentSplit(seed=0), cache_dir=str(tmp_path / "cache"))
    datamodule.setup()
    model = FeatureClassifier(svm_estimator(), classes=list(EMOTIONS), name="svm")
    model.fit_and_test(datamodule)
    assert model.test_results["ua"] > 0.9
    assert np.asarray(model.test_results["confusion_matrix"]).sum() == len(datamodule.rows("test"))
    probabilities = model.test_results["probabilities"]  # Platt-scaled, one column per class of the taxonomy
    assert probabilities.shape == (len(datamodule.rows("test")), len(EMOTIONS))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(probabilities.argmax(axis=1), model.test_results["predicted"])
    (calibrated,) = model.pipeline[-1].calibrated_classifiers_  # one SVC fitted on train+val, not 5 averaged
    svc = calibrated.estimator
    trained_classes = len(calibrated.calibrators)
    assert model.num_parameters == svc.support_vectors_.size + svc.dual_coef_.size + 2 * trained_classes
    assert (tmp_path / "cache" / "features").is_dir()  # computed once, reused by the next run


def test_too_few_clips_of_a_class_for_platt_scaling_is_a_setting_error_with_the_fix(monkeypatch):
    from types import SimpleNamespace

    import emotion_lightning.models.classical as classical

    labels = {"train": np.array([0] * 6 + [1] * 6 + [2] * 2), "val": np.array([0, 1, 2]), "test": np.array([0, 1])}
    offsets = np.cumsum([0, 14, 3])
    datamodule = SimpleNamespace(datasets={
        part: SimpleNamespace(rows=np.arange(len(y)) + start, labels=y, transform=None)
        for (part, y), start in zip(labels.items(), offsets)})
    monkeypatch.setattr(classical, "cached_features", lambda dm: np.random.default_rng(0).standard_normal((19, 4)))
    model = FeatureClassifier(svm_estimator(), classes=["a", "b", "c"], name="svm")
    with pytest.raises(SettingError, match=r"5-fold .* only 3 clip\(s\) in train\+val; lower model.estimator.cv to 3"):
        model.fit_and_test(datamodule)
    model.pipeline[-1].set_params(cv=3)
    model.fit_and_test(datamodule)  # three folds: every class in each
    assert model.test_results["probabilities"].shape == (2, 3)


def test_probability_mean_weights_members():
    torch.manual_seed(0)
    members = [EmotionClassifier(ResNet(num_classes=3), classes=list("abc"), frontend=LogMelFrontend()).eval()
               for _ in range(2)]
    waveform = torch.randn(4, 16000)
    with torch.no_grad():
        p0, p1 = (m(waveform).softmax(-1) for m in members)
        mixed = ProbabilityMean(members, weights=[3, 1])(waveform).exp()
        alone = ProbabilityMean([members[0], members[0]])(waveform).exp()
    torch.testing.assert_close(mixed, 0.75 * p0 + 0.25 * p1)
    torch.testing.assert_close(alone, p0)
    with pytest.raises(ValueError, match="one non-negative weight per checkpoint"):
        ProbabilityMean(members, weights=[1.0])
