"""The ICM committee's networks (004 appendix B, Table 1): an image-to-image expert and the discriminator."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


BatchStats = list[tuple[torch.Tensor, torch.Tensor]]  # per batch-norm layer: (mean, 1 / std), each (channels,)


class Expert(nn.Module):
    """An expert E_j: image -> image of the same shape, a conditional GAN generator (004 sec 4).

    004 Table 1: `layers` blocks of (1-pixel zero padding, 3x3 conv, `channels` filters, batch norm, ELU),
    then a 3x3 conv back to the image's channels and a sigmoid, so outputs lie in [0, 1] like the data.
    Table 1 lists seven such blocks plus the output conv (eight convs, 56,545 parameters for one channel);
    the main text says "five convolutional layers", and footnote 5's "~27K parameters" for 32 filters fits
    five (1 -> 32, three 32 -> 32, 32 -> 1: 28,609 with batch norm). We follow the table by default
    (`layers: 7`); `layers: 4` gives the main text's five-conv network.
    x: (B, C, H, W) in [0, 1] -> (B, C, H, W) in [0, 1]; no resampling, so any H, W works.

    The committee scores every expert on a whole batch but trains each winner only on the images it won
    (004 Algorithm 1): `forward_batch_stats` (training mode, no grad) also returns each batch-norm layer's batch
    statistics, and `forward(x_won, stats=...)` normalises a subset with those same statistics, so the
    outputs being trained are the outputs that were scored (a subset's own statistics would differ).
    """

    def __init__(self, *, in_channels: int = 1, channels: int = 32, layers: int = 7):
        super().__init__()
        if layers < 1 or channels < 1:
            raise ValueError(f"Expert: layers and channels must be positive, got layers={layers}, channels={channels}")
        widths = [in_channels] + [channels] * layers
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1) for a, b in zip(widths[:-1], widths[1:]))
        self.norms = nn.ModuleList(nn.BatchNorm2d(channels) for _ in range(layers))
        self.out = nn.Conv2d(channels, in_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, stats: BatchStats | None = None) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W); with `stats` (from forward_batch_stats), batch norm uses those
        statistics (their gradient is not propagated) instead of this batch's or the running ones."""
        h = x
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            h = conv(h)
            if stats is None:
                h = norm(h)
            else:  # (h - mean) / std * weight + bias with the given mean and 1 / std: (1, channels, 1, 1) each
                mean, invstd = stats[i]
                scale = invstd * norm.weight
                h = h * scale.view(1, -1, 1, 1) + (norm.bias - mean * scale).view(1, -1, 1, 1)
            h = F.elu(h)
        return torch.sigmoid(self.out(h))

    @torch.no_grad()
    def forward_batch_stats(self, x: torch.Tensor) -> tuple[torch.Tensor, BatchStats | None]:
        """Forward of a whole batch without grad: (outputs (B, C, H, W), each batch-norm layer's (mean, 1 / std)
        of this batch). Running statistics are updated exactly as nn.BatchNorm2d's training forward does. In eval
        mode the running statistics normalise every image alike, so the stats are None (forward(subset) agrees)."""
        if not self.training:
            return self(x), None
        stats: BatchStats = []
        h = x
        for conv, norm in zip(self.convs, self.norms):
            # aten's batch norm returns the batch mean and inverse std it normalised with, and updates the
            # running statistics in place (momentum, unbiased variance) as nn.BatchNorm2d's training forward
            h, mean, invstd = torch.ops.aten.native_batch_norm(conv(h), norm.weight, norm.bias, norm.running_mean,
                                                               norm.running_var, True, norm.momentum, norm.eps)
            norm.num_batches_tracked.add_(1)
            stats.append((mean, invstd))
            h = F.elu(h)
        return torch.sigmoid(self.out(h)), stats


class Discriminator(nn.Module):
    """D: image -> logit of "canonical" (the score c = sigmoid(logit), 004 sec 4 and Table 1).

    Stages of (1-pixel zero padding, 3x3 conv, ELU) layers, each stage followed by 2x2 average pooling;
    Table 1: three convs of 16 filters, two of 32, two of 64 (the text: "average pooling every two
    convolutional layers, growing number of filters"), then a fully connected ELU layer of 1024 and one
    output unit. The table's final sigmoid is left to the loss (BCE with logits, numerically stable) and
    to `score()`.
    x: (B, C, R, R) -> (B,) logits; R must be divisible by 2 ** len(stages).
    """

    def __init__(self, *, in_channels: int = 1, resolution: int = 32,
                 stages: Sequence[Sequence[int]] = ((16, 16, 16), (32, 32), (64, 64)), hidden: int = 1024):
        super().__init__()
        if not stages or any(not s for s in stages):
            raise ValueError(f"Discriminator: every stage needs at least one conv, got {[list(s) for s in stages]}")
        if resolution % 2 ** len(stages):
            raise ValueError(f"Discriminator: resolution {resolution} is not divisible by 2 ** {len(stages)} "
                             f"(one 2x2 average pooling per stage)")
        layers: list[nn.Module] = []
        c = in_channels
        for stage in stages:
            for width in stage:
                layers += [nn.Conv2d(c, width, 3, padding=1), nn.ELU()]
                c = width
            layers.append(nn.AvgPool2d(2))
        side = resolution // 2 ** len(stages)
        self.features = nn.Sequential(*layers)
        # (B, c, side, side) -> (B, c * side^2) -> 1024 -> 1 (Table 1: "1024, FC, ELU" then "1, FC, sigmoid")
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(c * side * side, hidden), nn.ELU(), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).squeeze(1)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """c(x) = D(x) in (0, 1): (B, C, R, R) -> (B,)."""
        return torch.sigmoid(self.forward(x))
