"""Config field groups of the conv GAN families (dcgan, wgan, wgan-gp, acgan, wacgan), and the optimizer factory.

Each family config is `class XConfig(FamilyConfig, ConvGanFields[, ConditionalFields])` and re-declares the fields
whose defaults come from its own report (pydantic lets a subclass override a field's type and default). Every field is
a plain scalar / tuple so that Tune can set it (`--set lr_g=1e-4`). The defaults here are the anime-face DCGAN report's
baseline (002; its code nikhilroxtomar/DCGAN-on-Anime-Faces `gan.py`); each family overrides what its report changes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Literal

import torch
from pydantic import BaseModel, Field, model_validator

LearningRate = Annotated[float, Field(gt=0.0, le=1.0)]
Beta = Annotated[float, Field(ge=0.0, lt=1.0)]
Slope = Annotated[float, Field(ge=0.0, lt=1.0)]
Optimizer = Literal["adam", "rmsprop", "sgd"]


class ConvGanFields(BaseModel):
    """Networks, D regularisers, optimisation and adversarial loss of a DCGAN-style family."""

    # --- networks (report 002 §III and its code) ---
    latent_dim: int = Field(128, ge=1, le=4096)  # baseline code: latent_dim = 128
    g_filters: int = Field(32, ge=1, le=1024)  # filters of G's last (full-resolution) layer; doubled per layer down
    d_filters: int = Field(64, ge=1, le=1024)  # filters of D's first layer; doubled per layer
    max_filters: int = Field(1024, ge=1, le=4096)  # cap for deep nets (sizes 128/256); baseline never reaches it
    kernel_size: Literal[3, 5, 7] = 5  # report §V.9: baseline 5; 3 and 7 tried
    # G's upsampling: "transposed" = the report's ConvTranspose stride 2 (with kernel 5, not a multiple of the stride,
    # it paints a checkerboard: Odena et al. 2016); "resize" = nearest x2 + stride-1 conv, Odena et al.'s fix
    upsample: Literal["transposed", "resize"] = "transposed"
    progressive_kernels: bool = False  # report §V.10: kernels 3, 5, 7 growing by layer (overrides kernel_size)
    activation: Literal["relu", "leakyrelu"] = "leakyrelu"  # G activation; report §V.6: baseline LeakyReLU, best ReLU
    leaky_slope: Slope = 0.2  # G LeakyReLU slope; report §V.7: 0.2 default, 0.05 / 0.1 / 0.5 tried
    d_leaky_slope: Slope = 0.2  # D LeakyReLU slope (baseline code alpha=0.2)
    d_batchnorm: bool = False  # report §V.5: BN in D (not on its first layer), off in the baseline
    d_layernorm: bool = False  # layer norm in the critic, the GP-compatible alternative (Gulrajani et al. 2017 §4)
    d_dropout: float = Field(0.3, ge=0.0, lt=1.0)  # baseline code: Dropout(0.3) after every D layer
    # report §V.8 / Salimans et al. 2016: Gaussian instance noise in D after its first layer or after every layer
    noise: Literal["off", "first", "every"] = "off"
    noise_std: float = Field(0.1, ge=0.0, le=10.0)  # not given by the report; 0.1 is our choice
    noise_anneal_steps: int = Field(0, ge=0)  # linear decay of noise_std to 0 over this many steps; 0 = constant

    # --- optimisation (report 002 §IV: Adam 2e-4, Keras beta_2 default 0.999; baseline code beta_1 0.5) ---
    optimizer: Optimizer = "adam"  # report §V.3: RMSprop and SGD tried
    lr_g: LearningRate = 2e-4  # report §V.2: 1e-4 and 5e-4 tried
    lr_d: LearningRate = 2e-4
    betas: tuple[Beta, Beta] = (0.5, 0.999)  # Adam only
    momentum: float = Field(0.0, ge=0.0, lt=1.0)  # SGD / RMSprop only (Keras and torch default 0)
    # D updates per G update: report 002's text trains D once per step (its starting code loops D twice: n_critic=2)
    n_critic: int = Field(1, ge=1, le=100)
    # how the n_critic D updates of one train_step use its batch: "split" = n_critic disjoint chunks (each critic step
    # sees fresh real images, as Arjovsky et al. / Gulrajani et al. sample a new batch per critic iteration; a batch
    # smaller than n_critic cycles through its samples); "reuse" = every critic step sees the whole batch.
    critic_batches: Literal["split", "reuse"] = "split"

    # --- adversarial loss (report §IV: BCE with label smoothing 0.1; §V.4: MSE and hinge tried) ---
    loss: Literal["bce", "mse", "hinge", "wasserstein"] = "bce"
    label_smoothing: float = Field(0.1, ge=0.0, lt=0.5)  # one-sided, real target 1 - s (Salimans et al. 2016); bce only
    gp_lambda: float = Field(0.0, ge=0.0, le=1000.0)  # gradient penalty weight (Gulrajani et al. 2017); 0 = off
    clip_value: float = Field(0.0, ge=0.0, le=10.0)  # critic weight clipping c (Arjovsky et al. 2017); 0 = off

    @model_validator(mode="after")
    def _check_conv_gan(self) -> ConvGanFields:
        if self.d_batchnorm and self.d_layernorm:
            raise ValueError("d_batchnorm and d_layernorm cannot both be on: pick one normalisation for D")
        if self.gp_lambda > 0 and self.d_batchnorm:
            raise ValueError(
                "d_batchnorm must be off with gp_lambda > 0: the gradient penalty is per sample and batch "
                "norm couples samples (Gulrajani et al. 2017 §4); use d_layernorm instead"
            )
        if self.loss == "wasserstein" and self.gp_lambda == 0 and self.clip_value == 0:
            raise ValueError("loss 'wasserstein' needs a Lipschitz constraint: set clip_value > 0 or gp_lambda > 0")
        return self


class ConditionalFields(BaseModel):
    """Auxiliary-classifier conditioning (Odena et al. 2017) over several categorical attributes."""

    class_weight: float = Field(1.0, ge=0.0, le=1000.0)  # weight of the classification loss (study 003 eq. 1, lambda)
    # Odena et al. train D's classifier on real and generated images; the study's WAC-GAN (003 eq. 1) on real only
    d_class_on_fake: bool = True
    # labels of generated images during training: "data" = the batch's own labels (y ~ P_Y, study 003 eq. 1),
    # "uniform" = each attribute value uniformly at random
    fake_labels: Literal["data", "uniform"] = "data"


def make_optimizer(
    kind: Optimizer,
    params: Iterable[torch.nn.Parameter],
    lr: float,
    betas: tuple[float, float] = (0.5, 0.999),
    momentum: float = 0.0,
) -> torch.optim.Optimizer:
    """Adam(lr, betas) / RMSprop(lr, momentum; torch alpha 0.99 as in Arjovsky et al.'s code) / SGD(lr, momentum)."""
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr, betas=betas)
    if kind == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=momentum)
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum)
    raise ValueError(f"unknown optimizer {kind!r}; choose adam, rmsprop or sgd")
