"""emotion-lightning: Hydra-configured PyTorch Lightning framework for speech emotion recognition.

Layers, each importing only from those before it:
data -> evaluation -> models -> training -> inference -> the command entry points in this folder.
"""

from emotion_lightning.training import resolvers

# `${len:...}`, `${job_device:...}`, `${sweep_name:}`: config values the YAML files need before anything runs.
resolvers.register()

__version__ = "0.1.0"
