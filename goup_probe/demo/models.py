"""Small ResNet-style CNNs of the project's own (the seed used a ResNet)."""

from __future__ import annotations

from typing import Literal

from torch import nn

Init = Literal["default", "normal"]


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with batch norm and an identity (or 1×1) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        self.relu = nn.ReLU()

    def forward(self, x):  # noqa: D102
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class SmallResNet(nn.Module):
    """A ResNet for small images: a stem, then stages of :class:`BasicBlock`.

    Parameters
    ----------
    in_channels, num_classes : int
        Input channels and output classes.
    widths : tuple of int
        Channels of each stage; every stage after the first halves the resolution.
    blocks_per_stage : int
        Residual blocks per stage (3 with widths (16, 32, 64) is ResNet-20).
    init : {"default", "normal"}
        ``"default"`` keeps PyTorch's Kaiming-uniform initialisation;
        ``"normal"`` uses Kaiming-normal (fan_out) as torchvision's ResNet does.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        widths: tuple[int, ...] = (16, 32),
        blocks_per_stage: int = 1,
        init: Init = "default",
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(),
        )
        layers = []
        channels = widths[0]
        for stage, width in enumerate(widths):
            for block in range(blocks_per_stage):
                stride = 2 if stage > 0 and block == 0 else 1
                layers.append(BasicBlock(channels, width, stride))
                channels = width
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        apply_init(self, init)

    def forward(self, x):  # noqa: D102
        return self.fc(self.pool(self.layers(self.stem(x))).flatten(1))


def resnet20(in_channels: int = 3, num_classes: int = 10, init: Init = "normal") -> SmallResNet:
    """ResNet-20 for 32×32 images (He et al. 2016's CIFAR variant, ~270k parameters)."""
    return SmallResNet(in_channels, num_classes, (16, 32, 64), 3, init)


def apply_init(model: nn.Module, init: Init) -> None:
    """Re-initialise conv and linear weights: ``"default"`` leaves PyTorch's init."""
    if init == "default":
        return
    if init != "normal":
        raise ValueError(f"init must be 'default' or 'normal', got {init!r}")
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
