"""`wgan-gp`: Wasserstein GAN with gradient penalty, the WGAN proposal's (004) third model.

Defaults follow Gulrajani et al. 2017 ("Improved Training of Wasserstein GANs", Algorithm 1): penalty
lambda * (||grad D(x_hat)|| - 1)^2 on random interpolates x_hat with lambda = 10, n_critic = 5, Adam lr 1e-4,
betas (0, 0.9); no batch norm in the critic (§4), layer norm instead (configurable: d_layernorm off = no norm);
latent 128 and ngf = ndf = 64 as in their DCGAN-style models, ReLU in G, no dropout.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from gansvc.families.adversarial import DcganStyle, DcganStyleConfig
from gansvc.families.base import FamilySpec, RunPreset
from gansvc.families.gan_fields import Beta, LearningRate

STYLE = DcganStyle(name="wgan-gp", conditional=False)  # build, train_step, generate: gansvc.families.adversarial


class WGANGPConfig(DcganStyleConfig):
    loss: Literal["wasserstein"] = "wasserstein"
    gp_lambda: float = Field(10.0, gt=0.0, le=1000.0)  # lambda = 10 (Algorithm 1)
    n_critic: int = Field(5, ge=1, le=100)  # n_critic = 5
    lr_g: LearningRate = 1e-4  # alpha = 1e-4
    lr_d: LearningRate = 1e-4
    betas: tuple[Beta, Beta] = (0.0, 0.9)  # beta1 = 0, beta2 = 0.9
    d_layernorm: bool = True  # §4: layer norm as the drop-in replacement for batch norm in the critic
    latent_dim: int = Field(128, ge=1, le=4096)
    # 32 here = the DCGAN reference code's ngf=64 (512 channels at 4x4, 64 at half resolution); our G adds a
    # full-resolution layer of g_filters channels before the output conv (report 002 baseline layout)
    g_filters: int = Field(32, ge=1, le=1024)
    d_filters: int = Field(64, ge=1, le=1024)
    activation: Literal["relu", "leakyrelu"] = "relu"
    d_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    label_smoothing: float = Field(0.0, ge=0.0, lt=0.5)  # unused by the Wasserstein loss

    @model_validator(mode="after")
    def _wgan_gp_is_penalty(self) -> WGANGPConfig:
        if self.clip_value != 0:
            raise ValueError("clip_value must be 0 for wgan-gp (gradient penalty); use the wgan family for clipping")
        return self


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
    },
    "smoke": {"latent_dim": 16, "g_filters": 8, "d_filters": 8, "max_filters": 64},
}


# Whole-run settings: report 004 (96 px anime faces, trained at 64 px) gives no length: Gulrajani et al.'s
# reference runs train 200 000 generator iterations with batch 64 (5 critic steps each); faces flip.
RUNS: dict[str, RunPreset] = {
    "report": RunPreset(
        loop={"batch_size": 64, "max_steps": 200_000},
        data={"size": 64, "flip": True},
        note="report 004 with Gulrajani et al.'s reference length: batch 64, 200k G iterations",
    ),
}


SPEC: FamilySpec[WGANGPConfig] = STYLE.spec(
    WGANGPConfig,
    presets=PRESETS,
    runs=RUNS,
    default_preset="report",
    dataset="anime-faces-tags",
    description="Wasserstein GAN with gradient penalty (WGAN proposal; Gulrajani et al. 2017)",
)
