"""A textbook DCGAN in plain PyTorch: the gate's side-by-side reference for gansvc's dcgan defaults.

Layout, initialisation and optimisation of Radford et al. 2016 ("Unsupervised Representation Learning with Deep
Convolutional GANs", §3-4), at 16x16 with the PyTorch DCGAN example's widths (nz 100, ngf = ndf = 64):
- G: z -> ConvTranspose 4x4 s1 p0 -> 4x4 x 2ngf -> BN -> ReLU -> ConvTranspose 4x4 s2 p1 -> 8x8 x ngf -> BN -> ReLU
     -> ConvTranspose 4x4 s2 p1 -> 16x16 x C -> tanh.
- D: Conv 4x4 s2 p1 -> LeakyReLU(0.2) (no BN on the first layer) -> Conv 4x4 s2 p1 -> BN -> LeakyReLU(0.2)
     -> Conv 4x4 s1 p0 -> logit.
- Weights ~ N(0, 0.02), BN scales ~ N(1, 0.02); BCE (real 1, fake 0; G maximises log D(G(z))); Adam lr 2e-4,
  betas (0.5, 0.999) for both; one D update (real and fake batches) then one G update per step.
Nothing here comes from gansvc: it is the independent implementation the gate compares with.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

NZ, NGF, NDF = 100, 64, 64


def _init(net: nn.Module) -> None:
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def generator(channels: int) -> nn.Module:
    g = nn.Sequential(
        nn.ConvTranspose2d(NZ, NGF * 2, 4, 1, 0, bias=False),
        nn.BatchNorm2d(NGF * 2),
        nn.ReLU(True),
        nn.ConvTranspose2d(NGF * 2, NGF, 4, 2, 1, bias=False),
        nn.BatchNorm2d(NGF),
        nn.ReLU(True),
        nn.ConvTranspose2d(NGF, channels, 4, 2, 1, bias=False),
        nn.Tanh(),
    )
    _init(g)
    return g


def discriminator(channels: int) -> nn.Module:
    d = nn.Sequential(
        nn.Conv2d(channels, NDF, 4, 2, 1, bias=False),
        nn.LeakyReLU(0.2, True),
        nn.Conv2d(NDF, NDF * 2, 4, 2, 1, bias=False),
        nn.BatchNorm2d(NDF * 2),
        nn.LeakyReLU(0.2, True),
        nn.Conv2d(NDF * 2, 1, 4, 1, 0, bias=False),
        nn.Flatten(),
    )
    _init(d)
    return d


def train(images: np.ndarray, steps: int, batch_size: int, seed: int) -> nn.Module:
    """Train on (N, H, W) uint8 grey images (H = W = 16) for `steps` G updates; returns G (eval mode)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    data = torch.from_numpy(images).float().div(127.5).sub(1.0).unsqueeze(1)  # [-1, 1], (N, 1, H, W)
    g, d = generator(1), discriminator(1)
    opt_g = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    order, pos = rng.permutation(len(data)), 0
    for _ in range(steps):
        if pos + batch_size > len(order):  # a new epoch: reshuffle, drop the last partial batch
            order, pos = rng.permutation(len(data)), 0
        real = data[order[pos : pos + batch_size]]
        pos += batch_size
        fake = g(torch.randn(batch_size, NZ, 1, 1))
        opt_d.zero_grad(set_to_none=True)
        out_r, out_f = d(real), d(fake.detach())
        loss_d = F.binary_cross_entropy_with_logits(out_r, torch.ones_like(out_r)) + F.binary_cross_entropy_with_logits(
            out_f, torch.zeros_like(out_f)
        )
        loss_d.backward()
        opt_d.step()
        opt_g.zero_grad(set_to_none=True)
        out = d(fake)
        F.binary_cross_entropy_with_logits(out, torch.ones_like(out)).backward()
        opt_g.step()
    return g.eval()


@torch.no_grad()
def sample(g: nn.Module, n: int, seed: int) -> np.ndarray:
    """n images (n, H, W) uint8 from a trained G, quantised to 8 bits as PNGs are."""
    z = torch.randn(n, NZ, 1, 1, generator=torch.Generator().manual_seed(seed))
    x: Tensor = g(z)
    return ((x.squeeze(1).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
