"""Exponential moving average of generator weights (Karras et al. 2018; Yazici et al. 2019).

theta_ema <- decay * theta_ema + (1 - decay) * theta after every generator update. Buffers (batch-norm running
statistics) are copied, not averaged. The EMA copy is never trained, never wrapped in DDP, and is what inference uses.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from gansvc.nn.wrappers import unwrap


def ema_copy(net: nn.Module) -> nn.Module:
    """A frozen deep copy of `net` (unwrapped) to hold the average; starts equal to `net`. It is in eval mode: it is
    only ever used for inference (batch norm then uses the running statistics copied from `net`)."""
    ema = copy.deepcopy(unwrap(net))
    for p in ema.parameters():
        p.requires_grad_(False)
    return ema.eval()


@torch.no_grad()
def ema_update(ema: nn.Module, net: nn.Module, decay: float) -> None:
    """One EMA step of `ema` towards the current weights of `net` (a plain module or a wrapper)."""
    src = unwrap(net)
    for p_ema, p in zip(ema.parameters(), src.parameters(), strict=True):
        p_ema.lerp_(p.detach().to(p_ema.dtype), 1.0 - decay)
    for b_ema, b in zip(ema.buffers(), src.buffers(), strict=True):
        b_ema.copy_(b)
