"""`dcgan`: the anime-face DCGAN report (002) — its baseline and every knob it ablated.

Defaults = the report's baseline (its §III-IV and the code it started from, nikhilroxtomar/DCGAN-on-Anime-Faces):
latent 128; G: Linear -> 4x4x512 -> 4 x [ConvTranspose 5x5 stride 2 -> BN -> LeakyReLU(0.2)] -> Conv 5x5 -> tanh
(g_filters 32 at full resolution); D: 4 x [Conv 5x5 stride 2 -> LeakyReLU(0.2) -> Dropout(0.3)] with 64..512 filters,
no BN, linear output; BCE with one-sided label smoothing 0.1; Adam lr 2e-4, betas (0.5, 0.999) for G and D.
Preset "report-best" is the report's optimised model (§VI): ReLU in G, BN in D, 64 / 128 filters.
Ablation axes (all config fields): lr_g / lr_d (§V.2), optimizer (§V.3), loss (§V.4), d_batchnorm (§V.5),
activation (§V.6), leaky_slope (§V.7), noise / noise_std / noise_anneal_steps (§V.8), kernel_size (§V.9),
progressive_kernels (§V.10), g_filters / d_filters (§V.11), d_dropout, latent_dim, n_critic.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from torch import Tensor, nn

from gansvc.data.spec import DataSpec
from gansvc.families.base import Batch, FamilyConfig, FamilySpec, GanState
from gansvc.nn import adversarial
from gansvc.nn.gan_fields import ConvGanFields

CONDITIONAL = False


class DCGANConfig(FamilyConfig, ConvGanFields):
    """All fields and defaults: `gansvc.nn.gan_fields.ConvGanFields` (the report's baseline) plus ema / ema_decay."""

    loss: Literal["bce", "mse", "hinge"] = "bce"  # report §IV (bce), §V.4 (mse, hinge)


def build(cfg: DCGANConfig, data: DataSpec) -> GanState:
    nets, opts, ema = adversarial.build_parts(cfg, data, "dcgan", CONDITIONAL)
    return GanState(nets=nets, optimizers=opts, ema=ema, inference=("G",))


def d_step(state: GanState, real: Tensor, labels: Tensor | None, step: int, cfg: DCGANConfig) -> dict[str, Tensor]:
    return adversarial.d_step(state, real, labels, step, cfg)


def g_step(state: GanState, real: Tensor, labels: Tensor | None, step: int, cfg: DCGANConfig) -> dict[str, Tensor]:
    return adversarial.g_step(state, real, labels, step, cfg)


def train_step(state: GanState, batch: Batch, step: int, cfg: DCGANConfig) -> dict[str, float]:
    return adversarial.train_step(state, batch, step, cfg, CONDITIONAL)


def generate(nets: Mapping[str, nn.Module], z: Tensor, labels: Tensor | None, cfg: DCGANConfig) -> Tensor:
    return adversarial.generate(nets, z, labels, cfg, CONDITIONAL)


PRESETS: dict[str, dict[str, object]] = {
    # the report's baseline (= the defaults, spelled out)
    "report": {"latent_dim": 128, "g_filters": 32, "d_filters": 64, "kernel_size": 5, "activation": "leakyrelu",
               "leaky_slope": 0.2, "d_batchnorm": False, "d_dropout": 0.3, "noise": "off", "loss": "bce",
               "label_smoothing": 0.1, "optimizer": "adam", "lr_g": 2e-4, "lr_d": 2e-4, "betas": (0.5, 0.999)},
    # the report's optimised model (§VI): ReLU in G, BN in D, more filters
    "report-best": {"activation": "relu", "d_batchnorm": True, "g_filters": 64, "d_filters": 128},
    # tiny nets for tests
    "smoke": {"latent_dim": 16, "g_filters": 8, "d_filters": 8, "max_filters": 64},
}

SPEC: FamilySpec[DCGANConfig] = FamilySpec(
    name="dcgan", task="generate", config=DCGANConfig, build=build, train_step=train_step, generate=generate,
    presets=PRESETS, conditional=CONDITIONAL,
    description="DCGAN of the anime-face DCGAN report: baseline and its ablations (noise -> image)",
)
