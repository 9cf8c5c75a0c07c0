"""`acgan`: auxiliary classifier GAN over several attributes at once (the anime-face study, 003).

G gets z concatenated with one one-hot block per attribute (study §3.1.4.2.6); D has the adversarial output and one
softmax head per attribute (e.g. hair_color, eye_color). Losses (Odena et al. 2017, "Conditional Image Synthesis with
Auxiliary Classifier GANs", eq. 1-2), with L_C summed over attributes:
  D: L_adv(real, fake) + class_weight * (CE(C(x), y) + CE(C(G(z, y')), y'))   (fake term: d_class_on_fake)
  G: L_adv_G(fake) + class_weight * CE(C(G(z, y')), y')
The study gives no hyperparameters; defaults: Odena et al. (BCE, Adam lr 2e-4, beta1 0.5, latent 100, class loss
weight 1) on the anime-face DCGAN report's best networks (002 §VI: ReLU in G, BN in D, 64 / 128 filters, kernel 5,
dropout 0.3 in D). Labels are (B, n_attributes) int64 in DataSpec.attributes order; -1 marks an unknown value, left
out of the classification loss. Use `gansvc.families.sampling.encode_labels` to build labels from names.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from gansvc.families.adversarial import DcganStyle, DcganStyleConfig
from gansvc.families.base import FamilySpec, RunPreset
from gansvc.families.gan_fields import ConditionalFields

STYLE = DcganStyle(name="acgan", conditional=True)  # build, train_step, generate: gansvc.families.adversarial


class ACGANConfig(DcganStyleConfig, ConditionalFields):
    loss: Literal["bce", "mse", "hinge"] = "bce"  # Odena et al.: log-likelihood (bce) source loss
    label_smoothing: float = Field(0.0, ge=0.0, lt=0.5)  # Odena et al. use none
    latent_dim: int = Field(100, ge=1, le=4096)  # Odena et al.: 100-dim noise next to the class code
    activation: Literal["relu", "leakyrelu"] = "relu"  # report 002 §VI
    d_batchnorm: bool = True  # report 002 §VI
    g_filters: int = Field(64, ge=1, le=1024)  # report 002 §VI
    d_filters: int = Field(128, ge=1, le=1024)  # report 002 §VI


PRESETS: dict[str, dict[str, object]] = {
    "report": {
        "loss": "bce",
        "label_smoothing": 0.0,
        "optimizer": "adam",
        "lr_g": 2e-4,
        "lr_d": 2e-4,
        "betas": (0.5, 0.999),
        "latent_dim": 100,
        "class_weight": 1.0,
        "d_class_on_fake": True,
        "activation": "relu",
        "d_batchnorm": True,
        "g_filters": 64,
        "d_filters": 128,
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


SPEC: FamilySpec[ACGANConfig] = STYLE.spec(
    ACGANConfig,
    presets=PRESETS,
    runs=RUNS,
    default_preset="report",
    dataset="anime-faces-tags",
    description="Auxiliary classifier GAN over several attributes (anime-face study; Odena et al. 2017)",
)
