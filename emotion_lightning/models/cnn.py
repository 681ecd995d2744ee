"""Convolutional networks on log-mel spectrograms (besides the ResNet): a plain CNN and a small DenseNet."""

import torch
from torch import nn


def conv_bn_relu(in_channels: int, out_channels: int, kernel: int = 3) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]


class SimpleCNN(nn.Module):
    """Conv-BN-ReLU-MaxPool blocks (16, 32, 64, 128 channels), global average pool, Linear."""

    def __init__(self, num_classes: int = 8, channels: tuple[int, ...] = (16, 32, 64, 128), dropout: float = 0.3):
        super().__init__()
        layers, in_channels = [], 1
        for out_channels in channels:
            layers += [*conv_bn_relu(in_channels, out_channels), nn.MaxPool2d(2)]
            in_channels = out_channels
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                                  nn.Linear(in_channels, num_classes))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(features))


class DenseLayer(nn.Module):
    """BN-ReLU-Conv 1x1 (bottleneck) then BN-ReLU-Conv 3x3, output concatenated to the input."""

    def __init__(self, in_channels: int, growth: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True), nn.Conv2d(in_channels, 4 * growth, 1, bias=False),
            nn.BatchNorm2d(4 * growth), nn.ReLU(inplace=True), nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.body(x)], dim=1)


class DenseNet(nn.Module):
    """DenseNet-BC: a stem, dense blocks joined by transitions that halve channels and resolution."""

    def __init__(self, num_classes: int = 8, growth: int = 12, block_layers: tuple[int, ...] = (4, 4, 4),
                 stem_channels: int = 24, dropout: float = 0.2):
        super().__init__()
        # A strided stem and a pool bring 64 x 94 down to 16 x 23 before the (concatenating) dense blocks.
        layers = [nn.Conv2d(1, stem_channels, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(stem_channels),
                  nn.ReLU(inplace=True), nn.MaxPool2d(2)]
        channels = stem_channels
        for index, count in enumerate(block_layers):
            for _ in range(count):
                layers.append(DenseLayer(channels, growth))
                channels += growth
            if index < len(block_layers) - 1:
                layers += [nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
                           nn.Conv2d(channels, channels // 2, 1, bias=False), nn.AvgPool2d(2)]
                channels //= 2
        layers += [nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                                  nn.Linear(channels, num_classes))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(features))
