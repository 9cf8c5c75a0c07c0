"""`wacgan`: the anime-face study's (003) WAC-GAN: AC-GAN with the Wasserstein loss and a gradient penalty.

Critic loss (study eq. 1): D(G(z, y')) - D(x) + class_weight * CE(C(x), y) + gp_lambda * GP, the class term on real
images only (d_class_on_fake off; turn it on for Odena et al.'s fake-image term). G: -D(G(z, y')) + class_weight *
CE(C(G(z, y')), y'). Conditioning as in `acgan` (shared blocks in gansvc.nn). The study gives no numbers; the
Wasserstein part follows Gulrajani et al. 2017 (lambda 10, n_critic 5, Adam 1e-4, betas (0, 0.9), layer norm instead
of batch norm in the critic), the rest `acgan`'s defaults (latent 100, ReLU in G, class weight 1).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from gansvc.families.adversarial import DcganStyle, DcganStyleConfig
from gansvc.families.base import FamilySpec, RunPreset
from gansvc.families.gan_fields import Beta, ConditionalFields, LearningRate

STYLE = DcganStyle(name="wacgan", conditional=True)  # build, train_step, generate: gansvc.families.adversarial


class WACGANConfig(DcganStyleConfig, ConditionalFields):
    loss: Literal["wasserstein"] = "wasserstein"
    gp_lambda: float = Field(10.0, gt=0.0, le=1000.0)  # Gulrajani et al. 2017
    n_critic: int = Field(5, ge=1, le=100)
    lr_g: LearningRate = 1e-4
    lr_d: LearningRate = 1e-4
    betas: tuple[Beta, Beta] = (0.0, 0.9)
    d_layernorm: bool = True  # no batch norm with a gradient penalty
    d_class_on_fake: bool = False  # study eq. 1: L_class(x, c) on real images
    latent_dim: int = Field(100, ge=1, le=4096)
    # 32 here = the DCGAN reference code's ngf=64 (512 channels at 4x4, 64 at half resolution); our G adds a
    # full-resolution layer of g_filters channels before the output conv (report 002 baseline layout)
    g_filters: int = Field(32, ge=1, le=1024)
    d_filters: int = Field(64, ge=1, le=1024)
    activation: Literal["relu", "leakyrelu"] = "relu"
    d_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    label_smoothing: float = Field(0.0, ge=0.0, lt=0.5)  # unused by the Wasserstein loss


PRESETS: dict[str, dict[str, object]] = {
    "report": {
        "loss": "wasserstein",
        "gp_lambda": 10.0,
        "n_critic": 5,
        "optimizer": "adam",
        "lr_g": 1e-4,
        "lr_d": 1e-4,
        "betas": (0.0, 0.9),
        "d_batchnorm": False,
        "d_layernorm": True,
        "class_weight": 1.0,
        "d_class_on_fake": False,
    },
    "smoke": {"latent_dim": 16, "g_filters": 8, "d_filters": 8, "max_filters": 64},
}


# Whole-run settings: report 003 trains on hair / eye colour tagged anime faces (96 px, trained at 64 px) and
# shows its samples at epochs 140-146 (Figures 2-8): 150 epochs, batch 64; faces flip (hair / eye colour tags do
# not depend on the side).
RUNS: dict[str, RunPreset] = {
    "report": RunPreset(
        loop={"batch_size": 64, "epochs": 150},
        data={"size": 64, "flip": True},
        note="report 003: hair / eye colour tagged anime faces at 64 px, ~150 epochs, batch 64",
    ),
}


SPEC: FamilySpec[WACGANConfig] = STYLE.spec(
    WACGANConfig,
    presets=PRESETS,
    runs=RUNS,
    default_preset="report",
    dataset="anime-faces-tags",
    description="WAC-GAN: AC-GAN with Wasserstein loss and gradient penalty (anime-face study)",
)
