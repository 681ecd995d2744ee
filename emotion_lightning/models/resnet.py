"""The earlier project's small ResNet on log-mel spectrograms."""

from torch import nn


class ResidualBlock(nn.Module):
    """Two 3x3 conv-BN layers with a skip connection (1x1 projection when the shape changes)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.skip = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.skip = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )
        self.activation = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.activation(self.body(x) + self.skip(x))


class ResNet(nn.Module):
    """Conv 1->16, ResBlock 16->16 x2, 16->32 x2, 32->64 x2, global average pool, Linear 64->classes.

    Each widening stage halves time and frequency; `stem_pool` halves them once more after the stem
    (a 4x cheaper network on CPU at little cost in accuracy; set it to 1 for the earlier project's exact layout).
    """

    def __init__(self, num_classes: int = 8, channels: tuple[int, ...] = (16, 32, 64), blocks_per_stage: int = 2,
                 stem_pool: int = 2, dropout: float = 0.2):
        super().__init__()
        layers = [nn.Conv2d(1, channels[0], 3, padding=1, bias=False), nn.BatchNorm2d(channels[0]),
                  nn.ReLU(inplace=True)]
        if stem_pool > 1:
            layers.append(nn.MaxPool2d(stem_pool))
        in_channels = channels[0]
        for stage, out_channels in enumerate(channels):
            for block in range(blocks_per_stage):
                stride = 2 if stage > 0 and block == 0 else 1
                layers.append(ResidualBlock(in_channels, out_channels, stride))
                in_channels = out_channels
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                                  nn.Linear(in_channels, num_classes))

    def forward(self, features):
        return self.head(self.features(features))
