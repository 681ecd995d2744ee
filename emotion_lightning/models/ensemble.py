"""An ensemble of trained checkpoints: a (weighted) mean of their class probabilities."""

import torch
from torch import nn

from emotion_lightning.data.errors import SettingError
from emotion_lightning.models.module import EmotionClassifier


class ProbabilityMean(nn.Module):
    """Waveform -> log of the weighted mean of the members' calibrated probabilities (each member's logits
    divided by its own fitted temperature: members of different confidence then weigh as their accuracy says)."""

    def __init__(self, members: list[EmotionClassifier], weights: list[float] | None = None):
        super().__init__()
        self.members = nn.ModuleList(members)
        weights = torch.ones(len(members)) if weights is None else torch.as_tensor(weights, dtype=torch.float32)
        if len(weights) != len(members) or (weights < 0).any() or weights.sum() == 0:
            raise SettingError(f"model.weights={weights.tolist()}: give one non-negative weight per checkpoint")
        self.register_buffer("weights", weights / weights.sum())

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        probabilities = torch.stack([(member(waveform) / member.temperature).softmax(dim=-1) for member in self.members])
        return (self.weights[:, None, None] * probabilities).sum(dim=0).clamp_min(1e-12).log()


def build_ensemble(checkpoints: list[str] | None, weights: list[float] | None = None, name: str = "ensemble",
                   classes: list[str] | None = None, run_config: dict | None = None, sweeps: list[str] | None = None,
                   spec_augment=None, mixup_alpha: float | None = None, batch_augment=None) -> EmotionClassifier:
    """An EmotionClassifier over trained checkpoints; it is tested, never trained (so never augmented).

    `sweeps` (model.sweeps) is where the train command found `checkpoints` (training/ensemble_members.py);
    it is kept in the run config, as the ensemble's identity, and not read here.
    """
    if spec_augment is not None or mixup_alpha is not None or batch_augment is not None:
        raise SettingError(f"augment={(run_config or {}).get('augment', {}).get('name', '?')} needs a model trained "
                           f"by gradient descent; an ensemble of checkpoints is only tested (use augment=none)")
    if not checkpoints or len(checkpoints) < 2:
        raise SettingError("model.checkpoints: list at least two trained checkpoints (.ckpt) to ensemble")
    members = [EmotionClassifier.from_checkpoint(path) for path in checkpoints]
    audio = {str(m.run_config["audio"]) for m in members}
    member_classes = {tuple(m.classes) for m in members}
    if len(member_classes) > 1 or len(audio) > 1:
        raise SettingError(f"model.checkpoints: members differ in classes {member_classes} or audio settings {audio}")
    if classes is not None and list(classes) != members[0].classes:
        raise SettingError(f"data.classes {list(classes)} differ from the checkpoints' classes {members[0].classes}")
    ensemble = EmotionClassifier(ProbabilityMean(members, weights), classes=members[0].classes, name=name,
                                 run_config=run_config)
    ensemble.trainable = False
    return ensemble.eval()
