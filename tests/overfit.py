"""The overfitting check shared by the model tests: a network must drive the loss on one batch down."""

import torch


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
