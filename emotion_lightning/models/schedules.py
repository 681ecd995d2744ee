"""Learning-rate schedules that torch does not ship as one constructor (a partial in the config completes them
with the optimiser)."""

import math

import torch


def warmup_cosine(optimizer: torch.optim.Optimizer, max_epochs: int, warmup_epochs: int = 0,
                  final_fraction: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over `warmup_epochs` (from 1/(warmup+1) of the base rate), then a cosine from the base rate
    down to `final_fraction` of it at `max_epochs`; stepped once per epoch."""
    if max_epochs < 1 or not 0 <= warmup_epochs < max_epochs:
        raise ValueError(f"warm-up of {warmup_epochs} epochs must fit inside max_epochs={max_epochs}")

    def factor(epoch: int) -> float:
        if epoch < warmup_epochs:
            return (epoch + 1) / (warmup_epochs + 1)
        progress = min(1.0, (epoch - warmup_epochs) / max(1, max_epochs - warmup_epochs))
        return final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
