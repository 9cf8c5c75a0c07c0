"""Training-step helpers the families share: the constant-then-linear LR schedule and freezing nets (discriminators)
during a generator step. Network-only helpers (init, padding) live in `gansvc.nn.i2i_util`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from gansvc.nn.wrappers import unwrap


@dataclass
class LinearDecay:
    """LR factor after `step` scheduler steps: 1 until `decay_start`, then linearly down to 0 over `decay_steps`.

    Zhu et al. 2017 sec. 4 / official `lr_policy='linear'`: keep the LR for n_epochs, then decay linearly to zero over
    n_epochs_decay; U-GAT-IT (official UGATIT.py, `decay_flag`) decays linearly over the second half of training.
    Counted in optimisation steps here. A dataclass (not a lambda) so `LambdaLR.state_dict()` stores its fields.
    """

    decay_start: int
    decay_steps: int

    def __call__(self, step: int) -> float:
        if self.decay_steps <= 0:
            return 1.0 if step < self.decay_start else 0.0
        return max(0.0, 1.0 - max(0, step - self.decay_start) / self.decay_steps)


def linear_decay_scheduler(
    opt: torch.optim.Optimizer, decay_start: int, decay_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda=LinearDecay(decay_start, decay_steps))


@contextmanager
def frozen(*nets: nn.Module, eval_mode: bool = True) -> Iterator[None]:
    """Use `nets` as fixed functions inside a generator step.

    Their parameters get no gradients (gradients still flow through them to their inputs; their own weight gradients
    are never computed, which saves about a third of their backward), they run in eval mode so buffers do not move
    (spectral norm skips its power iteration) unless `eval_mode=False` (batch-norm discriminators of the DCGAN family
    judge G's samples with batch statistics, as the reference code does), and a DDP wrapper runs under `no_sync()` so
    it does not wait for gradients that never come. Modes and `requires_grad` flags are restored on exit.
    """
    saved: list[tuple[nn.Module, bool, list[tuple[nn.Parameter, bool]]]] = []
    with ExitStack() as stack:
        for net in nets:
            params = list(unwrap(net).parameters())
            saved.append((net, net.training, [(p, p.requires_grad) for p in params]))
            for p in params:
                p.requires_grad_(False)
            if eval_mode:
                net.eval()
            no_sync = getattr(net, "no_sync", None)
            if callable(no_sync):
                stack.enter_context(no_sync())
        try:
            yield
        finally:
            for net, mode, flags in saved:
                net.train(mode)
                for p, flag in flags:
                    p.requires_grad_(flag)
