"""The course's CIFAR-10 network, layer for layer.

The course's model has no activation functions between its layers (it is, as written,
a linear map followed by max-pooling); `tudui` keeps it that way so results compare
with the course. `tudui_relu` is the same stack with BatchNorm and ReLU after each
convolution, which is what the network was meant to be.
"""
from torch import nn

from tudui.models.registry import register_model


def _stack(num_classes: int, activation: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for c_in, c_out in ((3, 32), (32, 32), (32, 64)):
        layers.append(nn.Conv2d(c_in, c_out, 5, padding=2))
        if activation:
            layers += [nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
        layers.append(nn.MaxPool2d(2))
    layers += [nn.Flatten(), nn.Linear(64 * 4 * 4, 64)]
    if activation:
        layers.append(nn.ReLU(inplace=True))
    layers.append(nn.Linear(64, num_classes))
    return nn.Sequential(*layers)


class Tudui(nn.Module):
    """Conv-Pool x3, Flatten, Linear x2 on 32x32 RGB images."""

    def __init__(self, num_classes: int = 10, activation: bool = False):
        super().__init__()
        self.model = _stack(num_classes, activation)

    def forward(self, x):
        return self.model(x)


@register_model("tudui", input_size=32)
def tudui(num_classes: int = 10) -> nn.Module:
    """The course's network exactly: Conv-Pool x3, Flatten, Linear(1024, 64), Linear(64, n)."""
    return Tudui(num_classes)


@register_model("tudui_relu", input_size=32)
def tudui_relu(num_classes: int = 10) -> nn.Module:
    """The course's network with BatchNorm + ReLU after each conv and ReLU between the Linears."""
    return Tudui(num_classes, activation=True)
