"""`dcgan`: the anime-face DCGAN report (002) — its baseline and every knob it ablated.

Preset "report" = the report's baseline (its §III-IV and its starting code, nikhilroxtomar/DCGAN-on-Anime-Faces):
latent 128; G: Linear -> 4x4x512 -> 4 x [ConvTranspose 5x5 stride 2 -> BN -> LeakyReLU(0.2)] -> Conv 5x5 -> tanh
(g_filters 32 at full resolution); D: 4 x [Conv 5x5 stride 2 -> LeakyReLU(0.2) -> Dropout(0.3)] with 64..512 filters,
no BN, linear output; BCE with one-sided label smoothing 0.1; Adam lr 2e-4, betas (0.5, 0.999) for G and D.
Preset "report-best" is the report's optimised model (§VI): the baseline with ReLU in G, BN in D, 64 / 128 filters.
Defaults (preset "default" spells them out) = the report's baseline with what its own ablations found better and
without the known flaw: ReLU in G and BN in D (§V.5-6, §VI), kernel 3 (§V.9: "yielded better images") and
resize-convolution upsampling in G (nearest x2 + conv; Odena et al. 2016) instead of the transposed conv whose kernel
5 over stride 2 paints a checkerboard; no dropout in D (with BN there it slowed G: see the field); widths stay the
baseline's 32 / 64 (§V.11: more filters gave no clear gain).
Quality of the defaults against a textbook DCGAN on real data: tests/integration/train/test_quality_gate.py.
Ablation axes (all config fields): lr_g / lr_d (§V.2), optimizer (§V.3), loss (§V.4), d_batchnorm (§V.5),
activation (§V.6), leaky_slope (§V.7), noise / noise_std / noise_anneal_steps (§V.8), kernel_size (§V.9),
progressive_kernels (§V.10), g_filters / d_filters (§V.11), d_dropout, latent_dim, n_critic.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from gansvc.families.adversarial import DcganStyle, DcganStyleConfig
from gansvc.families.base import FamilySpec, RunPreset

STYLE = DcganStyle(name="dcgan", conditional=False)  # build, train_step, generate: gansvc.families.adversarial


class DCGANConfig(DcganStyleConfig):
    """Fields: `gansvc.families.gan_fields.ConvGanFields` (defaults there: the report's baseline) plus ema /
    ema_decay; the defaults changed here are the baseline's known flaws (module docstring; preset "report" restores
    them all)."""

    loss: Literal["bce", "mse", "hinge"] = "bce"  # report §IV (bce), §V.4 (mse, hinge)
    # no checkerboard: resize-convolution (Odena et al. 2016) instead of ConvTranspose 5 stride 2 (report baseline)
    upsample: Literal["transposed", "resize"] = "resize"
    kernel_size: Literal[3, 5, 7] = 3  # report §V.9: kernel 3 "yielded better images" than the baseline's 5
    activation: Literal["relu", "leakyrelu"] = "relu"  # report §V.6 / §VI: ReLU in G gave the better images
    d_batchnorm: bool = True  # report §V.5 / §VI: BN in D (not on its first layer) gave the better images
    # no dropout in D: with BN in D, the baseline's Dropout(0.3) held G back (measured on the demo's shapes data, 400
    # steps: with it only circles and rectangles formed, without it triangles too); Radford et al. 2016 use none
    d_dropout: float = Field(0.0, ge=0.0, lt=1.0)


# report 002's baseline (§III-IV and its code)
REPORT: dict[str, object] = {
    "latent_dim": 128,
    "g_filters": 32,
    "d_filters": 64,
    "kernel_size": 5,
    "upsample": "transposed",
    "activation": "leakyrelu",
    "leaky_slope": 0.2,
    "d_batchnorm": False,
    "d_dropout": 0.3,
    "noise": "off",
    "loss": "bce",
    "label_smoothing": 0.1,
    "optimizer": "adam",
    "lr_g": 2e-4,
    "lr_d": 2e-4,
    "betas": (0.5, 0.999),
}

PRESETS: dict[str, dict[str, object]] = {
    # the defaults, spelled out (see the module docstring)
    "default": {
        "latent_dim": 128,
        "g_filters": 32,
        "d_filters": 64,
        "kernel_size": 3,
        "upsample": "resize",
        "activation": "relu",
        "leaky_slope": 0.2,
        "d_batchnorm": True,
        "d_dropout": 0.0,
        "noise": "off",
        "loss": "bce",
        "label_smoothing": 0.1,
        "optimizer": "adam",
        "lr_g": 2e-4,
        "lr_d": 2e-4,
        "betas": (0.5, 0.999),
    },
    # the report's baseline, exactly (its transposed 5x5 upsampling included)
    "report": dict(REPORT),
    # the report's optimised model (§VI): the baseline with ReLU in G, BN in D, more filters
    "report-best": {**REPORT, "activation": "relu", "d_batchnorm": True, "g_filters": 64, "d_filters": 128},
    # tiny nets for tests
    "smoke": {"latent_dim": 16, "g_filters": 8, "d_filters": 8, "max_filters": 64},
}


# Whole-run settings. Report 002 trains on 64 x 64 anime faces with the batch of its source code (nikhilroxtomar/
# DCGAN-on-Anime-Faces gan.py: batch 128) and shows its optimised model after 300 epochs (sec. VI); faces flip.
RUNS: dict[str, RunPreset] = {
    name: RunPreset(
        loop={"batch_size": 128, "epochs": 300},
        data={"size": 64, "flip": True},
        note="report 002: 64 px anime faces, batch 128, 300 epochs",
    )
    for name in ("default", "report", "report-best")
}


SPEC: FamilySpec[DCGANConfig] = STYLE.spec(
    DCGANConfig,
    presets=PRESETS,
    runs=RUNS,
    default_preset="default",
    dataset="anime-faces",
    description="DCGAN of the anime-face DCGAN report: baseline and its ablations (noise -> image)",
)
