"""DCGAN-style generator and discriminator (critic), with the knobs the anime-face DCGAN report (002) ablated.

Layout (the report's baseline, nikhilroxtomar/DCGAN-on-Anime-Faces `gan.py`, generalised to any power-of-two size):
- G: z (+ one-hot labels) -> Linear -> 4x4xC0 -> BN -> act -> n_up x [ConvTranspose(stride 2) -> BN -> act]
     -> Conv(stride 1, "same") -> tanh. n_up = log2(size) - 2; channels at resolution r are g_filters * size / r
     (baseline: 512 at 4x4 down to 32 at 64x64), capped at max_filters.
- D: n_down x [Conv(stride 2) -> norm (not on the first layer, Radford et al. 2016) -> LeakyReLU -> Dropout
     -> instance noise], channels d_filters * 2^i (baseline 64, 128, 256, 512), then flatten -> Linear(1) (raw logit /
     critic score, no sigmoid) and, for conditional families, one Linear head per attribute (softmax logits,
     Odena et al. 2017).
- Upsampling in G (`upsample`): "transposed" (the report's ConvTranspose, stride 2) or "resize" (nearest-neighbour x2
  then a stride-1 "same" conv: the resize-convolution of Odena et al. 2016, "Deconvolution and Checkerboard
  Artifacts", Distill). A transposed conv whose kernel is not a multiple of its stride (the report's 5 with stride 2)
  overlaps unevenly and paints a checkerboard; a resize-convolution has no uneven overlap, so no checkerboard, whatever
  its kernel. Same parameters either way (a ConvTranspose2d or a Conv2d of the same kernel and channels).
- Kernels are odd (3 / 5 / 7, the report's ablation, baseline 5): G's output conv (and the resize-convolutions) are
  stride-1 "same" convolutions, which need an odd kernel for symmetric padding. Progressive kernels (report §V.10)
  grow 3, 5, 7 by layer (capped at 7: the report saw white images from 7 up).
- Weights ~ N(0, 0.02) (baseline `w_init`, Radford et al. 2016); norm scales ~ N(1, 0.02).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gansvc.nn.noise import InstanceNoise

Activation = Literal["relu", "leakyrelu"]
DNorm = Literal["none", "batch", "layer"]
Upsample = Literal["transposed", "resize"]
NoisePlacement = Literal["off", "first", "every"]

MIN_SIZE, MAX_SIZE = 16, 256
MAX_KERNEL = 7


def resolution_steps(size: int) -> int:
    """Number of stride-2 layers between 4x4 and `size` (2 for 16, 4 for 64, 6 for 256)."""
    if size < MIN_SIZE or size > MAX_SIZE or size & (size - 1):
        raise ValueError(f"image size must be a power of two from {MIN_SIZE} to {MAX_SIZE}, got {size}: set data.size")
    return size.bit_length() - 3


def kernel_schedule(n_layers: int, kernel_size: int, progressive: bool) -> tuple[int, ...]:
    """Kernel per layer: constant, or 3, 5, 7, 7, ... (report 002 §V.10, capped at 7)."""
    if progressive:
        return tuple(min(3 + 2 * i, MAX_KERNEL) for i in range(n_layers))
    if kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd (3, 5 or 7), got {kernel_size}")
    return (kernel_size,) * n_layers


def one_hot_labels(labels: Tensor, attr_sizes: Sequence[int]) -> Tensor:
    """(N, n_attributes) int64 -> (N, sum(attr_sizes)) float, one one-hot block per attribute.

    One-hot label encoding as the anime-face study describes for its conditional models (003 §3.1.4.2.6)."""
    if labels.dim() != 2 or labels.shape[1] != len(attr_sizes):
        raise ValueError(f"labels must have shape (N, {len(attr_sizes)}), got {tuple(labels.shape)}")
    return torch.cat([F.one_hot(labels[:, j].long(), k) for j, k in enumerate(attr_sizes)], dim=1).float()


def _act(kind: Activation, slope: float) -> nn.Module:
    return nn.ReLU(inplace=True) if kind == "relu" else nn.LeakyReLU(slope, inplace=True)


@dataclass(frozen=True)
class GenArch:
    size: int
    channels: int
    latent_dim: int
    filters: int = 32
    max_filters: int = 1024
    kernel_size: int = 5
    progressive_kernels: bool = False
    activation: Activation = "leakyrelu"
    leaky_slope: float = 0.2
    attr_sizes: tuple[int, ...] = ()
    upsample: Upsample = "transposed"


@dataclass(frozen=True)
class DiscArch:
    size: int
    channels: int
    filters: int = 64
    max_filters: int = 1024
    kernel_size: int = 5
    progressive_kernels: bool = False
    leaky_slope: float = 0.2
    norm: DNorm = "none"
    dropout: float = 0.3
    noise: NoisePlacement = "off"
    noise_std: float = 0.1  # initial std; the training step re-sets it every step (annealing)
    attr_sizes: tuple[int, ...] = ()


class Generator(nn.Module):
    """z (N, latent_dim) [+ labels (N, n_attributes) int64] -> images (N, C, size, size) in [-1, 1]."""

    def __init__(self, arch: GenArch) -> None:
        super().__init__()
        self.arch = arch
        n_up = resolution_steps(arch.size)
        ch = [min(arch.filters * 2 ** (n_up - i), arch.max_filters) for i in range(n_up + 1)]
        kernels = kernel_schedule(n_up + 1, arch.kernel_size, arch.progressive_kernels)
        self.attr_sizes = tuple(arch.attr_sizes)
        self.c0 = ch[0]
        self.fc = nn.Linear(arch.latent_dim + sum(self.attr_sizes), ch[0] * 16, bias=False)
        # BN over channels of the 4x4 map (not BatchNorm1d over features) so that a batch of one still trains
        self.fc_norm = nn.BatchNorm2d(ch[0])
        self.fc_act = _act(arch.activation, arch.leaky_slope)
        layers: list[nn.Module] = []
        for i in range(n_up):
            layers += [
                *upsample_layers(arch.upsample, ch[i], ch[i + 1], kernels[i]),
                nn.BatchNorm2d(ch[i + 1]),
                _act(arch.activation, arch.leaky_slope),
            ]
        self.blocks = nn.Sequential(*layers)
        k = kernels[n_up]
        self.out = nn.Conv2d(ch[n_up], arch.channels, k, 1, k // 2)
        init_dcgan_weights(self)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        h = z
        if self.attr_sizes:
            if labels is None:
                raise ValueError("this generator is conditional: pass labels (N, n_attributes)")
            h = torch.cat([z, one_hot_labels(labels, self.attr_sizes).to(z.dtype)], dim=1)
        x = self.fc_act(self.fc_norm(self.fc(h).view(-1, self.c0, 4, 4)))
        return torch.tanh(self.out(self.blocks(x)))


def upsample_layers(kind: Upsample, c_in: int, c_out: int, k: int) -> list[nn.Module]:
    """Layers that double H and W: a ConvTranspose (stride 2, padding (k-1)/2, output_padding 1: exact for odd k) or
    nearest x2 then a stride-1 "same" Conv (resize-convolution, Odena et al. 2016). No bias: BN follows."""
    if kind == "transposed":
        return [nn.ConvTranspose2d(c_in, c_out, k, 2, (k - 1) // 2, output_padding=1, bias=False)]
    if kind == "resize":
        return [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c_in, c_out, k, 1, k // 2, bias=False)]
    raise ValueError(f"unknown upsample {kind!r}: choose 'transposed' or 'resize'")


class Discriminator(nn.Module):
    """images (N, C, size, size) -> (adversarial output (N,), [class logits (N, K_j) per attribute])."""

    def __init__(self, arch: DiscArch) -> None:
        super().__init__()
        self.arch = arch
        n_down = resolution_steps(arch.size)
        ch = [min(arch.filters * 2**i, arch.max_filters) for i in range(n_down)]
        kernels = kernel_schedule(n_down, arch.kernel_size, arch.progressive_kernels)
        layers: list[nn.Module] = []
        c_in = arch.channels
        for i in range(n_down):
            k = kernels[i]
            normed = i > 0 and arch.norm != "none"
            layers.append(nn.Conv2d(c_in, ch[i], k, 2, (k - 1) // 2, bias=not normed))
            if normed and arch.norm == "batch":
                layers.append(nn.BatchNorm2d(ch[i]))
            elif normed:
                # layer norm over (C, H, W) of each sample with a per-channel affine (Gulrajani et al. 2017 §4)
                layers.append(nn.GroupNorm(1, ch[i]))
            layers.append(nn.LeakyReLU(arch.leaky_slope, inplace=True))
            if arch.dropout > 0:
                layers.append(nn.Dropout(arch.dropout))
            if arch.noise == "every" or (arch.noise == "first" and i == 0):
                layers.append(InstanceNoise(arch.noise_std))
            c_in = ch[i]
        self.features = nn.Sequential(*layers)
        feat = ch[-1] * 16
        self.adv = nn.Linear(feat, 1)
        self.heads = nn.ModuleList(nn.Linear(feat, k) for k in arch.attr_sizes)
        init_dcgan_weights(self)

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        h = self.features(x).flatten(1)
        return self.adv(h).squeeze(1), [head(h) for head in self.heads]


@torch.no_grad()
def init_dcgan_weights(net: nn.Module) -> None:
    """N(0, 0.02) for conv / linear weights, N(1, 0.02) for norm scales, zero biases (Radford et al. 2016)."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


@torch.no_grad()
def clip_weights_(net: nn.Module, clip_value: float) -> None:
    """WGAN weight clipping (Arjovsky et al. 2017, Algorithm 1): every critic parameter into [-c, c]."""
    for p in net.parameters():
        p.clamp_(-clip_value, clip_value)
