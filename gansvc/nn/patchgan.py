"""The 70x70 PatchGAN discriminator of pix2pix / CycleGAN (Isola et al. 2017; Zhu et al. 2017, appendix 7.2), laid out
like `NLayerDiscriminator` of the official pytorch-CycleGAN-and-pix2pix code (models/networks.py) so its published
`*_net_D_*.pth` load strictly.

Layout of `model` for n_layers = 3 (C64-C128-C256-C512, then a 1-channel conv; 4x4 kernels, LeakyReLU 0.2):
  0 Conv/2(in->ndf) 1 LReLU | 2 Conv/2 3 IN 4 LReLU | 5 Conv/2 6 IN 7 LReLU | 8 Conv/1 9 IN 10 LReLU | 11 Conv/1(->1)
Channels double per layer up to 8*ndf. No norm on the first layer; convs followed by instance norm keep their bias
(official `use_bias`), and instance norm (affine=False, no running stats) has no state-dict entries.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from torch import Tensor, nn

from gansvc.nn.resnet import strip_instance_norm_stats


class NLayerDiscriminator(nn.Module):
    def __init__(self, in_channels: int = 3, ndf: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2**n, 8)
            layers += [
                nn.Conv2d(ndf * prev, ndf * mult, 4, stride=2, padding=1),
                nn.InstanceNorm2d(ndf * mult),
                nn.LeakyReLU(0.2, True),
            ]
        prev, mult = mult, min(2**n_layers, 8)
        layers += [
            nn.Conv2d(ndf * prev, ndf * mult, 4, stride=1, padding=1),
            nn.InstanceNorm2d(ndf * mult),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1),
        ]
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        y: Tensor = self.model(x)
        return y


def patchgan_output_size(side: int, n_layers: int) -> int:
    """Side of the patch map for an input side: n_layers stride-2 convs, then two stride-1 convs (k4, p1)."""
    for _ in range(n_layers):
        side = (side + 2 - 4) // 2 + 1
    return side - 2


@dataclass(frozen=True)
class PatchganArch:
    in_channels: int
    ndf: int
    n_layers: int


def patchgan_arch_from_state_dict(state: Mapping[str, Tensor]) -> PatchganArch:
    """Read channels, ndf and n_layers from an official `NLayerDiscriminator` state dict."""
    sd = strip_instance_norm_stats(state)
    convs = sorted(int(m.group(1)) for k in sd if (m := re.fullmatch(r"model\.(\d+)\.weight", k)))
    if not convs or convs[0] != 0:
        raise ValueError("not an official NLayerDiscriminator state dict: no 'model.0.weight'")
    # convs sit at 0, 2, 5, 8, ..., 3n-1 and the output conv at 3n + 2
    n_layers = (convs[-1] - 2) // 3
    first = sd["model.0.weight"]
    return PatchganArch(in_channels=int(first.shape[1]), ndf=int(first.shape[0]), n_layers=n_layers)
