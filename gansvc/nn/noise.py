"""Gaussian instance noise inside the discriminator.

Salimans et al. 2016 ("Improved Techniques for Training GANs") suggest adding Gaussian noise to the output of each
layer of D; the anime-face DCGAN report (002, §V.8) tried noise after the first layer and after every layer. The
noise is only added in training mode. Its standard deviation is set by the training step each step (so that it can be
annealed linearly to 0, as in Sønderby et al. 2017 / Arjovsky & Bottou 2017 instance-noise schedules) and is
therefore a plain attribute, not a buffer or parameter: it never enters checkpoints or DDP buffer broadcasts.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class InstanceNoise(nn.Module):
    """x + N(0, std^2) in training mode; identity in eval mode or when std == 0."""

    def __init__(self, std: float = 0.0) -> None:
        super().__init__()
        self.std = float(std)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.std <= 0.0:
            return x
        return x + torch.randn_like(x) * self.std

    def extra_repr(self) -> str:
        return f"std={self.std}"


def annealed_std(base_std: float, step: int, anneal_steps: int) -> float:
    """Linear decay from `base_std` at step 0 to 0 at `anneal_steps`; constant when `anneal_steps` is 0."""
    if anneal_steps <= 0:
        return float(base_std)
    return float(base_std) * max(0.0, 1.0 - step / anneal_steps)


def set_instance_noise(net: nn.Module, std: float) -> int:
    """Set the std of every InstanceNoise layer in `net` (a plain module, not a DDP wrapper); returns how many."""
    n = 0
    for m in net.modules():
        if isinstance(m, InstanceNoise):
            m.std = float(std)
            n += 1
    return n
