"""Facts about a run worth recording beside its metrics: config choices and library versions."""

import platform
from importlib.metadata import PackageNotFoundError, version

from hydra.core.hydra_config import HydraConfig

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
