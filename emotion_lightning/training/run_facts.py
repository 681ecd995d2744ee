"""Facts about a run worth recording beside its metrics (config choices, test condition, library versions),
and the metrics.json record that train and eval both write."""

import platform
from importlib.metadata import PackageNotFoundError, version

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from emotion_lightning.evaluation.identity import member_identities, result_settings

LIBRARIES = ("torch", "torchaudio", "lightning", "hydra-core", "torchmetrics", "transformers", "numpy", "soundfile")


def config_choices() -> dict[str, str]:
    """The chosen option of each config group (model, data, split, ...), when run through Hydra."""
    if not HydraConfig.initialized():
        return {}
    return {group: str(option) for group, option in HydraConfig.get().runtime.choices.items()
            if not group.startswith("hydra/") and option is not None}


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def condition_facts(cfg: DictConfig) -> dict:
    """How the test audio was degraded (`robustness`) and the training audio augmented (`augment`)."""
    robustness, augment = cfg.get("robustness") or {}, cfg.get("augment") or {}
    return {"condition": robustness.get("label", "clean"), "snr_db": robustness.get("snr_db"),
            "augment": augment.get("name", "none")}


def resolved_config(cfg: DictConfig) -> dict:
    """The run's config as plain values, interpolations resolved; Hydra's own node (present when a config is
    composed with it, as in tests) is left out."""
    return {key: OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
            for key, value in cfg.items_ex(resolve=True) if key != "hydra"}


def run_record(cfg: DictConfig, test_results: dict, tested, datamodule, **facts) -> dict:
    """The metrics.json record of a train or eval run: test results, what ran on what, and `facts` (fit facts,
    or what the evaluated checkpoint was trained with), which override the defaults taken from `cfg`."""
    choices = config_choices()
    settings = result_settings(resolved_config(cfg))
    members = getattr(getattr(tested, "network", None), "members", None)
    if members is not None:  # an ensemble: which checkpoints made it, on this split and fold
        facts = {"member_checkpoints": [member.checkpoint_path for member in members], **facts}
    # The configuration of an ensemble given by checkpoints is its members' configurations (their paths differ
    # from fold to fold); one given by model.sweeps is those sweeps, so that its folds pool as one command's row.
    if settings.get("model.checkpoints") and members is not None:
        settings["model.checkpoints"] = member_identities([member.run_config for member in members])
    return {
        **test_results,
        # the model config's `name` (simple_cnn_deep is a simple_cnn: its runs pool with the same network given by
        # overrides); the config group's choice only where a config names nothing
        "model": tested.name if tested.name != "model" else choices.get("model", tested.name),
        "params": tested.num_parameters,
        "data": choices.get("data", "custom"), "split": choices.get("split", type(datamodule.split).__name__),
        "seed": cfg.seed, **condition_facts(cfg), "skipped_files": len(datamodule.skipped),
        # What makes this configuration: aggregate and report pool runs whose settings differ only in seed and fold.
        "settings": settings, **facts,
        "choices": choices, "versions": library_versions(),
    }
