"""The pieces of the training recipes (issue #15): label smoothing, test-time crops, attention pooling, the
warm-up cosine schedule, fine-tuning's layer-wise learning rates and SpecAugment on Whisper's log-mel, weight
averaging, and the
named recipes best_scratch / best_pretrained (= pretrained_finetune with Whisper base) / pretrained_frozen."""

from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import OmegaConf
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from transformers import AutoConfig, AutoModel

from emotion_lightning.data.corpora import Ravdess
from emotion_lightning.data.datamodule import EmotionDataModule, crop_starts
from emotion_lightning.data.errors import SettingError
from emotion_lightning.data.splits import SpeakerIndependentSplit
from emotion_lightning.data.taxonomy import EMOTIONS
from emotion_lightning.models.features import SpecAugment
from emotion_lightning.models.module import EmotionClassifier
from emotion_lightning.models.pretrained import PretrainedEncoderClassifier
from emotion_lightning.models.schedules import warmup_cosine
from emotion_lightning.training.weight_averaging import ExponentialMovingAverage
from tests.helpers.configs import TINY, emotion_map


class Loudness(nn.Module):
    """Logits from the crop itself: class 0's logit is the crop's mean, the others 0 (crop-dependent output)."""

    def forward(self, waveform):
        logits = torch.zeros(len(waveform), 2)
        logits[:, 0] = waveform.mean(dim=1)
        return logits


def test_label_smoothing_is_cross_entropy_s_and_checked():
    model = EmotionClassifier(Loudness(), ["a", "b"], label_smoothing=0.2)
    logits, labels = torch.tensor([[2.0, -1.0], [0.5, 0.5]]), torch.tensor([0, 1])
    log_p = logits.log_softmax(dim=1)
    by_hand = -(0.9 * log_p[[0, 1], labels] + 0.1 * log_p[[0, 1], 1 - labels]).mean()  # 1 - 0.2 + 0.2/2 on the target
    assert torch.isclose(model._loss(logits, labels), by_hand)
    assert model._loss(logits, labels) != F.cross_entropy(logits, labels)
    with pytest.raises(SettingError, match="label_smoothing"):
        EmotionClassifier(Loudness(), ["a", "b"], label_smoothing=1.0)


def test_test_crops_are_evenly_spaced_from_start_to_end():
    starts = crop_starts(np.array([100, 40, 10]), 10, random_crop=False, crops=3)
    np.testing.assert_array_equal(starts, [[0, 45, 90], [0, 15, 30], [0, 0, 0]])
    np.testing.assert_array_equal(crop_starts(np.array([100]), 10, random_crop=False), [45])  # one crop: the centre


@pytest.mark.parametrize("resident", [True, False])
def test_test_time_crops_reach_the_model_grouped_per_clip(resident, data_dir, tmp_path):
    corpora = {"ravdess": Ravdess(data_dir / "ravdess", emotion_map("ravdess"))}
    module = EmotionDataModule(corpora, list(EMOTIONS), SpeakerIndependentSplit(seed=0), clip_seconds=0.25,
                               batch_size=4, cache_dir=str(tmp_path), test_crops=3, resident=resident)
    module.setup()
    test = module.datasets["test"]
    clips, labels = next(iter(module.test_dataloader()))
    assert clips.shape == (4, 3, 4000) and torch.equal(labels, torch.from_numpy(test.labels[:4]))
    first = np.asarray(test.stack[test.rows[0]])
    np.testing.assert_array_equal(clips[0, 0].numpy(), first[:4000])
    np.testing.assert_array_equal(clips[0, 2].numpy(), first[len(first) - 4000:])
    assert module.datasets["val"][0][0].shape == (4000,)  # validation keeps one centre crop

    model = EmotionClassifier(Loudness(), ["a", "b"])
    model.test_step((clips, labels), 0)
    log_probabilities, _ = model._outputs[0]  # kept as logarithms, for calibration
    per_crop = Loudness()(clips.flatten(0, 1)).softmax(dim=1).view(4, 3, 2)
    torch.testing.assert_close(log_probabilities.exp(), per_crop.mean(dim=1))


def test_fine_tuning_decays_the_learning_rate_layer_by_layer_down_the_encoder():
    network = PretrainedEncoderClassifier(num_classes=4, config=TINY["whisper"], clip_seconds=0.5,
                                          freeze_encoder=False, encoder_lr_scale=0.1, layer_decay=0.5)
    model = EmotionClassifier(network, ["a", "b", "c", "d"], optimizer=partial(torch.optim.AdamW, lr=1e-3))
    groups = model.configure_optimizers().param_groups
    rate = {id(parameter): group["lr"] for group in groups for parameter in group["params"]}
    named = dict(network.named_parameters())
    assert rate[id(named["head.4.weight"])] == rate[id(named["layer_weights"])] == 1e-3
    assert rate[id(named["encoder.layer_norm.weight"])] == pytest.approx(1e-4)  # the top: lr * encoder_lr_scale
    assert rate[id(named["encoder.layers.1.fc1.weight"])] == pytest.approx(1e-4)  # the last of the 2 layers
    assert rate[id(named["encoder.layers.0.self_attn_layer_norm.weight"])] == pytest.approx(5e-5)
    assert rate[id(named["encoder.conv1.weight"])] == pytest.approx(2.5e-5)  # below the first layer
    trained = [name for name, parameter in named.items() if parameter.requires_grad]
    assert len(rate) == len(trained) and "encoder.embed_positions.weight" not in trained
    with pytest.raises(SettingError, match="layer_decay"):
        PretrainedEncoderClassifier(num_classes=4, config=TINY["whisper"], layer_decay=1.5)
    # a base wav2vec 2.0 encoder normalises before its first layer: that norm learns with the embeddings
    base = PretrainedEncoderClassifier(num_classes=4, config=TINY["wav2vec2"], freeze_encoder=False,
                                       encoder_lr_scale=0.1, layer_decay=0.5)
    rate = {id(parameter): group["lr"] for group in base.parameter_groups(1e-3) for parameter in group["params"]}
    named = dict(base.named_parameters())
    top = len(base.encoder.encoder.layers) - 1
    assert rate[id(named[f"encoder.encoder.layers.{top}.feed_forward.output_dense.weight"])] == pytest.approx(1e-4)
    assert rate[id(named["encoder.encoder.layer_norm.weight"])] == pytest.approx(1e-4 * 0.5 ** (top + 1))
    assert rate[id(named["encoder.feature_projection.projection.weight"])] == pytest.approx(1e-4 * 0.5 ** (top + 1))
    # no scaling: one group of every parameter, the optimizer state of runs from before these settings
    plain = PretrainedEncoderClassifier(num_classes=4, config=TINY["whisper"], freeze_encoder=False)
    assert [len(group["params"]) for group in plain.parameter_groups(1e-3)] == [len(list(plain.parameters()))]


def test_a_fine_tuned_encoder_trains_with_its_dropout_and_a_frozen_one_stays_in_eval_mode(tmp_path):
    config = dict(TINY["whisper"])
    AutoModel.from_config(AutoConfig.for_model(config.pop("model_type"), **config)).save_pretrained(tmp_path)
    # from_pretrained returns the model in eval mode, and Lightning keeps the modes it finds at fit start
    assert PretrainedEncoderClassifier(num_classes=4, checkpoint=str(tmp_path), freeze_encoder=False).encoder.training
    assert not PretrainedEncoderClassifier(num_classes=4, checkpoint=str(tmp_path)).encoder.training


def test_spec_augment_masks_a_fine_tuned_whisper_s_log_mel_in_training_only():
    torch.manual_seed(0)
    network = PretrainedEncoderClassifier(num_classes=4, config=TINY["whisper"], clip_seconds=0.5, freeze_encoder=False)
    model = EmotionClassifier(network, ["a", "b", "c", "d"], spec_augment=SpecAugment(1, 30, 1, 10))
    seen = []
    network.encoder.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    waveform = torch.randn(4, 8000)
    model.train()(waveform)
    model.eval()(waveform)
    masked, clean = seen
    silent_bands = (masked == 0).all(dim=2) & (clean != 0).any(dim=2)  # (clips, mels): whole bands set to 0
    assert silent_bands.any(dim=1).sum() >= 3 and torch.equal(clean, network.whisper_mel(waveform))
    for frozen in (PretrainedEncoderClassifier(num_classes=4, config=TINY["whisper"]),
                   PretrainedEncoderClassifier(num_classes=4, config=TINY["wav2vec2"], freeze_encoder=False)):
        with pytest.raises(SettingError, match="whisper_finetune"):
            EmotionClassifier(frozen, ["a", "b", "c", "d"], spec_augment=SpecAugment())


def test_mean_pooling_first_equals_mixing_first_and_attention_pools_over_time():
    torch.manual_seed(0)
    network = PretrainedEncoderClassifier(num_classes=4, config=TINY["whisper"], clip_seconds=0.5).eval()
    network.layer_weights.data = torch.randn(len(network.layers))
    hidden = torch.randn(3, 25, len(network.layers), network.width)
    mix = network.layer_weights.softmax(dim=0)
    mixed_first = network.head((mix[None, None, :, None] * hidden).sum(dim=2).mean(dim=1))
    torch.testing.assert_close(network.classify(hidden), mixed_first)
    torch.testing.assert_close(network.classify(hidden.half()), mixed_first, atol=1e-2, rtol=1e-2)

    attention = PretrainedEncoderClassifier(num_classes=4, config=TINY["whisper"], clip_seconds=0.5,
                                            pooling="attention").eval()
    logits = attention.classify(hidden)
    assert logits.shape == (3, 4)
    logits.sum().backward()
    assert attention.attention[0].weight.grad.abs().sum() > 0 and attention.layer_weights.grad.abs().sum() > 0
    # a frame that the attention scores far above the others decides the pooled vector alone
    with torch.no_grad():
        attention.attention[2].weight.zero_()
        attention.attention[2].bias.zero_()
    uniform = attention.classify(hidden)
    torch.testing.assert_close(uniform, attention.head((attention.layer_weights.softmax(0)[None, None, :, None]
                                                         * hidden).sum(dim=2).mean(dim=1)))
    with pytest.raises(SettingError, match="pooling"):
        PretrainedEncoderClassifier(num_classes=4, config=TINY["whisper"], pooling="max")


def test_warmup_cosine_rises_then_decays_to_the_final_fraction():
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = warmup_cosine(optimizer, max_epochs=10, warmup_epochs=2, final_fraction=0.1)
    rates = []
    for _ in range(11):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    np.testing.assert_allclose(rates[:3], [1 / 3, 2 / 3, 1.0])
    assert all(a > b for a, b in zip(rates[2:10], rates[3:11]))  # falls every epoch after the warm-up
    assert rates[10] == pytest.approx(0.1) and rates[6] == pytest.approx(0.1 + 0.9 * 0.5)
    with pytest.raises(ValueError, match="warm-up"):
        warmup_cosine(optimizer, max_epochs=3, warmup_epochs=3)


@pytest.mark.parametrize("experiment, model", [("best_scratch", "simple_cnn_deep"), ("best_pretrained", "whisper_base_finetune"),
                                               ("pretrained_finetune", "whisper_finetune"),
                                               ("pretrained_frozen", "whisper"),
                                               ("pretrained_partial", "whisper_partial")])
def test_the_best_recipes_set_model_and_training_but_not_data_or_split(experiment, model, compose_train):
    plain = compose_train([])
    for split in ("speaker_independent", "speaker_kfold"):
        cfg = compose_train([f"experiment={experiment}", f"split={split}"])
        assert cfg.hydra.runtime.choices.model == model and cfg.hydra.runtime.choices.split == split
        assert cfg.data == plain.data
        assert cfg.model.scheduler._target_.endswith("warmup_cosine")
        assert cfg.model.scheduler.max_epochs == cfg.trainer.max_epochs and "patience" not in cfg.model.scheduler
        assert cfg.model.label_smoothing > 0
        assert ("ema" in cfg.callbacks) == (experiment == "best_scratch")  # chosen on val for the CNN only
    if experiment == "best_scratch":  # five conv blocks (chosen on validation); simple_cnn has four
        assert list(cfg.model.network.channels) == [16, 32, 64, 128, 256] and cfg.model.name == "simple_cnn"
        assert instantiate(cfg.model.network)(torch.zeros(2, 1, 64, 94)).shape == (2, 8)
        plain_cnn = compose_train(["model=simple_cnn"]).model
        assert list(plain_cnn.network.channels) == [16, 32, 64, 128]
        # Another network keeps its own layout under best_scratch's training.
        resnet = compose_train(["experiment=best_scratch", "model=resnet"]).model.network
        assert list(resnet.channels) == list(compose_train(["model=resnet"]).model.network.channels)
    if experiment == "pretrained_partial":  # SpecAugment cannot reach cached states: frame masks stand in
        assert cfg.augment.spec_augment is None and cfg.model.network.frame_masks > 0
        assert cfg.model.optimizer == compose_train(["experiment=pretrained_finetune"]).model.optimizer
        base = compose_train(["experiment=pretrained_partial", "model=whisper_base_partial"])
        assert base.model.network.frozen_layers == 4 and base.trainer.max_epochs == cfg.trainer.max_epochs
    other_data = compose_train([f"experiment={experiment}", "data=crema_d"])
    assert other_data.hydra.runtime.choices.data == "crema_d"


def test_best_pretrained_is_the_fine_tuning_recipe_with_whisper_base(compose_train):
    """The leaderboard's command for best_pretrained's figures is pretrained_finetune with model=whisper_base_finetune:
    both must compose the same run (only the experiment's name differs)."""
    def settings(overrides):
        cfg = OmegaConf.to_container(compose_train(overrides), resolve=False)
        return {key: value for key, value in cfg.items() if key != "hydra"}

    best = settings(["experiment=best_pretrained"])
    assert best == settings(["experiment=pretrained_finetune", "model=whisper_base_finetune"])
    assert best["model"]["network"]["checkpoint"].endswith("/whisper-base")
    assert best != settings(["experiment=pretrained_finetune"])  # tiny.en, the other fine-tuned row


class Regression(LightningModule):
    """A one-weight model whose val score rewards the weight staying near 0: the averaged weight lags the raw one."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def training_step(self, batch, batch_idx):
        return (self.weight - 10.0).pow(2).sum()  # pulls the raw weight towards 10

    def validation_step(self, batch, batch_idx):
        self.log("score", -self.weight.abs().sum())

    def test_step(self, batch, batch_idx):
        self.log("tested_weight", self.weight.sum())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_weight_averaging_validates_checkpoints_and_tests_the_average(tmp_path):
    loader = DataLoader(TensorDataset(torch.zeros(4, 1)), batch_size=1)
    model, checkpoint = Regression(), ModelCheckpoint(dirpath=tmp_path, monitor="score", mode="max")
    trainer = Trainer(max_epochs=2, callbacks=[ExponentialMovingAverage(decay=0.5), checkpoint], logger=False,
                      enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, loader, loader)
    saved = torch.load(checkpoint.best_model_path, weights_only=False)
    raw, averaged = saved["current_model_state"]["weight"].item(), saved["state_dict"]["weight"].item()
    # SGD from 0 towards 10 at lr 0.1: raw = 10 (1 - 0.8^steps); the average moves half-way to it each step
    raw_by_hand, average_by_hand = 0.0, 0.0
    for step in range(8):
        raw_by_hand += 0.2 * (10.0 - raw_by_hand)
        average_by_hand = raw_by_hand if step == 0 else 0.5 * average_by_hand + 0.5 * raw_by_hand
        if step == 3:
            best = (raw_by_hand, average_by_hand)  # epoch 0 (4 steps): the lower weight, so the higher score
    assert raw == pytest.approx(best[0], rel=1e-5) and averaged == pytest.approx(best[1], rel=1e-5)
    assert checkpoint.best_model_score.item() == pytest.approx(-best[1], rel=1e-5)  # validation saw the average
    tested = trainer.test(model, loader, ckpt_path="best", verbose=False)[0]["tested_weight"]
    assert tested == pytest.approx(best[1], rel=1e-5)  # ...and so does test (Lightning's own callback: the raw)
