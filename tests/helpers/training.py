"""Training in tests: the overfitting check (a network must drive the loss on one batch down) and the train
command run in a subprocess, as a user runs it."""

import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]


def run_train(*overrides, env=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "emotion_lightning.train", *overrides], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)



def overfit_losses(model: torch.nn.Module, waveform: torch.Tensor, labels: torch.Tensor, steps: int,
                   lr: float = 3e-3) -> list[float]:
    """Cross-entropy on (waveform, labels) after each of `steps` Adam steps."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model(waveform), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses
