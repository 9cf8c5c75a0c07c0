"""The CycleGAN discriminator update, shared by the cycle-consistent families (cyclegan, semantic-cyclegan).

Official naming: D_A judges domain B (real B vs G_A(a)), D_B judges domain A. Each D sees real and pooled fake images in
one forward (instance norm is per sample, so batching changes nothing and DDP gets one forward per backward) and its
objective is halved (Zhu et al. 2017 sec. 4: slows D down relative to G). Fakes come from 50-image history pools.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gansvc import losses
from gansvc.nn.pool import ImagePool


def discriminator_step(d_a: nn.Module, d_b: nn.Module, opt: torch.optim.Optimizer, fake_b_pool: ImagePool,
                       fake_a_pool: ImagePool, real_a: Tensor, real_b: Tensor, fake_b: Tensor, fake_a: Tensor,
                       loss: losses.AdvLoss) -> dict[str, float]:
    """One update of D_A (real B vs pooled G_A(a)) and D_B (real A vs pooled G_B(b)); returns {"D_A", "D_B"}."""
    pooled_b = fake_b_pool.query(fake_b.detach())
    pooled_a = fake_a_pool.query(fake_a.detach())
    out: dict[str, Tensor] = {}
    total = real_a.new_zeros(())
    for name, net, real, fake in (("D_A", d_a, real_b, pooled_b), ("D_B", d_b, real_a, pooled_a)):
        logits = net(torch.cat([real, fake]))
        out[name] = 0.5 * losses.d_loss(loss, logits[: real.shape[0]], logits[real.shape[0]:])
        total = total + out[name]
    opt.zero_grad(set_to_none=True)
    total.backward()
    opt.step()
    return {k: float(v.detach()) for k, v in out.items()}
