"""Losses shared by the GAN families.

Adversarial losses take raw discriminator outputs (logits / critic scores, shape (B,)) and return scalar means.
The discriminator loss is split into a real part and a fake part so that a family can run D on real and fake images in
separate forward/backward passes (needed when D has batch norm) and still get exactly the loss of one pass:
`d_loss(kind, real, fake) == d_loss_real(kind, real) + d_loss_fake(kind, fake)`.

Sections: adversarial losses (bce / mse / hinge / wasserstein), gradient penalty, auxiliary classification.
Image-to-image losses (cycle, identity, CAM, semantic) are added below by the translation families.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

AdvLoss = Literal["bce", "mse", "hinge", "wasserstein"]
ADV_LOSSES: tuple[str, ...] = ("bce", "mse", "hinge", "wasserstein")


# ---------------------------------------------------------------------------------------------------------------------
# Adversarial losses
#
# bce:          Goodfellow et al. 2014, non-saturating G loss (their §3): D: -log D(x) - log(1 - D(G(z))),
#               G: -log D(G(z)), with D = sigmoid(logit). One-sided label smoothing (Salimans et al. 2016 §3.4):
#               the real target is 1 - s, the fake target stays 0; the anime-face DCGAN report (002) uses s = 0.1.
# mse:          least squares GAN (Mao et al. 2017, a=0, b=c=1) on raw outputs, plain means as in the Keras
#               MeanSquaredError the report (002) tried: D: (D(x) - 1)^2 + D(G(z))^2, G: (D(G(z)) - 1)^2.
# hinge:        Lim & Ye 2017 / Miyato et al. 2018: D: relu(1 - D(x)) + relu(1 + D(G(z))), G: -D(G(z)).
# wasserstein:  Arjovsky et al. 2017: critic minimises D(G(z)) - D(x) (= -W estimate), G minimises -D(G(z)).
# ---------------------------------------------------------------------------------------------------------------------


def _check_kind(kind: str) -> None:
    if kind not in ADV_LOSSES:
        raise ValueError(f"unknown adversarial loss {kind!r}; choose one of {', '.join(ADV_LOSSES)}")


def d_loss_real(kind: AdvLoss, real_out: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """The part of the discriminator loss that depends on D's outputs for real images."""
    _check_kind(kind)
    if kind == "bce":
        target = torch.full_like(real_out, 1.0 - label_smoothing)
        return F.binary_cross_entropy_with_logits(real_out, target)
    if kind == "mse":
        return ((real_out - 1.0) ** 2).mean()
    if kind == "hinge":
        return F.relu(1.0 - real_out).mean()
    return -real_out.mean()


def d_loss_fake(kind: AdvLoss, fake_out: Tensor) -> Tensor:
    """The part of the discriminator loss that depends on D's outputs for generated images."""
    _check_kind(kind)
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(fake_out, torch.zeros_like(fake_out))
    if kind == "mse":
        return (fake_out**2).mean()
    if kind == "hinge":
        return F.relu(1.0 + fake_out).mean()
    return fake_out.mean()


def d_loss(kind: AdvLoss, real_out: Tensor, fake_out: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Full discriminator (critic) adversarial loss: real part + fake part."""
    return d_loss_real(kind, real_out, label_smoothing) + d_loss_fake(kind, fake_out)


def g_loss(kind: AdvLoss, fake_out: Tensor) -> Tensor:
    """Generator adversarial loss on D's outputs for generated images (targets never smoothed)."""
    _check_kind(kind)
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(fake_out, torch.ones_like(fake_out))
    if kind == "mse":
        return ((fake_out - 1.0) ** 2).mean()
    return -fake_out.mean()  # hinge and wasserstein share the generator loss


# ---------------------------------------------------------------------------------------------------------------------
# Gradient penalty (Gulrajani et al. 2017, "Improved Training of Wasserstein GANs", Algorithm 1):
#   x_hat = eps * x + (1 - eps) * x_tilde,  eps ~ U[0, 1] per sample,
#   GP = E[(||grad_{x_hat} D(x_hat)||_2 - 1)^2], added to the critic loss with weight lambda (10 in the paper).
# The penalty is per sample, so the critic must not couple samples (no batch norm; the paper uses layer norm).
# ---------------------------------------------------------------------------------------------------------------------


def interpolate(real: Tensor, fake: Tensor, eps: Tensor | None = None) -> Tensor:
    """Random points on straight lines between real and fake samples; `eps` (B,) in [0, 1] or drawn uniformly."""
    if real.shape != fake.shape:
        raise ValueError(f"real and fake batches differ in shape: {tuple(real.shape)} vs {tuple(fake.shape)}")
    if eps is None:
        eps = torch.rand(real.shape[0], device=real.device, dtype=real.dtype)
    eps = eps.reshape(-1, *([1] * (real.dim() - 1)))
    return (eps * real + (1.0 - eps) * fake).detach().requires_grad_(True)


def gradient_penalty_from(out: Tensor, x_hat: Tensor) -> tuple[Tensor, Tensor]:
    """GP from critic outputs `out` (B,) computed on `x_hat` (which requires grad). Returns (penalty, mean grad norm).

    The graph is kept (create_graph=True) so that the penalty can be back-propagated into the critic's weights.
    """
    (grad,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
    norm = grad.flatten(1).norm(2, dim=1)
    return ((norm - 1.0) ** 2).mean(), norm.detach().mean()


def gradient_penalty(
    critic: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor, eps: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """GP of `critic` (images -> (B,) scores) on interpolates of `real` and (detached) `fake`."""
    x_hat = interpolate(real.detach(), fake.detach(), eps)
    return gradient_penalty_from(critic(x_hat), x_hat)


# ---------------------------------------------------------------------------------------------------------------------
# Auxiliary classification (Odena et al. 2017, AC-GAN): one softmax head per attribute, cross-entropy summed over the
# attributes (log P(C=c|X) of the paper, per attribute). Label -1 means "value unknown" and is left out of the mean.
# ---------------------------------------------------------------------------------------------------------------------


def classification_loss(logits: Sequence[Tensor], labels: Tensor) -> Tensor:
    """Sum over attributes j of the mean cross-entropy of `logits[j]` (B, K_j) against `labels[:, j]` (B,) int64."""
    if labels.dim() != 2 or labels.shape[1] != len(logits):
        raise ValueError(f"labels must be (B, {len(logits)}), got {tuple(labels.shape)}")
    total = logits[0].new_zeros(()) if logits else labels.new_zeros((), dtype=torch.float32)
    for j, lg in enumerate(logits):
        y = labels[:, j]
        known = (y >= 0).to(lg.dtype)
        ce = F.cross_entropy(lg, y.clamp(min=0), reduction="none")
        total = total + (ce * known).sum() / known.sum().clamp(min=1.0)
    return total


# ---------------------------------------------------------------------------------------------------------------------
# Image-to-image losses (translation families).
# cycle / identity: L1 (Zhu et al. 2017, CycleGAN eq. 2 and §5.2); CAM: U-GAT-IT's auxiliary-classifier loss of the
# generator (Kim et al. 2020): source-domain CAM logits towards 1, target-domain CAM logits towards 0, BCE with logits.
# ---------------------------------------------------------------------------------------------------------------------


def cycle_loss(reconstructed: Tensor, real: Tensor) -> Tensor:
    """Mean absolute error between an image and its reconstruction (F(G(x)) vs x)."""
    return F.l1_loss(reconstructed, real)


def identity_loss(same: Tensor, real: Tensor) -> Tensor:
    """Mean absolute error between G(y) for y already in G's target domain and y."""
    return F.l1_loss(same, real)


def cam_loss(cam_source: Tensor, cam_target: Tensor) -> Tensor:
    """BCE(cam_source, 1) + BCE(cam_target, 0), each a mean over its logits."""
    return F.binary_cross_entropy_with_logits(
        cam_source, torch.ones_like(cam_source)
    ) + F.binary_cross_entropy_with_logits(cam_target, torch.zeros_like(cam_target))


# ---------------------------------------------------------------------------------------------------------------------
# Semantic consistency (report 001, eq. 4; after CyCADA, Hoffman et al. 2018): the L2 distance between the features a
# frozen segmentation network computes for a source image and for its translation, as a mean of squared differences
# over all elements (the "L2 loss" convention of the LSGAN terms above). The source side is the fixed target: no
# gradient flows into it; the translated side carries the gradient back through the frozen network to the generator.
# ---------------------------------------------------------------------------------------------------------------------


def semantic_loss(source_features: Tensor, translated_features: Tensor) -> Tensor:
    """mean((Sem(G(x)) - Sem(x))^2) for feature maps of the same shape; `source_features` is detached."""
    if source_features.shape != translated_features.shape:
        raise ValueError(
            f"feature maps differ in shape: {tuple(source_features.shape)} vs {tuple(translated_features.shape)}"
        )
    return F.mse_loss(translated_features, source_features.detach())
