"""The plain module behind a wrapper: the one definition of `unwrap` (nn may not import families, so it lives here
and `gansvc.families.base` re-exports it)."""

from __future__ import annotations

from torch import nn


def unwrap(net: nn.Module) -> nn.Module:
    """The plain module behind DistributedDataParallel (`.module`) and torch.compile (`._orig_mod`) wrappers, nested
    in any order."""
    while True:
        inner = getattr(net, "module", None) or getattr(net, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return net
        net = inner
