"""Helpers the image-to-image families (`cyclegan`, `ugatit`) share: weight init, padding for translation,
the constant-then-linear LR schedule, and freezing discriminators during a generator step (EMA: `gansvc.nn.ema`).

Families never import each other, so what both need lives here.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gansvc.nn.ema import plain_module


def init_normal_(net: nn.Module, std: float = 0.02) -> None:
    """Conv / Linear weights ~ N(0, std), biases 0: `init_weights(init_type='normal', gain=0.02)` of the official
    pytorch-CycleGAN-and-pix2pix code (models/networks.py), the init of Zhu et al. 2017 (after DCGAN)."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def check_images(images: Tensor, channels: int) -> None:
    """Fail with a message that says what to send when a translate input is not (N, channels, H, W)."""
    if images.dim() != 4 or images.shape[1] != channels:
        raise ValueError(f"translate expects images of shape (N, {channels}, H, W) scaled to [-1, 1], "
                         f"got {tuple(images.shape)}")


def pad_to_multiple(images: Tensor, multiple: int = 4) -> tuple[Tensor, tuple[int, int]]:
    """Pad H and W up to a multiple of `multiple` (reflection, like the networks' own padding) so that two stride-2
    downsamplings and two x2 upsamplings give back the padded size. Returns the padded batch and the original (H, W)."""
    h, w = images.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return images, (h, w)
    # reflection needs the pad to be smaller than the side; tiny images fall back to replication
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(images, (0, pw, 0, ph), mode=mode), (h, w)


def crop_to(images: Tensor, size: tuple[int, int]) -> Tensor:
    return images[..., : size[0], : size[1]]


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


def linear_decay_scheduler(opt: torch.optim.Optimizer, decay_start: int, decay_steps: int
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
            params = list(plain_module(net).parameters())
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
