"""fastnet: the network of the CIFAR-10 speed records, sized by a widths setting.

The shape follows airbench94 (Jordan, "94% on CIFAR-10 in 3.29 seconds on a single GPU",
arXiv 2404.00498; 94 % in 3.29 s on an A100): a frozen 2x2 whitening stem, three groups of
conv -> max-pool -> BatchNorm -> GELU -> conv -> BatchNorm -> GELU, identity-initialised
convolutions, BatchNorm that learns only its bias, and a down-scaled linear head.
"""
from __future__ import annotations

import torch
from torch import nn

from tudui.models.registry import register_model

DEFAULT_WIDTHS = (64, 256, 256)
MAX_WIDTH = 4096   # airbench's widest is 384; wider would only allocate gigabytes


class BiasOnlyBatchNorm(nn.BatchNorm2d):
    """BatchNorm whose scale stays 1: only the shift is learned (fewer, better-behaved params)."""

    def __init__(self, channels: int, momentum: float = 0.4):
        super().__init__(channels, eps=1e-12, momentum=momentum)
        self.weight.requires_grad_(False)


class IdentityConv(nn.Conv2d):
    """3x3 'same' convolution whose first in-channels filters start as the identity (dirac)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__(c_in, c_out, kernel_size=3, padding="same", bias=False)
        with torch.no_grad():
            nn.init.dirac_(self.weight[:min(c_in, c_out)])


class ConvGroup(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1 = IdentityConv(c_in, c_out)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = BiasOnlyBatchNorm(c_out)
        self.conv2 = IdentityConv(c_out, c_out)
        self.norm2 = BiasOnlyBatchNorm(c_out)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm1(self.pool(self.conv1(x))))
        return self.act(self.norm2(self.conv2(x)))


class FastNet(nn.Module):
    def __init__(self, num_classes: int = 10, widths: tuple[int, int, int] = DEFAULT_WIDTHS,
                 head_scale: float = 1 / 9):
        super().__init__()
        self.whiten = nn.Conv2d(3, 24, kernel_size=2, padding=0, bias=True)
        self.whiten.weight.requires_grad_(False)  # set from the data by init_whitening, then frozen
        self.act = nn.GELU()
        self.groups = nn.Sequential(ConvGroup(24, widths[0]), ConvGroup(widths[0], widths[1]),
                                    ConvGroup(widths[1], widths[2]))
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.head = nn.Linear(widths[2], num_classes, bias=False)
        self.head_scale = head_scale

    @torch.no_grad()
    def init_whitening(self, images: torch.Tensor, eps: float = 5e-4) -> None:
        """Set the stem to whiten 2x2 patches of (normalised) training images.

        Its 24 filters are the 12 eigenvectors of the patch covariance scaled by 1/sqrt(eigenvalue),
        and their negatives, so the GELU after it keeps both signs of every component.
        """
        c, (h, w) = images.shape[1], self.whiten.kernel_size
        patches = images.float().unfold(2, h, 1).unfold(3, w, 1).transpose(1, 3).reshape(-1, c * h * w)
        covariance = patches.T @ patches / len(patches)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
        filters = (eigenvectors.T / torch.sqrt(eigenvalues.clamp(min=0) + eps).view(-1, 1)).flip(0)
        filters = filters.reshape(c * h * w, c, h, w)
        self.whiten.weight.copy_(torch.cat([filters, -filters]).to(self.whiten.weight))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.groups(self.act(self.whiten(x)))
        return self.head(self.pool(x).flatten(1)) * self.head_scale


class WhitenBiasSchedule:
    """A hook that lets fastnet's whitening bias learn for the first `epochs` epochs, then freezes it.

    airbench trains that bias for the first three epochs only (Jordan 2024, arXiv 2404.00498);
    left free, it can grow without bound where the whitening gain is large.
    """

    def __init__(self, bias: nn.Parameter, epochs: int):
        self.bias, self.epochs = bias, epochs

    def on_epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        self.bias.requires_grad_(epoch <= self.epochs)


def whiten_bias_schedule(model: nn.Module, epochs: int) -> WhitenBiasSchedule | None:
    """The schedule for model's whitening bias, or None (-1 epochs: never frozen; not a fastnet)."""
    stem = getattr(model, "whiten", None)
    if epochs < 0 or stem is None or stem.bias is None:
        return None
    return WhitenBiasSchedule(stem.bias, epochs)


def parse_widths(widths: str | tuple | list | None) -> tuple[int, int, int]:
    if not widths:
        return DEFAULT_WIDTHS
    try:
        values = tuple(int(w) for w in (widths.split(",") if isinstance(widths, str) else widths))
    except (TypeError, ValueError):
        values = ()
    if len(values) != 3 or not all(1 <= w <= MAX_WIDTH for w in values):
        raise ValueError(f"fastnet needs three widths from 1 to {MAX_WIDTH}, got {str(widths)[:40]!r}")
    return values


@register_model("fastnet", input_size=32)
def fastnet(num_classes: int = 10, widths: str | tuple | None = None) -> nn.Module:
    """The CIFAR-10 speed-record net (whitened stem, 3 conv groups); --widths sets its size."""
    return FastNet(num_classes, parse_widths(widths))
