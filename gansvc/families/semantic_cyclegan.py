"""CycleGAN with a semantic consistency loss: the improved CycleGAN of the semantic-consistency report (001, Fan).

Networks (report sec. 2.2.1): U-Net generators G_A: A -> B and G_B: B -> A (`gansvc.nn.unet`, the official pix2pix /
CycleGAN U-Net), 70x70 PatchGAN discriminators D_A (judges B) and D_B (judges A), official CycleGAN naming.

Objective (report eq. 5): L = L_GAN(A->B) + L_GAN(B->A) + lambda_c L_cyc + lambda_s L_sem, with
- L_GAN in the LSGAN form (`loss="mse"`, CycleGAN's practice; `"bce"` is the log form the report writes in eqs. 1-2);
- L_cyc = |G_B(G_A(a)) - a|_1 + |G_A(G_B(b)) - b|_1 (eq. 3), lambda_c = 10 (sec. 2.3);
- L_sem = L2(Sem_A(a), Sem_B(G_A(a))) + L2(Sem_B(b), Sem_A(G_B(b))) (eq. 4), lambda_s = 1 (sec. 2.3), where Sem is
  a FROZEN segmentation network and L2 the mean squared difference of its outputs (`gansvc.losses.semantic_loss`).
  Features: the network's class logits (`semantic_features="logits"`, default), not its backbone features: logits are
  what the segmenter was trained to make invariant to everything but the class of each pixel, so they constrain the
  semantic layout and leave appearance (colour, texture: what a translation must change) free; backbone features
  also encode appearance, and matching them acts like a content loss that fights the translation. "backbone" is
  there for comparison (an ablation axis). Logits are also comparable across architectures with the same classes.
- no identity term (not in eq. 5; `lambda_identity`, relative to lambda_c as in CycleGAN, adds it).
The report's Sem_S / Sem_T are one network per domain; `segmenter` is Sem_A, `segmenter_b` (optional) Sem_B, else
the same network serves both domains (as CyCADA's semantic loss does with one source-trained network).

The segmentation network's weights are the family's declared input (`segmenter`): a gansvc segmenter checkpoint (a
run's checkpoint directory, a `model.pt`, a registry model file; train one with `python -m gansvc.train segmenter`) or
a plain state-dict file of `segmenter_arch` (e.g. torchvision weights), local or s3://. `build` loads them (the one I/O
this family does) and refuses to start without. `segmenter: random` (a fixed-seed, randomly initialised frozen
network of `segmenter_arch`) exists ONLY for tests and smoke runs (the `smoke` preset): it is not a semantic loss.

Optimisation (sec. 2.3): Adam lr 2e-4 for G and D (betas 0.5, 0.999 as CycleGAN), batch size 1 (the loop's
--batch-size), 50-image pools, CycleGAN's constant-then-linear LR schedule (the report states none). Training order per
step is CycleGAN's: G update (Ds frozen), then D update on pooled, detached fakes.

Evaluation: the FCN score (Isola et al. 2017 / Zhu et al. 2017): mIoU of the frozen Sem_B on translations G_A(a)
against A's masks (`fcn_miou`), beside Sem_A's mIoU on the real A images (`fcn_miou_real`, its ceiling), when the
dataset has A masks with the segmenter's classes.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Mapping
from typing import cast

import torch
from pydantic import BaseModel, Field
from torch import Tensor, nn

from gansvc import losses, storage
from gansvc.data.spec import IGNORE_INDEX, DataSpec
from gansvc.families.base import Batch, Direction, ExtraMetric, FamilyConfig, FamilySpec, GanState, RunPreset
from gansvc.families.cycle import (
    CycleConfig,
    CycleObjective,
    CycleWidths,
    PatchGanFields,
    build_cycle_state,
    check_unpaired,
)
from gansvc.families.cycle import train_step as cycle_train_step
from gansvc.families.fit import fit_patchgan, patchgan_layers
from gansvc.families.model_file import FORMAT, MODEL_FILE, CheckpointError, load_payload
from gansvc.families.segmenter import SPEC as SEGMENTER  # its model files are this family's declared input
from gansvc.nn.i2i_util import check_images
from gansvc.nn.segnet import Arch, Features, FrozenSegmenter, SegNet, segnet_from_state_dict
from gansvc.nn.unet import UnetGenerator, default_num_downs
from gansvc.nn.wrappers import unwrap

RANDOM = "random"
RANDOM_SEED = 20240601
RANDOM_CLASSES = 8  # classes of a random segmenter on data without masks

HOW_TO_GET_WEIGHTS = (
    "semantic-cyclegan needs the weights of a segmentation network for its semantic loss: train one on a dataset with "
    "masks (`python -m gansvc.train segmenter --dataset s3://.../with-masks --max-steps N`), then pass its checkpoint: "
    "`--set model.segmenter=s3://.../runs/NAME/checkpoint-000N` (a checkpoint directory, a model.pt or a registry "
    "model file); or a plain state-dict file of model.segmenter_arch (a torchvision segmentation model's weights)"
)


class UnetDepth(BaseModel):
    # U-Net levels; None: floor(log2(min image side)), at most 8 (the official unet_256 has 8 for 256 px)
    num_downs: int | None = Field(None, ge=2, le=12)


class SemanticFields(BaseModel):
    """Semantic consistency (report sec. 2.2.2, eq. 4)."""

    # Sem_A: gansvc segmenter checkpoint / model.pt / plain state dict (local or s3://); REQUIRED.
    # "random" = fixed-seed untrained network: tests and smoke runs only.
    segmenter: str = ""
    segmenter_b: str = ""  # Sem_B, same forms; "" = `segmenter` for both domains
    # architecture of plain state-dict files and of "random" (gansvc checkpoints carry their own)
    segmenter_arch: Arch = "deeplabv3_mobilenet_v3_large"
    semantic_features: Features = "logits"  # see the module doc for why logits
    lambda_semantic: float = Field(1.0, ge=0.0, le=1000.0)  # lambda_s (report sec. 2.3)


class SemanticCycleganConfig(CycleObjective, SemanticFields, PatchGanFields, UnetDepth, CycleWidths, FamilyConfig):
    """Fields: `gansvc.families.cycle` (widths, PatchGAN, objective, optimisation: report sec. 2.2.1 / 2.3 with
    CycleGAN's sizes, betas and schedule), the U-Net depth and the semantic loss here."""

    lambda_identity: float = Field(0.0, ge=0.0, le=100.0)  # relative to lambda_cycle; report eq. 5 has none


PRESETS: dict[str, dict[str, object]] = {
    # the official unet_256 (8 levels) for the report's 256+ px crops (it crops 768 x 768)
    "report": {"num_downs": 8},
    # tiny nets and a RANDOM frozen segmenter (tests / CPU smoke runs only: the semantic loss is then meaningless)
    "smoke": {"ngf": 8, "ndf": 8, "n_layers_d": 2, "pool_size": 8, "segmenter": RANDOM, "segmenter_arch": "tiny"},
}


# ------------------------------------------------------------------------------------------------------- segmenter


def load_segmenter(source: str, arch: str, data: DataSpec) -> FrozenSegmenter:
    """The frozen segmentation network named by a config value (see the module doc). ValueError says what to do."""
    if not source:
        raise ValueError(f"model.segmenter is not set. {HOW_TO_GET_WEIGHTS}")
    if source == RANDOM:
        with torch.random.fork_rng(devices=[]):  # leave the caller's RNG stream untouched
            torch.manual_seed(RANDOM_SEED)
            net = SegNet(arch, data.channels, data.num_classes or RANDOM_CLASSES)
        return FrozenSegmenter(net, RANDOM)
    try:
        loc = storage.parse_uri(source)
        uri = loc.uri() if loc.uri().endswith((".pt", ".pth", ".bin")) else loc.join(MODEL_FILE).uri()
        raw = storage.read_bytes(uri)
    except storage.StorageError as err:
        raise ValueError(f"model.segmenter: cannot read the segmenter weights: {err}. {HOW_TO_GET_WEIGHTS}") from None
    try:
        obj = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means "not a weights file"
        raise ValueError(f"model.segmenter: {uri} is not a PyTorch weights file: {err}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"model.segmenter: {uri} holds a {type(obj).__name__}, not a state dict or gansvc model")
    if obj.get("format") == FORMAT:
        if obj.get("family") != "segmenter":
            raise ValueError(
                f"model.segmenter: {uri} is a {obj.get('family')!r} model, not a segmenter. {HOW_TO_GET_WEIGHTS}"
            )
        try:
            model = load_payload(SEGMENTER, obj, uri)
        except CheckpointError as err:
            raise ValueError(f"model.segmenter: {err}") from None
        net = cast(SegNet, model.nets["S"])  # a segmenter family model (checked above): its S is a SegNet
        where = f"{uri} (segmenter {json.loads(obj['config']).get('arch')}, {net.num_classes} classes)"
    else:
        net = segnet_from_state_dict(arch, obj, data.channels)
        where = uri
    return FrozenSegmenter(net, where)


def segmenters(state: GanState) -> tuple[FrozenSegmenter, FrozenSegmenter]:
    """(Sem_A, Sem_B): the same object when one network serves both domains."""
    sem_a = state.extras["segmenter_A"]
    sem_b = state.extras.get("segmenter_B", sem_a)
    assert isinstance(sem_a, FrozenSegmenter) and isinstance(sem_b, FrozenSegmenter), "build() makes the segmenters"
    return sem_a, sem_b


def _check_compatible(sem_a: FrozenSegmenter, sem_b: FrozenSegmenter, kind: Features) -> None:
    if kind == "logits" and sem_a.num_classes != sem_b.num_classes:
        raise ValueError(
            f"model.segmenter ({sem_a.num_classes} classes) and model.segmenter_b ({sem_b.num_classes}) "
            "must segment the same classes to compare their logits"
        )
    if kind == "backbone" and sem_a.net.arch != sem_b.net.arch:
        raise ValueError(
            f"model.segmenter ({sem_a.net.arch}) and model.segmenter_b ({sem_b.net.arch}) must share an "
            "architecture to compare backbone features"
        )


# ----------------------------------------------------------------------------------------------------------- build


def build(cfg: SemanticCycleganConfig, data: DataSpec) -> GanState:
    if not cfg.segmenter:
        raise ValueError(f"model.segmenter is not set. {HOW_TO_GET_WEIGHTS}")
    check_unpaired(data, "semantic-cyclegan")
    h, w, c = data.height, data.width, data.channels
    n_layers_d = patchgan_layers(cfg.n_layers_d, h, w)  # auto resolved; a set depth that does not fit: ValueError
    sem_a = load_segmenter(cfg.segmenter, cfg.segmenter_arch, data)
    extras: dict[str, FrozenSegmenter] = {"segmenter_A": sem_a}
    if cfg.segmenter_b and cfg.segmenter_b != cfg.segmenter:
        sem_b = load_segmenter(cfg.segmenter_b, cfg.segmenter_arch, data)
        _check_compatible(sem_a, sem_b, cfg.semantic_features)
        extras["segmenter_B"] = sem_b
    num_downs = cfg.num_downs if cfg.num_downs is not None else default_num_downs(h, w)
    return build_cycle_state(
        cfg, data, lambda: UnetGenerator(c, c, num_downs, cfg.ngf, cfg.dropout), n_layers_d, extras
    )


# ------------------------------------------------------------------------------------------------------------ step


def semantic_terms(
    sem_a: FrozenSegmenter,
    sem_b: FrozenSegmenter,
    real_a: Tensor,
    real_b: Tensor,
    fake_b: Tensor,
    fake_a: Tensor,
    kind: Features,
) -> tuple[Tensor, Tensor]:
    """Report eq. 4: (L2(Sem_A(a), Sem_B(G_A(a))), L2(Sem_B(b), Sem_A(G_B(b)))); gradients reach the fakes only."""
    with torch.no_grad():
        src_a, src_b = sem_a.features(real_a, kind), sem_b.features(real_b, kind)
    return (
        losses.semantic_loss(src_a, sem_b.features(fake_b, kind)),
        losses.semantic_loss(src_b, sem_a.features(fake_a, kind)),
    )


def semantic_hook(
    state: GanState, cfg: CycleConfig, real_a: Tensor, real_b: Tensor, fake_b: Tensor, fake_a: Tensor
) -> tuple[Tensor, dict[str, Tensor]]:
    """The cycle base's extra generator terms: lambda_s * (sem_A + sem_B) (report eq. 5)."""
    assert isinstance(cfg, SemanticCycleganConfig)
    sem_a, sem_b = segmenters(state)
    sem_a_term, sem_b_term = semantic_terms(sem_a, sem_b, real_a, real_b, fake_b, fake_a, cfg.semantic_features)
    return cfg.lambda_semantic * (sem_a_term + sem_b_term), {"sem_A": sem_a_term, "sem_B": sem_b_term}


def train_step(state: GanState, batch: Batch, step: int, cfg: SemanticCycleganConfig) -> dict[str, float]:
    return cycle_train_step(state, batch, cfg, semantic_hook)


# ------------------------------------------------------------------------------------------------------- inference


@torch.no_grad()
def translate(
    nets: Mapping[str, nn.Module], images: Tensor, direction: Direction, cfg: SemanticCycleganConfig
) -> dict[str, Tensor]:
    """a2b with G_A, b2a with G_B; any H x W (the U-Net pads to its multiple and crops back)."""
    if direction not in ("a2b", "b2a"):
        raise ValueError(f"direction must be 'a2b' or 'b2a', got {direction!r}")
    # build makes G_A / G_B UnetGenerators; the hook's Mapping holds any family's nets, as nn.Module
    net = cast(UnetGenerator, unwrap(nets["G_A" if direction == "a2b" else "G_B"]))
    check_images(images, net.in_channels)
    return {"image": net(images)}


@torch.no_grad()
def evaluate(state: GanState, batches: Iterable[Batch], cfg: SemanticCycleganConfig) -> dict[str, float]:
    """FCN score: mIoU of Sem_B on G_A(a) against A's masks (`fcn_miou`, `fcn_pixel_acc`), and of Sem_A on the real A
    images (`fcn_miou_real`). {} when the batches have no A masks or their classes exceed the segmenter's."""
    # deferred: `gansvc.metrics` loads the Inception extractors' modules, needed only when a run evaluates
    from gansvc.metrics.segmentation import confusion_matrix, miou_from_confusion, pixel_accuracy

    sem_a, sem_b = segmenters(state)
    k = sem_b.num_classes
    nets = state.inference_nets()
    fake_cm: Tensor | None = None
    real_cm: Tensor | None = None
    for batch in batches:
        if "A_mask" not in batch:
            return {}
        a, mask = batch["A"], batch["A_mask"]
        known = mask[mask != IGNORE_INDEX]
        if known.numel() and int(known.max()) >= min(k, sem_a.num_classes):
            return {}  # the masks' classes are not the segmenter's: no meaningful score
        fake_b = translate(nets, a, "a2b", cfg)["image"]
        f = confusion_matrix(sem_b.logits(fake_b).argmax(1), mask, k).cpu()
        r = confusion_matrix(sem_a.logits(a).argmax(1), mask, sem_a.num_classes).cpu()
        fake_cm = f if fake_cm is None else fake_cm + f
        real_cm = r if real_cm is None else real_cm + r
    if fake_cm is None or real_cm is None or int(fake_cm.sum()) == 0:
        return {}
    return {
        "fcn_miou": miou_from_confusion(fake_cm),
        "fcn_pixel_acc": pixel_accuracy(fake_cm),
        "fcn_miou_real": miou_from_confusion(real_cm),
    }


# the FCN score (Isola et al. 2017 / Zhu et al. 2017) and its ceiling; fcn_miou is the headline score (curves.png)
EXTRA_METRICS = {
    "fcn_miou": ExtraMetric(
        "max", "FCN score (Isola et al. 2017): mean IoU of the frozen segmenter on A->B translations", quality=True
    ),
    "fcn_pixel_acc": ExtraMetric("max", "pixel accuracy of the frozen segmenter on A->B translations"),
    "fcn_miou_real": ExtraMetric("max", "mean IoU of the frozen segmenter on real A images (the FCN score's ceiling)"),
}


# Whole-run settings: report 001 sec. 2 (GTA5 -> Cityscapes, random horizontal flips, lr 2e-4) with CycleGAN's
# batch 1 and 100 + 100 epoch schedule (the report gives no length); 256 px crops of 286 px images (the report scales
# to 1024 px, beyond one GPU's memory for these nets at batch 1: say --size 1024 to follow it).
RUNS: dict[str, RunPreset] = {
    "default": RunPreset(
        loop={"batch_size": 1, "epochs": 200},
        data={"size": 256, "load_size": 286, "flip": True},
        epoch_fields={"decay_start": 100, "decay_steps": 100},
        note="report 001 with CycleGAN's batch 1 and 100 + 100 epochs, 286 -> crop 256, flip",
    ),
}
RUNS["report"] = RUNS["default"]


SPEC: FamilySpec[SemanticCycleganConfig] = FamilySpec(
    name="semantic-cyclegan",
    task="translate",
    config=SemanticCycleganConfig,
    build=build,
    train_step=train_step,
    translate=translate,
    evaluate=evaluate,
    extra_metrics=EXTRA_METRICS,
    presets=PRESETS,
    runs=RUNS,
    fit_to_data=fit_patchgan,
    default_preset="report",
    dataset="gta2cityscapes",
    description="CycleGAN with U-Net generators, PatchGAN, LSGAN, cycle L1 and the semantic-consistency loss: L2 "
    "between a frozen segmenter's logits of source and translation (needs model.segmenter weights)",
)
