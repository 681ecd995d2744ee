"""Sequence models over log-mel frames: a bidirectional LSTM and a Transformer encoder.

Both read the front-end's (batch, 1, mels, frames) output as a sequence of frames and pool over time
(mean and max) instead of taking the last step, so every frame contributes to the decision.
"""

import math

import torch
from torch import nn


def frames(features: torch.Tensor) -> torch.Tensor:
    """(batch, 1, mels, frames) -> (batch, frames, mels)."""
    return features.squeeze(1).transpose(1, 2)


def mean_max_pool(sequence: torch.Tensor) -> torch.Tensor:
    """(batch, time, dim) -> (batch, 2 * dim)."""
    return torch.cat([sequence.mean(dim=1), sequence.amax(dim=1)], dim=1)


class LSTMClassifier(nn.Module):
    """Bidirectional LSTM over mel frames (the earlier project's: 64 hidden, 2 layers, dropout 0.3)."""

    def __init__(self, num_classes: int = 8, n_mels: int = 64, hidden_size: int = 64, num_layers: int = 2,
                 dropout: float = 0.3):
        super().__init__()
        self.lstm = nn.LSTM(n_mels, hidden_size, num_layers=num_layers, batch_first=True, bidirectional=True,
                            dropout=dropout if num_layers > 1 else 0.0)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(4 * hidden_size, num_classes))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        outputs, _ = self.lstm(frames(features))
        return self.head(mean_max_pool(outputs))


class SinusoidalPositions(nn.Module):
    """Adds the fixed sine/cosine position code of 'Attention is all you need'."""

    def __init__(self, dim: int, max_length: int = 4096):
        super().__init__()
        position = torch.arange(max_length).unsqueeze(1)
        scale = torch.exp(torch.arange(0, dim, 2) * (-math.log(10000.0) / dim))
        table = torch.zeros(max_length, dim)
        table[:, 0::2] = torch.sin(position * scale)
        table[:, 1::2] = torch.cos(position * scale)
        self.register_buffer("table", table, persistent=False)

    def forward(self, sequence: torch.Tensor) -> torch.Tensor:
        return sequence + self.table[: sequence.shape[1]]


class TransformerClassifier(nn.Module):
    """Transformer encoder over mel frames (the earlier project's: d_model 64, 4 heads, 2 layers), pooled over time."""

    def __init__(self, num_classes: int = 8, n_mels: int = 64, d_model: int = 64, num_heads: int = 4,
                 num_layers: int = 2, feedforward: int = 256, dropout: float = 0.1):
        super().__init__()
        self.project = nn.Linear(n_mels, d_model)
        self.positions = SinusoidalPositions(d_model)
        layer = nn.TransformerEncoderLayer(d_model, num_heads, feedforward, dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * d_model, num_classes))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        encoded = self.norm(self.encoder(self.positions(self.project(frames(features)))))
        return self.head(mean_max_pool(encoded))
