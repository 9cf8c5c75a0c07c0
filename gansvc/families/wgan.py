"""`wgan`: Wasserstein GAN with weight clipping, the WGAN proposal's (004) second model.

The proposal gives no numbers beyond the method; defaults follow Arjovsky et al. 2017 ("Wasserstein GAN",
Algorithm 1 and §4): critic without sigmoid, loss D(G(z)) - D(x) for the critic and -D(G(z)) for G, every critic
weight clipped to [-0.01, 0.01] after each critic update, RMSprop lr 5e-5, n_critic 5; their DCGAN networks
(latent 100, ngf = ndf = 64, ReLU in G, batch norm in G and in the critic, no dropout).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from gansvc.families.adversarial import DcganStyle, DcganStyleConfig
from gansvc.families.base import FamilySpec, RunPreset
from gansvc.families.gan_fields import LearningRate, Optimizer

STYLE = DcganStyle(name="wgan", conditional=False)  # build, train_step, generate: gansvc.families.adversarial


class WGANConfig(DcganStyleConfig):
    loss: Literal["wasserstein"] = "wasserstein"  # Arjovsky et al. 2017
    clip_value: float = Field(0.01, gt=0.0, le=10.0)  # c = 0.01 (Algorithm 1)
    n_critic: int = Field(5, ge=1, le=100)  # n_critic = 5 (Algorithm 1)
    optimizer: Optimizer = "rmsprop"  # §3: momentum-based optimisers were unstable, RMSprop used
    lr_g: LearningRate = 5e-5  # alpha = 5e-5 (Algorithm 1)
    lr_d: LearningRate = 5e-5
    latent_dim: int = Field(100, ge=1, le=4096)  # DCGAN generator of the paper's experiments
    # 32 here = the DCGAN reference code's ngf=64 (512 channels at 4x4, 64 at half resolution); our G adds a
    # full-resolution layer of g_filters channels before the output conv (report 002 baseline layout)
    g_filters: int = Field(32, ge=1, le=1024)
    d_filters: int = Field(64, ge=1, le=1024)
    activation: Literal["relu", "leakyrelu"] = "relu"
    d_batchnorm: bool = True  # the paper's DCGAN critic keeps batch norm (clipping, not a gradient penalty)
    d_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    label_smoothing: float = Field(0.0, ge=0.0, lt=0.5)  # unused by the Wasserstein loss

    @model_validator(mode="after")
    def _wgan_is_clipping(self) -> WGANConfig:
        if self.gp_lambda != 0:
            raise ValueError(
                "gp_lambda must be 0 for wgan (weight clipping); use the wgan-gp family for a gradient penalty"
            )
        return self


PRESETS: dict[str, dict[str, object]] = {
    "report": {
        "loss": "wasserstein",
        "clip_value": 0.01,
        "n_critic": 5,
        "optimizer": "rmsprop",
        "lr_g": 5e-5,
        "lr_d": 5e-5,
        "latent_dim": 100,
        "g_filters": 32,
        "d_filters": 64,
        "d_batchnorm": True,
    },
    "smoke": {"latent_dim": 16, "g_filters": 8, "d_filters": 8, "max_filters": 64},
}


# Whole-run settings: report 004 (96 px anime faces, trained at 64 px) gives no length: Arjovsky et al.'s
# reference run (batch 64, 25 epochs over the data, n_critic 5 critic steps per generator step); faces flip.
RUNS: dict[str, RunPreset] = {
    "report": RunPreset(
        loop={"batch_size": 64, "epochs": 25},
        data={"size": 64, "flip": True},
        note="report 004 with Arjovsky et al.'s reference length: batch 64, 25 epochs",
    ),
}


SPEC: FamilySpec[WGANConfig] = STYLE.spec(
    WGANConfig,
    presets=PRESETS,
    runs=RUNS,
    default_preset="report",
    dataset="anime-faces-tags",
    description="Wasserstein GAN with weight clipping (WGAN proposal; Arjovsky et al. 2017)",
)
