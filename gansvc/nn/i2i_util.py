"""Network helpers the image-to-image families share: weight init and padding / cropping for translation.

Training-schedule helpers (the constant-then-linear LR schedule, freezing discriminators during a generator step) live
in `gansvc.families.training`; `gansvc.nn` holds networks and layers only.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


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
        raise ValueError(
            f"translate expects images of shape (N, {channels}, H, W) scaled to [-1, 1], got {tuple(images.shape)}"
        )


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
