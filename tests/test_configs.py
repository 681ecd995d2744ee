"""Every config in conf/ composes, resolves and instantiates."""

import json
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

from emotion_lightning.models.classical import FeatureClassifier
from emotion_lightning.data.datamodule import DataNotFoundError, EmotionDataModule
from tests.helpers.configs import TINY

CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = ["data", "split", "model", "trainer", "logger", "callbacks", "robustness", "augment", "recipe", "experiment"]


def options(group: str) -> list[str]:
    """The group's options, nested ones as Hydra names them (experiment=robustness/resnet)."""
    return sorted(p.relative_to(CONF / group).with_suffix("").as_posix() for p in (CONF / group).rglob("*.yaml")
                  if not p.stem.startswith("_"))


ALL_CHOICES = [(group, option) for group in GROUPS for option in options(group)]


@pytest.mark.parametrize("group, option", ALL_CHOICES, ids=[f"{g}={o}" for g, o in ALL_CHOICES])
def test_every_config_composes_and_resolves(group, option, compose_train):
    cfg = compose_train([f"{group}={option}"])
    assert cfg.hydra.runtime.choices[group] == option
    job_config = cfg.copy()
    with open_dict(job_config):
        del job_config["hydra"]  # the hydra node holds sweep values that exist only in a real multirun
    resolved = OmegaConf.to_container(job_config, resolve=True)
    if "network" in resolved["model"]:
        assert resolved["model"]["network"]["num_classes"] == len(resolved["data"]["classes"])


@pytest.mark.parametrize("data", options("data"))
def test_every_data_config_builds_a_datamodule_on_the_fixtures(data, compose_train, data_dir, tmp_path):
    cfg = compose_train([f"data={data}", f"paths.data_dir={data_dir}", f"paths.cache_dir={tmp_path}/cache",
                         "split=random"])
    datamodule = instantiate(cfg.data, split=instantiate(cfg.split))
    assert isinstance(datamodule, EmotionDataModule)
    datamodule.setup("fit")
    assert set(datamodule.manifest["emotion"]) == set(cfg.data.classes)
    waveforms, labels = next(iter(datamodule.train_dataloader()))
    assert waveforms.shape == (cfg.data.batch_size, 48000)
    assert labels.max() < len(cfg.data.classes)


@pytest.mark.parametrize("model", [m for m in options("model") if m != "ensemble"])  # ensemble: test_models
def test_every_model_config_instantiates_and_classifies_a_batch(model, compose_train):
    cfg = compose_train([f"model={model}"])
    if cfg.model.get("network", {}).get("checkpoint"):  # pretrained encoders: a tiny random one of the same family
        family = "whisper" if "whisper" in model else "wav2vec2"
        partial = ["model.network.frozen_layers=1"] if cfg.model.network.get("frozen_layers") is not None else []
        cfg = compose_train([f"model={model}", "model.network.checkpoint=null", *partial,  # tiny: 2 layers
                             f"+model.network.config={json.dumps(TINY[family])}".replace('"', "")])
    module = instantiate(cfg.model)
    assert module.classes == list(cfg.data.classes)
    if isinstance(module, FeatureClassifier):
        return
    logits = module(torch.randn(2, 48000))
    assert logits.shape == (2, len(cfg.data.classes))


def test_combined_data_keeps_a_subset_of_corpora(compose_train, data_dir, tmp_path):
    cfg = compose_train(["data=combined", "data.include=[ravdess,tess]", f"paths.data_dir={data_dir}",
                         f"paths.cache_dir={tmp_path}/cache", "split=random"])
    datamodule = instantiate(cfg.data, split=instantiate(cfg.split))
    datamodule.setup()
    assert set(datamodule.manifest["corpus"]) == {"ravdess", "tess"}
    with pytest.raises(ValueError, match=r"data.include names \['timit'\]; available corpora are \['crema_d'"):
        EmotionDataModule(corpora=instantiate(cfg.data.corpora), classes=["sad"], split=None, include=["timit"])


def test_missing_data_says_where_to_put_it(compose_train, tmp_path):
    cfg = compose_train([f"paths.data_dir={tmp_path}/nothing-here"])
    datamodule = instantiate(cfg.data, split=instantiate(cfg.split))
    with pytest.raises(DataNotFoundError, match=r"ravdess: expected under .*nothing-here/ravdess; install it there with `emotion-lightning download ravdess .*zenodo"):
        datamodule.setup()


@pytest.mark.parametrize("condition", options("robustness"))
def test_every_condition_degrades_a_clip_and_names_itself(condition, compose_train):
    import numpy as np

    from emotion_lightning.data.transforms import ClipContext

    cfg = compose_train([f"robustness={condition}"])
    chain = instantiate(cfg.robustness.chain)
    clip = (0.1 * np.sin(np.arange(16000) * 0.05) + 0.01 * np.random.default_rng(0).standard_normal(16000))
    clip = clip.astype(np.float32)
    others = lambda rng, count: [np.roll(clip, 100 * i) for i in range(1, count + 1)]  # noqa: E731
    out = chain(clip, np.random.default_rng(0), ClipContext(16000, others))
    assert out.shape == clip.shape and np.isfinite(out).all()
    assert np.array_equal(out, clip) == (condition == "clean")
    assert (cfg.robustness.snr_db is not None) == (condition.startswith("noise") or condition == "combined")


def test_a_field_set_on_top_of_augment_none_applies(compose_train):
    # the preset's name is a label: a run recorded with augment.mixup_alpha=0.2 must have mixed up
    from emotion_lightning.training.build import build_model

    assert build_model(compose_train(["augment=none", "augment.mixup_alpha=0.2"])).mixup_alpha == 0.2
    assert build_model(compose_train(["augment=none"])).mixup_alpha == 0.0


@pytest.mark.parametrize("augment", options("augment"))
def test_every_augmentation_preset_applies_to_the_resnet(augment, compose_train):
    from emotion_lightning.training.build import build_model

    cfg = compose_train([f"augment={augment}"])
    model = build_model(cfg)
    assert cfg.augment.name == augment
    assert (model.spec_augment is not None) == (augment in ("specaugment", "specaugment_mixup", "full"))
    assert (model.mixup_alpha > 0) == (augment in ("mixup", "specaugment_mixup"))
    assert (cfg.augment.waveform is not None) == (augment in ("waveform", "full"))
