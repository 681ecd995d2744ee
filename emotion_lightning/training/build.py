"""Objects a run is made of, built from its config: the DataModule (set up, its split written down) and the model
(augmentation and the resolved run config handed over at construction)."""

import logging
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig

from emotion_lightning.data import splits
from emotion_lightning.data.atomic import write_text
from emotion_lightning.training.run_facts import resolved_config

log = logging.getLogger(__name__)
SPLIT_FILE = "split.csv"


def build_datamodule(cfg: DictConfig, **overrides):
    """The DataModule, set up: a missing corpus or an impossible split fails here, before any model.

    The robustness condition degrades the test clips; augmentation's waveform transforms the training clips.
    """
    robustness, augment = cfg.get("robustness"), cfg.get("augment")
    transforms = {
        "test_transform": instantiate(robustness.chain) if robustness else None,
        "test_transform_seed": robustness.seed if robustness else 0,
        "train_transform": instantiate(augment.waveform) if augment and augment.waveform else None,
    }
    datamodule = instantiate(cfg.data, split=instantiate(cfg.split), **transforms, **overrides)
    datamodule.setup("fit")
    split_table = splits.summary(datamodule.manifest, datamodule.assignment)
    write_text(Path(cfg.paths.output_dir) / "split_summary.csv", split_table.to_csv(index=False))
    # The exact partition, clip by clip: `split=file split.path=RUN_DIR/split.csv` reproduces it.
    write_text(Path(cfg.paths.output_dir) / SPLIT_FILE, datamodule.split_table().to_csv(index=False))
    log.info("clips per part:\n%s", split_table.to_string(index=False))
    return datamodule


def augmentation(augment: DictConfig | None) -> dict:
    """The model's constructor arguments for SpecAugment and mixup; none when `augment=none`."""
    if not augment or augment.get("name", "none") == "none":
        return {}
    spec_augment = instantiate(augment.spec_augment) if augment.get("spec_augment") else None
    return {"spec_augment": spec_augment, "mixup_alpha": augment.get("mixup_alpha", 0.0)}


def build_model(cfg: DictConfig):
    """The configured model, given its augmentation and the resolved run config (saved in its checkpoints).

    The run config is handed to the built constructor rather than to `instantiate`, which would build the
    `_target_`s inside it (the DataModule, the split) a second time.
    """
    constructor = instantiate(cfg.model, _partial_=True, **augmentation(cfg.get("augment")))
    return constructor(run_config=resolved_config(cfg))
