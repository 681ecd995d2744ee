import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score

from emotion_lightning.models.features import LogMelFrontend
from emotion_lightning.evaluation.metrics import metrics_from_confusion
from emotion_lightning.models.cnn import DenseNet, SimpleCNN
from emotion_lightning.models.resnet import ResNet
from emotion_lightning.models.waveform_cnn import WaveformCNN
from emotion_lightning.models.sequence import LSTMClassifier, TransformerClassifier
from emotion_lightning.models.module import EmotionClassifier
from tests.helpers.training import overfit_losses


def test_metrics_on_a_known_confusion_matrix():
    confusion = [[8, 2, 0],
                 [1, 3, 0],
                 [0, 0, 0]]  # third class never occurs nor is predicted
    metrics = metrics_from_confusion(confusion, ["a", "b", "c"])
    assert metrics["wa"] == pytest.approx(11 / 14)
    assert metrics["ua"] == pytest.approx((8 / 10 + 3 / 4) / 2)
    f1_a = 2 * (8 / 9) * (8 / 10) / (8 / 9 + 8 / 10)
    f1_b = 2 * (3 / 5) * (3 / 4) / (3 / 5 + 3 / 4)
    assert metrics["macro_f1"] == pytest.approx((f1_a + f1_b) / 2)
    assert metrics["per_class"]["b"] == pytest.approx({"precision": 0.6, "recall": 0.75, "f1": f1_b, "support": 4})


def test_metrics_match_scikit_learn_on_random_predictions():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 7, 500)  # class 7 absent from the truth but sometimes predicted
    predicted = np.where(rng.random(500) < 0.6, truth, rng.integers(0, 8, 500))
    metrics = metrics_from_confusion(confusion_matrix(truth, predicted, labels=range(8)), list("abcdefgh"))
    assert metrics["wa"] == pytest.approx(accuracy_score(truth, predicted))
    assert metrics["ua"] == pytest.approx(balanced_accuracy_score(truth, predicted))
    assert metrics["macro_f1"] == pytest.approx(f1_score(truth, predicted, average="macro"))


def test_log_mel_frontend_gives_the_seeds_64_by_94_standardised_features():
    features = LogMelFrontend()(torch.randn(3, 48000))
    assert features.shape == (3, 1, 64, 94)
    assert features.mean(dim=(1, 2, 3)).abs().max() < 1e-4
    assert features.std(dim=(1, 2, 3)).sub(1).abs().max() < 1e-3


def test_resnet_shapes_and_parameter_count():
    network = ResNet(num_classes=8)
    assert network(torch.randn(2, 1, 64, 94)).shape == (2, 8)
    # Conv stem + six residual blocks + Linear(64, 8): 174,840 parameters (the seeds report 191,416).
    assert sum(p.numel() for p in network.parameters()) == 174_840
    assert sum(p.numel() for p in ResNet(num_classes=6).parameters()) == 174_840 - 2 * 65


def test_balanced_class_weights_enter_the_loss():
    model = EmotionClassifier(ResNet(num_classes=2), classes=["a", "b"], class_weighting="balanced")
    model.set_class_weights(torch.tensor([0.5, 2.0]))
    logits, labels = torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1])
    losses = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    expected = (0.5 * losses[0] + 2.0 * losses[1]) / 2.5
    assert model._loss(logits, labels).item() == pytest.approx(expected.item())
    with pytest.raises(ValueError, match="class_weighting"):
        EmotionClassifier(ResNet(num_classes=2), classes=["a", "b"], class_weighting="inverse")


@pytest.mark.parametrize("network", [
    lambda: ResNet(num_classes=4, dropout=0.0),
    lambda: LSTMClassifier(num_classes=4, dropout=0.0),
    lambda: TransformerClassifier(num_classes=4, dropout=0.0),
    lambda: SimpleCNN(num_classes=4, dropout=0.0),
    lambda: DenseNet(num_classes=4, dropout=0.0),
], ids=["resnet", "lstm", "transformer", "simple_cnn", "densenet"])
def test_each_network_overfits_a_tiny_batch(network):
    torch.manual_seed(0)
    model = EmotionClassifier(network(), classes=list("abcd"), frontend=LogMelFrontend())
    losses = overfit_losses(model, torch.randn(8, 16000), torch.arange(8) % 4, steps=60)
    assert losses[-1] < 0.1 * losses[0]


def test_sequence_models_accept_any_number_of_frames():
    for network in (LSTMClassifier(num_classes=3), TransformerClassifier(num_classes=3)):
        assert network(torch.randn(2, 1, 64, 31)).shape == (2, 3)
        assert network(torch.randn(2, 1, 64, 200)).shape == (2, 3)


def test_waveform_cnn_has_the_seeds_size_and_overfits_raw_audio():
    torch.manual_seed(0)
    network = WaveformCNN(num_classes=4, dropout=0.0)
    assert 4.4e6 < sum(p.numel() for p in network.parameters()) < 4.55e6  # the seeds: 4,456,648
    assert network(torch.randn(2, 20000)).shape == (2, 4)  # adaptive pooling: any length
    losses = overfit_losses(EmotionClassifier(network, classes=list("abcd")), torch.randn(8, 16000),
                            torch.arange(8) % 4, steps=25, lr=1e-3)
    assert losses[-1] < 0.1 * losses[0]
