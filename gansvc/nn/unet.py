"""The U-Net generator of pix2pix / CycleGAN (Isola et al. 2017 sec. 3.2.1 after Ronneberger et al. 2015; Zhu et al.
2017), the generator of the semantic-consistency report (001, sec. 2.2.1), laid out like `UnetGenerator` /
`UnetSkipConnectionBlock` of the official pytorch-CycleGAN-and-pix2pix code (models/networks.py), so the state-dict
keys of its `unet_256` / `unet_128` checkpoints (instance norm) match (`model.model.0.weight`,
`model.model.1.model.1.weight`, ...).

`num_downs` stride-2 levels, encoder C64-C128-C256-C512-C512-... (4x4 convs, LeakyReLU 0.2), decoder mirrored with skip
connections (concatenation), ReLU, transposed 4x4 convs, tanh out. Level i (0 = outermost) maps ngf * min(2^(i-1), 8)
channels to ngf * min(2^i, 8); the official code builds exactly this for num_downs >= 5 and this builder extends it to
2..4 levels for small images. Dropout (0.5) sits in the 512-to-512 levels between the three reducing levels and the
innermost one, as in the official code (the official cycle_gan model turns it off: --no_dropout).

Instance norm (affine=False, no running statistics) as the official CycleGAN, so convs before a norm keep their bias.
`forward` reflection-pads H and W up to multiples of 2^num_downs and crops back, so any image size comes back unchanged.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from gansvc.nn.i2i_util import crop_to, pad_to_multiple


class UnetSkipConnectionBlock(nn.Module):
    """One level: x -> [down, submodule, up] and, except at the outermost level, cat([x, that])."""

    def __init__(
        self,
        outer_nc: int,
        inner_nc: int,
        input_nc: int | None = None,
        submodule: nn.Module | None = None,
        outermost: bool = False,
        innermost: bool = False,
        dropout: bool = False,
    ) -> None:
        super().__init__()
        self.outermost = outermost
        input_nc = outer_nc if input_nc is None else input_nc
        downconv = nn.Conv2d(input_nc, inner_nc, 4, stride=2, padding=1, bias=True)
        downrelu, downnorm = nn.LeakyReLU(0.2, True), nn.InstanceNorm2d(inner_nc)
        uprelu, upnorm = nn.ReLU(True), nn.InstanceNorm2d(outer_nc)
        if outermost:
            assert submodule is not None
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, 4, stride=2, padding=1)
            layers: list[nn.Module] = [downconv, submodule, uprelu, upconv, nn.Tanh()]
        elif innermost:
            upconv = nn.ConvTranspose2d(inner_nc, outer_nc, 4, stride=2, padding=1, bias=True)
            layers = [downrelu, downconv, uprelu, upconv, upnorm]
        else:
            assert submodule is not None
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, 4, stride=2, padding=1, bias=True)
            layers = [downrelu, downconv, downnorm, submodule, uprelu, upconv, upnorm]
            if dropout:
                layers.append(nn.Dropout(0.5))
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        y: Tensor = self.model(x)
        if self.outermost:
            return y
        return torch.cat([x, y], 1)


class UnetGenerator(nn.Module):
    def __init__(
        self, in_channels: int = 3, out_channels: int = 3, num_downs: int = 8, ngf: int = 64, dropout: bool = False
    ) -> None:
        super().__init__()
        if num_downs < 2:
            raise ValueError(f"a U-Net needs num_downs >= 2, got {num_downs}")
        self.in_channels, self.num_downs = in_channels, num_downs

        def nc(i: int) -> int:  # channels after level i's down conv
            scale: int = 2**i  # typeshed: int ** int is Any (a negative exponent gives a float); i >= 0 here
            return ngf * min(scale, 8)

        block = UnetSkipConnectionBlock(nc(num_downs - 2), nc(num_downs - 1), innermost=True)
        for i in range(num_downs - 2, 0, -1):
            block = UnetSkipConnectionBlock(
                nc(i - 1), nc(i), submodule=block, dropout=dropout and i >= 4 and nc(i - 1) == nc(i)
            )
        self.model = UnetSkipConnectionBlock(out_channels, ngf, input_nc=in_channels, submodule=block, outermost=True)

    def forward(self, x: Tensor) -> Tensor:
        padded, size = pad_to_multiple(x, 2**self.num_downs)
        return crop_to(self.model(padded), size)


def default_num_downs(height: int, width: int, cap: int = 8) -> int:
    """The deepest U-Net whose bottleneck is still >= 1 pixel: floor(log2(min side)), at most `cap` (the official
    unet_256 has 8 levels: 256 -> 1), at least 2."""
    return max(2, min(cap, math.floor(math.log2(max(1, min(height, width))))))
