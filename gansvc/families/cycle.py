"""The cycle-consistent base the `cyclegan` and `semantic-cyclegan` families build on: shared config fields, the
build (two generators, two 70x70 PatchGANs, Adam, linear LR decay, image pools, EMA), the generator step with a hook
for extra loss terms, and the discriminator step.

Official pytorch-CycleGAN-and-pix2pix naming: G_A maps A -> B, G_B maps B -> A, D_A judges domain B (real B vs
G_A(a)), D_B judges domain A. Per step (official `optimize_parameters`): G update with both Ds frozen, then D update on
pooled, detached fakes. Generator objective (Zhu et al. 2017 eqs. 1-3, LSGAN form of sec. 4):
  (D_A(G_A(a)) - 1)^2 + (D_B(G_B(b)) - 1)^2 + lambda_cycle (|G_B(G_A(a)) - a|_1 + |G_A(G_B(b)) - b|_1)
  [+ a family's extra terms (`ExtraTerms`)] + lambda_identity lambda_cycle (|G_A(b) - b|_1 + |G_B(a) - a|_1)
Each D sees real and pooled fake images in one forward (instance norm is per sample, so batching changes nothing and
DDP gets one forward per backward) and its objective is halved (Zhu et al. sec. 4: slows D down relative to G).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from itertools import chain
from typing import Annotated, Literal, Protocol

import torch
from pydantic import BaseModel, Field
from torch import Tensor, nn

from gansvc import losses
from gansvc.data.spec import DataSpec
from gansvc.families.base import Batch, GanState, Stateful, finish_step
from gansvc.families.training import frozen, linear_decay_scheduler
from gansvc.nn.ema import ema_copy
from gansvc.nn.i2i_util import init_normal_
from gansvc.nn.patchgan import NLayerDiscriminator
from gansvc.nn.pool import ImagePool

Beta = Annotated[float, Field(ge=0.0, lt=1.0)]

# The shared fields come in three groups so that each family config keeps its fields in the order it always had (the
# order of dumps: --dry-run, checkpoints): pydantic puts the fields of later bases first, so a config lists the groups
# last-first, its own generator / loss fields between them, e.g.
#   class CycleganConfig(CycleObjective, PatchGanFields, ResnetFields, CycleWidths, FamilyConfig)


class CycleWidths(BaseModel):
    """Widths (Zhu et al. 2017 appendix 7.2; official defaults ngf = ndf = 64)."""

    ngf: int = Field(64, ge=1, le=1024)  # filters of G's first layer
    ndf: int = Field(64, ge=1, le=1024)  # filters of D's first layer


class PatchGanFields(BaseModel):
    """Discriminator depth, dropout and init."""

    # stride-2 layers of the PatchGAN. None = auto: 3 (the 70x70 PatchGAN) where the images allow (>= 24 px), else the
    # deepest that still gives a patch map (gansvc.families.fit.patchgan_layers; the run's notes say so)
    n_layers_d: int | None = Field(None, ge=1, le=8)
    dropout: bool = False  # dropout in the generator's blocks (official cycle_gan sets no_dropout=True)
    init_std: float = Field(0.02, gt=0.0, le=1.0)  # N(0, 0.02) init (official init_type 'normal', init_gain 0.02)


class CycleObjective(BaseModel):
    """Objective and optimisation (Zhu et al. sec. 4: Adam, lr 2e-4, 100 epochs constant + 100 decaying to 0)."""

    # "mse" = LSGAN (Zhu et al. sec. 4, report 000 sec. 3.2.4); "bce" = the log loss of eq. 1 (official 'vanilla')
    loss: Literal["mse", "bce"] = "mse"
    lambda_cycle: float = Field(10.0, ge=0.0, le=1000.0)  # lambda of eq. 3 (Zhu et al. sec. 4; report 000 Table 2)
    # identity weight relative to lambda_cycle, as the official --lambda_identity: 0.5 -> 0.5 * 10 = 5 per direction
    lambda_identity: float = Field(0.5, ge=0.0, le=100.0)
    pool_size: int = Field(50, ge=0, le=10_000)  # history of generated images per D (Zhu et al. sec. 4); 0 = off
    lr: float = Field(2e-4, gt=0.0, le=1.0)
    betas: tuple[Beta, Beta] = (0.5, 0.999)
    # schedule in optimisation steps: constant for decay_start steps, then linear to 0 over decay_steps. Defaults:
    # report 000 sec. 4.4.1 trains 200 epochs of 100 iterations, i.e. 100 epochs = 10 000 steps in each phase.
    decay_start: int = Field(10_000, ge=0)
    decay_steps: int = Field(10_000, ge=0)


class CycleConfig(Protocol):
    """What the shared build and steps read: the fields of the groups above and of FamilyConfig (a family config has
    them all; a read-only Protocol, since each family config inserts its own fields between the groups)."""

    @property
    def ngf(self) -> int: ...

    @property
    def ndf(self) -> int: ...

    @property
    def n_layers_d(self) -> int | None: ...

    @property
    def dropout(self) -> bool: ...

    @property
    def init_std(self) -> float: ...

    @property
    def loss(self) -> Literal["mse", "bce"]: ...

    @property
    def lambda_cycle(self) -> float: ...

    @property
    def lambda_identity(self) -> float: ...

    @property
    def pool_size(self) -> int: ...

    @property
    def lr(self) -> float: ...

    @property
    def betas(self) -> tuple[float, float]: ...

    @property
    def decay_start(self) -> int: ...

    @property
    def decay_steps(self) -> int: ...

    @property
    def ema(self) -> bool: ...

    @property
    def ema_decay(self) -> float: ...


# (state, cfg, real_a, real_b, fake_b, fake_a) -> (weighted sum added to the generator objective, its terms by name)
ExtraTerms = Callable[[GanState, CycleConfig, Tensor, Tensor, Tensor, Tensor], tuple[Tensor, dict[str, Tensor]]]


def build_cycle_state(
    cfg: CycleConfig,
    data: DataSpec,
    make_generator: Callable[[], nn.Module],
    n_layers_d: int,
    extras: Mapping[str, Stateful] | None = None,
) -> GanState:
    """G_A, G_B (`make_generator()` each), D_A, D_B (PatchGANs of `n_layers_d` stride-2 layers), N(0, init_std) init,
    one Adam over both Gs and one over both Ds with the linear-decay schedule, EMA copies of the Gs when cfg.ema, and
    the two image pools after `extras` (e.g. frozen networks a family's extra terms use)."""
    c = data.channels
    nets: dict[str, nn.Module] = {
        "G_A": make_generator(),
        "G_B": make_generator(),
        "D_A": NLayerDiscriminator(c, cfg.ndf, n_layers_d),
        "D_B": NLayerDiscriminator(c, cfg.ndf, n_layers_d),
    }
    for net in nets.values():
        init_normal_(net, cfg.init_std)
    opt_g = torch.optim.Adam(chain(nets["G_A"].parameters(), nets["G_B"].parameters()), lr=cfg.lr, betas=cfg.betas)
    opt_d = torch.optim.Adam(chain(nets["D_A"].parameters(), nets["D_B"].parameters()), lr=cfg.lr, betas=cfg.betas)
    # pool seeds come from the global RNG, so a seeded run is reproducible and each pool draws its own sequence
    seeds = torch.randint(0, 2**62, (2,)).tolist()
    # official names: fake_B_pool feeds D_A, fake_A_pool feeds D_B
    pools = {"fake_B_pool": ImagePool(cfg.pool_size, seeds[0]), "fake_A_pool": ImagePool(cfg.pool_size, seeds[1])}
    return GanState(
        nets=nets,
        optimizers={"G": opt_g, "D": opt_d},
        schedulers={
            k: linear_decay_scheduler(o, cfg.decay_start, cfg.decay_steps) for k, o in (("G", opt_g), ("D", opt_d))
        },
        ema={k: ema_copy(nets[k]) for k in ("G_A", "G_B")} if cfg.ema else {},
        extras={**(extras or {}), **pools},
        inference=("G_A", "G_B"),
    )


def generator_step(
    state: GanState, real_a: Tensor, real_b: Tensor, cfg: CycleConfig, extra_terms: ExtraTerms | None = None
) -> tuple[dict[str, float], Tensor, Tensor]:
    """One update of G_A and G_B with both discriminators frozen. Returns the loss terms and the fakes (detached)
    G_A(a), G_B(b) for the discriminator step."""
    g_a, g_b, d_a, d_b = (state.nets[k] for k in ("G_A", "G_B", "D_A", "D_B"))
    n, m = real_a.shape[0], real_b.shape[0]
    use_idt = cfg.lambda_identity > 0
    with frozen(d_a, d_b):
        # G_A sees real A (-> fake B) and, for the identity term, real B in one batch; instance norm is per sample,
        # so batching changes nothing numerically. Same for G_B.
        out_a = g_a(torch.cat([real_a, real_b])) if use_idt else g_a(real_a)
        out_b = g_b(torch.cat([real_b, real_a])) if use_idt else g_b(real_b)
        fake_b, fake_a = out_a[:n], out_b[:m]
        rec_a, rec_b = g_b(fake_b), g_a(fake_a)
        adv_a = losses.g_loss(cfg.loss, d_a(fake_b))
        adv_b = losses.g_loss(cfg.loss, d_b(fake_a))
        cyc_a = losses.cycle_loss(rec_a, real_a)
        cyc_b = losses.cycle_loss(rec_b, real_b)
        total = adv_a + adv_b + cfg.lambda_cycle * (cyc_a + cyc_b)
        terms = {"G_A": adv_a, "G_B": adv_b, "cycle_A": cyc_a, "cycle_B": cyc_b}
        if extra_terms is not None:
            extra, named = extra_terms(state, cfg, real_a, real_b, fake_b, fake_a)
            total = total + extra
            terms |= named
        if use_idt:
            # official: idt_A = G_A(real_B) vs real_B, weight lambda_B * lambda_identity
            idt_a = losses.identity_loss(out_a[n:], real_b)
            idt_b = losses.identity_loss(out_b[m:], real_a)
            total = total + cfg.lambda_cycle * cfg.lambda_identity * (idt_a + idt_b)
            terms |= {"idt_A": idt_a, "idt_B": idt_b}
        opt = state.optimizers["G"]
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
    out = {k: float(v.detach()) for k, v in terms.items()} | {"G": float(total.detach())}
    return out, fake_b.detach(), fake_a.detach()


def discriminator_step(
    state: GanState, real_a: Tensor, real_b: Tensor, fake_b: Tensor, fake_a: Tensor, cfg: CycleConfig
) -> dict[str, float]:
    """One update of D_A (real B vs pooled G_A(a)) and D_B (real A vs pooled G_B(b)); returns {"D_A", "D_B"}."""
    pool_b, pool_a = state.extras["fake_B_pool"], state.extras["fake_A_pool"]
    assert isinstance(pool_b, ImagePool) and isinstance(pool_a, ImagePool), "build_cycle_state makes the two pools"
    pooled_b = pool_b.query(fake_b.detach())
    pooled_a = pool_a.query(fake_a.detach())
    out: dict[str, Tensor] = {}
    total = real_a.new_zeros(())
    for name, real, fake in (("D_A", real_b, pooled_b), ("D_B", real_a, pooled_a)):
        logits = state.nets[name](torch.cat([real, fake]))
        out[name] = 0.5 * losses.d_loss(cfg.loss, logits[: real.shape[0]], logits[real.shape[0] :])
        total = total + out[name]
    opt = state.optimizers["D"]
    opt.zero_grad(set_to_none=True)
    total.backward()
    opt.step()
    return {k: float(v.detach()) for k, v in out.items()}


def train_step(
    state: GanState, batch: Batch, cfg: CycleConfig, extra_terms: ExtraTerms | None = None
) -> dict[str, float]:
    """G step, then D step on the G step's fakes, then schedulers and EMA (`finish_step`)."""
    real_a, real_b = batch["A"], batch["B"]
    g_terms, fake_b, fake_a = generator_step(state, real_a, real_b, cfg, extra_terms)
    d_terms = discriminator_step(state, real_a, real_b, fake_b, fake_a, cfg)
    lr = finish_step(state, cfg.ema_decay)
    return g_terms | d_terms | {"lr": lr}


def check_unpaired(data: DataSpec, family: str) -> None:
    """ValueError unless the data is unpaired A/B images (`family`: the name the message gives)."""
    if data.layout != "unpaired":
        raise ValueError(f"{family} trains on unpaired A/B images; the dataset layout is {data.layout!r}")
