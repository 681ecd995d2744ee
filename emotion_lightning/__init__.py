"""emotion-lightning: Hydra-configured PyTorch Lightning framework for speech emotion recognition."""

from omegaconf import OmegaConf

# `${len:${data.classes}}` lets model configs size their output layer from the data config.
if not OmegaConf.has_resolver("len"):
    OmegaConf.register_new_resolver("len", lambda items: len(items))

from emotion_lightning import resolvers  # noqa: E402

resolvers.register()

__version__ = "0.1.0"
