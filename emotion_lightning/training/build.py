"""Objects a run is made of, built from its config: the DataModule (set up, its split written down) and the model
(augmentation and the resolved run config handed over at construction)."""

import logging
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from emotion_lightning.data import splits
from emotion_lightning.data.atomic import write_text
from emotion_lightning.data.errors import SettingError
from emotion_lightning.models.augment import split_chain
from emotion_lightning.models.feature_cache import frozen_features
from emotion_lightning.models.pretrained import PretrainedEncoderClassifier
from emotion_lightning.training.distributed import local_rank, rank_zero
from emotion_lightning.training.ensemble_members import member_checkpoints
from emotion_lightning.training.run_facts import resolved_config

log = logging.getLogger(__name__)


def build_datamodule(cfg: DictConfig, tested_part: str = "test", **overrides):
    """The DataModule, set up: a missing corpus or an impossible split fails here, before any model.

    The robustness condition degrades the test clips; augmentation's codec is served from codec variants.
    `tested_part="val"` makes the split's val clips the tested ones (see splits.ValidationAsTest).
    """
    robustness = cfg.get("robustness")
    transforms = {
        "test_transform": instantiate(robustness.chain) if robustness else None,
        "test_transform_seed": robustness.seed if robustness else 0,
        "train_codec": waveform_augmentation(cfg)[1],
    }
    split = instantiate(cfg.split)
    datamodule = instantiate(cfg.data, split=splits.ValidationAsTest(split) if tested_part == "val" else split,
                             **transforms, **overrides)
    datamodule.setup("fit")
    split_table = splits.summary(datamodule.manifest, datamodule.assignment)
    if rank_zero():
        write_text(Path(cfg.paths.output_dir) / "split_summary.csv", split_table.to_csv(index=False))
        # The exact partition, clip by clip: `split=file split.path=RUN_DIR/split.csv` reproduces it.
        write_text(Path(cfg.paths.output_dir) / splits.SPLIT_FILE, datamodule.split_table().to_csv(index=False))
        log.info("clips per part:\n%s", split_table.to_string(index=False))
    return datamodule


def waveform_augmentation(cfg: DictConfig) -> tuple:
    """`augment.waveform` split into (the model's batch augmentation, the DataModule's codec); see models/augment.py."""
    augment = cfg.get("augment")
    chain = instantiate(augment.waveform) if augment and augment.get("waveform") else None
    return split_chain(chain, cfg.audio.sample_rate)


def augmentation(cfg: DictConfig) -> dict:
    """The model's constructor arguments for batch augmentation, SpecAugment and mixup; none when no field asks
    for any. Decided by the fields, not the preset's name: `augment=none augment.mixup_alpha=0.2` mixes up."""
    augment = cfg.get("augment")
    if not augment:
        return {}
    arguments = {"spec_augment": instantiate(augment.spec_augment) if augment.get("spec_augment") else None,
                 "mixup_alpha": augment.get("mixup_alpha", 0.0), "batch_augment": waveform_augmentation(cfg)[0]}
    wanted = arguments["spec_augment"] is not None or arguments["mixup_alpha"] or arguments["batch_augment"] is not None
    return arguments if wanted else {}


def build_model(cfg: DictConfig, datamodule=None):
    """The configured model, given its augmentation and the resolved run config (saved in its checkpoints); an
    ensemble given `model.sweeps` gets the checkpoints of the runs that tested the (set-up) datamodule's test clips.

    The run config is handed to the built constructor rather than to `instantiate`, which would build the
    `_target_`s inside it (the DataModule, the split) a second time.
    """
    members = member_checkpoints(cfg, datamodule)
    constructor = instantiate(cfg.model, _partial_=True, **augmentation(cfg),
                              **({"checkpoints": members} if members else {}))
    return constructor(run_config=resolved_config(cfg))


def job_torch_device(cfg: DictConfig) -> torch.device:
    """The device this process's trainer will run on, for work done before the Trainer exists (the frozen encoder's
    one-off pass): the CPU for a CPU trainer, else this process's GPU among `trainer.devices` (GPU k of a sweep job
    given [k]; under DDP, the GPU of this process's rank on its machine)."""
    accelerator, devices = str(cfg.trainer.get("accelerator", "cpu")), cfg.trainer.get("devices", 1)
    if accelerator not in ("gpu", "cuda", "auto") or not torch.cuda.is_available():
        return torch.device("cpu")
    rank = local_rank()
    devices = list(devices) if OmegaConf.is_list(devices) or isinstance(devices, (list, tuple)) else None
    return torch.device("cuda", int(devices[rank]) if devices else rank)


def use_feature_cache(cfg: DictConfig, model, datamodule) -> bool:
    """A frozen pretrained encoder's train and val clips come from its feature cache (`feature_cache.enabled`):
    hidden states computed once, so epochs run only the layer mix and the head (val from the centre crops' own
    encodings, equal to the audio path's); with its lower layers alone frozen (model.network.frozen_layers), epochs
    run the layers above them too. The test part stays on audio."""
    settings = cfg.get("feature_cache")
    network = getattr(model, "network", None)
    if not (settings and settings.enabled and isinstance(network, PretrainedEncoderClassifier)
            and network.cached_layers is not None):
        return False
    if getattr(model, "batch_augment", None) is not None:
        raise SettingError("augment.waveform changes the audio every epoch, but the frozen encoder's feature cache "
                           "holds the clean clips' hidden states: set feature_cache.enabled=false to augment through "
                           "the encoder, or use augment=none or augment=mixup")
    if network.log_mel_augment is not None:
        raise SettingError("augment.spec_augment masks Whisper's log-mel, which the cached hidden states of "
                           "model.network.frozen_layers never pass through: mask the cached frames instead "
                           "(model.network.frame_masks), use augment=mixup, or set feature_cache.enabled=false")
    device = settings.device if settings.device != "auto" else str(job_torch_device(cfg))
    options = {"dtype": settings.dtype, "batch_size": settings.batch_size, "device": device}
    store, frames = frozen_features(network, datamodule.cache, settings.dir, **options)
    centre, _ = frozen_features(network, datamodule.cache, settings.dir, centre_crops=True, **options)
    # a mean-pooling head on a frozen encoder needs only each crop's mean over its frames (ResidentCropMeans: no
    # frames copied); layers fine-tuned above the cached one need the frames
    crop_means = network.pooling == "mean" and network.freeze_encoder
    datamodule.use_features(store, frames, parts=("train",), crop_means=crop_means)
    datamodule.use_features(centre, frames, parts=("val",), crop_means=crop_means)  # scored as eval part=val scores
    return True
