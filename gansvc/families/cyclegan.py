"""CycleGAN (Zhu et al. 2017, "Unpaired Image-to-Image Translation using Cycle-Consistent Adversarial Networks"), the
baseline of the CycleGAN optimisation report (000, sec. 3.1).

Nets follow the official pytorch-CycleGAN-and-pix2pix naming: G_A maps A -> B, G_B maps B -> A, D_A judges domain B
(real B vs G_A(A)), D_B judges domain A. Objective (report eqs. in 3.1, Zhu et al. eqs. 1-3, LSGAN form of sec. 4):
  G:  (D_A(G_A(a)) - 1)^2 + (D_B(G_B(b)) - 1)^2 + lambda_cycle (|G_B(G_A(a)) - a|_1 + |G_A(G_B(b)) - b|_1)
      + lambda_identity lambda_cycle (|G_A(b) - b|_1 + |G_B(a) - a|_1)
  D:  1/2 [(D(real) - 1)^2 + D(fake)^2] per discriminator, fakes drawn from a 50-image history pool.
Training order per step is the official `optimize_parameters`: G update (Ds frozen), then D update on detached fakes.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import chain
from typing import Annotated, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from gansvc import losses
from gansvc.data.spec import DataSpec
from gansvc.families.base import Batch, Direction, FamilyConfig, FamilySpec, GanState, finish_step, unwrap, RunPreset
from gansvc.nn import cycle
from gansvc.nn.ema import ema_copy
from gansvc.nn.i2i_util import check_images, crop_to, frozen, init_normal_, linear_decay_scheduler, pad_to_multiple
from gansvc.families.fit import fit_patchgan, patchgan_layers
from gansvc.nn.patchgan import NLayerDiscriminator
from gansvc.nn.pool import ImagePool
from gansvc.nn.resnet import ResnetGenerator, default_n_blocks

Beta = Annotated[float, Field(ge=0.0, lt=1.0)]


class CycleganConfig(FamilyConfig):
    # --- networks (Zhu et al. 2017 appendix 7.2; official defaults ngf = ndf = 64, netD 'basic') ---
    ngf: int = Field(64, ge=1, le=1024)  # filters of G's first layer
    ndf: int = Field(64, ge=1, le=1024)  # filters of D's first layer
    n_blocks: int | None = Field(None, ge=0, le=64)  # residual blocks; None: 9 at >= 256 px, 6 below (appendix 7.2)
    # stride-2 layers of the PatchGAN. None = auto: 3 (the 70x70 PatchGAN) where the images allow (>= 24 px), else the
    # deepest that still gives a patch map (gansvc.families.fit.patchgan_layers; the run's notes say so)
    n_layers_d: int | None = Field(None, ge=1, le=8)
    dropout: bool = False  # dropout in the residual blocks (official cycle_gan sets no_dropout=True)
    init_std: float = Field(0.02, gt=0.0, le=1.0)  # N(0, 0.02) init (official init_type 'normal', init_gain 0.02)

    # --- objective ---
    # "mse" = LSGAN (Zhu et al. sec. 4, report 000 sec. 3.2.4); "bce" = the log loss of eq. 1 (official 'vanilla')
    loss: Literal["mse", "bce"] = "mse"
    lambda_cycle: float = Field(10.0, ge=0.0, le=1000.0)  # lambda of eq. 3 (Zhu et al. sec. 4; report 000 Table 2)
    # identity weight relative to lambda_cycle, as the official --lambda_identity: 0.5 -> 0.5 * 10 = 5 per direction
    lambda_identity: float = Field(0.5, ge=0.0, le=100.0)
    pool_size: int = Field(50, ge=0, le=10_000)  # history of generated images per D (Zhu et al. sec. 4); 0 = off

    # --- optimisation (Zhu et al. sec. 4: Adam, lr 2e-4, batch 1, 100 epochs constant + 100 decaying to 0) ---
    lr: float = Field(2e-4, gt=0.0, le=1.0)
    betas: tuple[Beta, Beta] = (0.5, 0.999)
    # schedule in optimisation steps: constant for decay_start steps, then linear to 0 over decay_steps. Defaults:
    # report 000 sec. 4.4.1 trains 200 epochs of 100 iterations, i.e. 100 epochs = 10 000 steps in each phase.
    decay_start: int = Field(10_000, ge=0)
    decay_steps: int = Field(10_000, ge=0)


PRESETS: dict[str, dict[str, object]] = {
    # report 000 trains at 256 x 256 (sec. 4.1), where the official code uses 9 residual blocks
    "report": {"n_blocks": 9},
    # tiny nets for tests and CPU smoke runs (16-64 px images)
    "smoke": {"ngf": 8, "ndf": 8, "n_blocks": 2, "n_layers_d": 2, "pool_size": 8},
}


def build(cfg: CycleganConfig, data: DataSpec) -> GanState:
    if data.layout != "unpaired":
        raise ValueError(f"cyclegan trains on unpaired A/B images; the dataset layout is {data.layout!r}")
    h, w, c = data.height, data.width, data.channels
    if h % 4 or w % 4:
        raise ValueError(f"cyclegan needs image sides that are multiples of 4 (two stride-2 layers), got {h}x{w}: "
                         "set data.size accordingly")
    n_layers_d = patchgan_layers(cfg.n_layers_d, h, w)  # auto resolved; a set depth that does not fit: ValueError
    n_blocks = cfg.n_blocks if cfg.n_blocks is not None else default_n_blocks(h, w)
    nets: dict[str, nn.Module] = {
        "G_A": ResnetGenerator(c, c, cfg.ngf, n_blocks, cfg.dropout),
        "G_B": ResnetGenerator(c, c, cfg.ngf, n_blocks, cfg.dropout),
        "D_A": NLayerDiscriminator(c, cfg.ndf, n_layers_d),
        "D_B": NLayerDiscriminator(c, cfg.ndf, n_layers_d),
    }
    for net in nets.values():
        init_normal_(net, cfg.init_std)
    opt_g = torch.optim.Adam(chain(nets["G_A"].parameters(), nets["G_B"].parameters()), lr=cfg.lr, betas=cfg.betas)
    opt_d = torch.optim.Adam(chain(nets["D_A"].parameters(), nets["D_B"].parameters()), lr=cfg.lr, betas=cfg.betas)
    # pool seeds come from the global RNG, so a seeded run is reproducible and each pool draws its own sequence
    seeds = torch.randint(0, 2**62, (2,)).tolist()
    return GanState(
        nets=nets,
        optimizers={"G": opt_g, "D": opt_d},
        schedulers={k: linear_decay_scheduler(o, cfg.decay_start, cfg.decay_steps)
                    for k, o in (("G", opt_g), ("D", opt_d))},
        ema={k: ema_copy(nets[k]) for k in ("G_A", "G_B")} if cfg.ema else {},
        # official names: fake_B_pool feeds D_A, fake_A_pool feeds D_B
        extras={"fake_B_pool": ImagePool(cfg.pool_size, seeds[0]), "fake_A_pool": ImagePool(cfg.pool_size, seeds[1])},
        inference=("G_A", "G_B"),
    )


def generator_step(state: GanState, real_a: Tensor, real_b: Tensor, cfg: CycleganConfig
                   ) -> tuple[dict[str, float], Tensor, Tensor]:
    """One update of G_A and G_B with both discriminators frozen. Returns the loss terms and the fakes (detached)
    G_A(a), G_B(b) for the discriminator step."""
    g_a, g_b, d_a, d_b = (state.nets[k] for k in ("G_A", "G_B", "D_A", "D_B"))
    n = real_a.shape[0]
    use_idt = cfg.lambda_identity > 0
    with frozen(d_a, d_b):
        # G_A sees real A (-> fake B) and, for the identity term, real B in one batch; instance norm is per sample,
        # so batching changes nothing numerically. Same for G_B.
        out_a = g_a(torch.cat([real_a, real_b])) if use_idt else g_a(real_a)
        out_b = g_b(torch.cat([real_b, real_a])) if use_idt else g_b(real_b)
        fake_b, fake_a = out_a[:n], out_b[: real_b.shape[0]]
        rec_a, rec_b = g_b(fake_b), g_a(fake_a)
        adv_a = losses.g_loss(cfg.loss, d_a(fake_b))
        adv_b = losses.g_loss(cfg.loss, d_b(fake_a))
        cyc_a = losses.cycle_loss(rec_a, real_a)
        cyc_b = losses.cycle_loss(rec_b, real_b)
        total = adv_a + adv_b + cfg.lambda_cycle * (cyc_a + cyc_b)
        terms = {"G_A": adv_a, "G_B": adv_b, "cycle_A": cyc_a, "cycle_B": cyc_b}
        if use_idt:
            # official: idt_A = G_A(real_B) vs real_B, weight lambda_B * lambda_identity
            idt_a = losses.identity_loss(out_a[n:], real_b)
            idt_b = losses.identity_loss(out_b[real_b.shape[0]:], real_a)
            total = total + cfg.lambda_cycle * cfg.lambda_identity * (idt_a + idt_b)
            terms |= {"idt_A": idt_a, "idt_B": idt_b}
        opt = state.optimizers["G"]
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
    out = {k: float(v.detach()) for k, v in terms.items()} | {"G": float(total.detach())}
    return out, fake_b.detach(), fake_a.detach()


def discriminator_step(state: GanState, real_a: Tensor, real_b: Tensor, fake_b: Tensor, fake_a: Tensor,
                       cfg: CycleganConfig) -> dict[str, float]:
    """One update of D_A (real B vs pooled G_A(a)) and D_B (real A vs pooled G_B(b)); fakes are detached."""
    return cycle.discriminator_step(state.nets["D_A"], state.nets["D_B"], state.optimizers["D"],
                                    state.extras["fake_B_pool"], state.extras["fake_A_pool"],  # type: ignore[arg-type]
                                    real_a, real_b, fake_b, fake_a, cfg.loss)


def train_step(state: GanState, batch: Batch, step: int, cfg: CycleganConfig) -> dict[str, float]:
    real_a, real_b = batch["A"], batch["B"]
    g_terms, fake_b, fake_a = generator_step(state, real_a, real_b, cfg)
    d_terms = discriminator_step(state, real_a, real_b, fake_b, fake_a, cfg)
    lr = finish_step(state, cfg.ema_decay)
    return g_terms | d_terms | {"lr": lr}


@torch.no_grad()
def translate(nets: Mapping[str, nn.Module], images: Tensor, direction: Direction, cfg: CycleganConfig
              ) -> dict[str, Tensor]:
    """a2b with G_A, b2a with G_B. Any H x W: the batch is reflection-padded to multiples of 4 and cropped back."""
    if direction not in ("a2b", "b2a"):
        raise ValueError(f"direction must be 'a2b' or 'b2a', got {direction!r}")
    net = unwrap(nets["G_A" if direction == "a2b" else "G_B"])
    check_images(images, net.model[1].in_channels)
    padded, size = pad_to_multiple(images, 4)
    return {"image": crop_to(net(padded), size)}



# Whole-run settings (gansvc.families.base.RunPreset). "default": Zhu et al. 2017 sec. 4 and the official code
# (pytorch-CycleGAN-and-pix2pix: batch 1, n_epochs 100 + n_epochs_decay 100, load 286 then random crop 256, flip), an
# epoch being max(|A|, |B|) images. "report": report 000 sec. 4.1 / 4.4.1 (minibatch 10, 256 px crops, 200 epochs of
# 100 iterations = 20 000 steps, decaying after half: the config's decay_start / decay_steps defaults).
CROP_256 = {"size": 256, "load_size": 286, "flip": True}  # official: load 286, random crop 256, random flip
RUNS: dict[str, RunPreset] = {
    "default": RunPreset(loop={"batch_size": 1, "epochs": 200}, data=CROP_256,
                         epoch_fields={"decay_start": 100, "decay_steps": 100},
                         note="Zhu et al. 2017 / official CycleGAN: batch 1, 100 + 100 epochs, 286 -> crop 256, flip"),
    "report": RunPreset(loop={"batch_size": 10, "max_steps": 20_000}, data=CROP_256,
                        note="report 000: batch 10, 200 epochs x 100 iterations, 256 px crops"),
}


SPEC: FamilySpec[CycleganConfig] = FamilySpec(
    name="cyclegan",
    task="translate",
    config=CycleganConfig,
    build=build,
    train_step=train_step,
    translate=translate,
    presets=PRESETS, runs=RUNS, fit_to_data=fit_patchgan, default_preset="default", dataset="horse2zebra",
    description="CycleGAN: ResNet generators, 70x70 PatchGAN, LSGAN, cycle + identity L1, image pool, linear LR decay; "
                "loads official pytorch-CycleGAN-and-pix2pix checkpoints",
)
