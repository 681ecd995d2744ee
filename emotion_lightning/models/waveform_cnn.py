"""A 1-D CNN on the raw waveform (the earlier project's SimpleCNNAudio, about 4.46M parameters)."""

import torch
from torch import nn


def conv1d_block(in_channels: int, out_channels: int, kernel: int, stride: int = 1, pool: int = 1) -> nn.Sequential:
    layers = [nn.Conv1d(in_channels, out_channels, kernel, stride=stride, padding=kernel // 2, bias=False),
              nn.BatchNorm1d(out_channels), nn.ReLU(inplace=True)]
    if pool > 1:
        layers.append(nn.MaxPool1d(pool))
    return nn.Sequential(*layers)


class WaveformCNN(nn.Module):
    """Multi-scale stem (short, medium and long kernels side by side, so the first layer sees both pitch
    periods and formant-scale detail), four conv blocks, average+max adaptive pooling, MLP head.
    Any clip length works: the pooling is adaptive. Input: (batch, samples), standardised per clip."""

    def __init__(self, num_classes: int = 8, stem_kernels: tuple[int, ...] = (11, 51, 101), stem_channels: int = 32,
                 channels: tuple[int, ...] = (128, 256, 512, 512), hidden: int = 512, dropout: float = 0.3):
        super().__init__()
        self.stem = nn.ModuleList(conv1d_block(1, stem_channels, k, stride=4, pool=8) for k in stem_kernels)
        blocks, in_channels = [], stem_channels * len(stem_kernels)
        for index, out_channels in enumerate(channels):
            blocks.append(conv1d_block(in_channels, out_channels, 9, pool=4 if index < len(channels) - 2 else
                                       (2 if index == len(channels) - 2 else 1)))
            in_channels = out_channels
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.Linear(2 * in_channels, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                  nn.Linear(hidden, num_classes))

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        x = (waveform - waveform.mean(dim=1, keepdim=True)) / (waveform.std(dim=1, keepdim=True) + 1e-5)
        x = x.unsqueeze(1)
        x = self.blocks(torch.cat([branch(x) for branch in self.stem], dim=1))
        return self.head(torch.cat([x.mean(dim=2), x.amax(dim=2)], dim=1))
