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
from itertools import chain
from typing import Annotated, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from gansvc import losses, storage
from gansvc.data.spec import IGNORE_INDEX, DataSpec
from gansvc.families.base import Batch, Direction, FamilyConfig, FamilySpec, GanState, finish_step, unwrap, RunPreset
from gansvc.nn.cycle import discriminator_step
from gansvc.nn.ema import ema_copy
from gansvc.nn.i2i_util import check_images, frozen, init_normal_, linear_decay_scheduler
from gansvc.families.fit import fit_patchgan, patchgan_layers
from gansvc.nn.patchgan import NLayerDiscriminator
from gansvc.nn.pool import ImagePool
from gansvc.nn.segnet import Arch, Features, FrozenSegmenter, SegNet, segnet_from_state_dict
from gansvc.nn.unet import UnetGenerator, default_num_downs

Beta = Annotated[float, Field(ge=0.0, lt=1.0)]
RANDOM = "random"
RANDOM_SEED = 20240601
RANDOM_CLASSES = 8  # classes of a random segmenter on data without masks

HOW_TO_GET_WEIGHTS = (
    "semantic-cyclegan needs the weights of a segmentation network for its semantic loss: train one on a dataset with "
    "masks (`python -m gansvc.train segmenter --dataset s3://.../with-masks --max-steps N`), then pass its checkpoint: "
    "`--set model.segmenter=s3://.../runs/NAME/checkpoint-000N` (a checkpoint directory, a model.pt or a registry "
    "model file); or a plain state-dict file of model.segmenter_arch (a torchvision segmentation model's weights)")


class SemanticCycleganConfig(FamilyConfig):
    # --- networks (report sec. 2.2.1: U-Net G, PatchGAN D; official CycleGAN sizes) ---
    ngf: int = Field(64, ge=1, le=1024)
    ndf: int = Field(64, ge=1, le=1024)
    # U-Net levels; None: floor(log2(min image side)), at most 8 (the official unet_256 has 8 for 256 px)
    num_downs: int | None = Field(None, ge=2, le=12)
    # stride-2 layers of the PatchGAN. None = auto: 3 (the 70x70 PatchGAN) where the images allow (>= 24 px), else the
    # deepest that still gives a patch map (gansvc.families.fit.patchgan_layers; the run's notes say so)
    n_layers_d: int | None = Field(None, ge=1, le=8)
    dropout: bool = False  # U-Net dropout (official cycle_gan: --no_dropout)
    init_std: float = Field(0.02, gt=0.0, le=1.0)

    # --- semantic consistency (report sec. 2.2.2, eq. 4) ---
    # Sem_A: gansvc segmenter checkpoint / model.pt / plain state dict (local or s3://); REQUIRED.
    # "random" = fixed-seed untrained network: tests and smoke runs only.
    segmenter: str = ""
    segmenter_b: str = ""  # Sem_B, same forms; "" = `segmenter` for both domains
    # architecture of plain state-dict files and of "random" (gansvc checkpoints carry their own)
    segmenter_arch: Arch = "deeplabv3_mobilenet_v3_large"
    semantic_features: Features = "logits"  # see the module doc for why logits
    lambda_semantic: float = Field(1.0, ge=0.0, le=1000.0)  # lambda_s (report sec. 2.3)

    # --- objective ---
    loss: Literal["mse", "bce"] = "mse"
    lambda_cycle: float = Field(10.0, ge=0.0, le=1000.0)  # lambda_c (report sec. 2.3)
    lambda_identity: float = Field(0.0, ge=0.0, le=100.0)  # relative to lambda_cycle; report eq. 5 has none
    pool_size: int = Field(50, ge=0, le=10_000)

    # --- optimisation (report sec. 2.3: lr 2e-4 for G and D; CycleGAN's betas and schedule) ---
    lr: float = Field(2e-4, gt=0.0, le=1.0)
    betas: tuple[Beta, Beta] = (0.5, 0.999)
    decay_start: int = Field(10_000, ge=0)
    decay_steps: int = Field(10_000, ge=0)


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
    from gansvc.checkpoint import FORMAT, MODEL_FILE, CheckpointError, load_inference_payload

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
            raise ValueError(f"model.segmenter: {uri} is a {obj.get('family')!r} model, not a segmenter. "
                             f"{HOW_TO_GET_WEIGHTS}")
        try:
            model = load_inference_payload(obj, uri)
        except CheckpointError as err:
            raise ValueError(f"model.segmenter: {err}") from None
        net = model.nets["S"]
        where = f"{uri} (segmenter {json.loads(obj['config']).get('arch')}, {net.num_classes} classes)"
    else:
        net = segnet_from_state_dict(arch, obj, data.channels)
        where = uri
    return FrozenSegmenter(net, where)


def segmenters(state: GanState) -> tuple[FrozenSegmenter, FrozenSegmenter]:
    """(Sem_A, Sem_B): the same object when one network serves both domains."""
    sem_a = state.extras["segmenter_A"]
    return sem_a, state.extras.get("segmenter_B", sem_a)  # type: ignore[return-value]


def _check_compatible(sem_a: FrozenSegmenter, sem_b: FrozenSegmenter, kind: Features) -> None:
    if kind == "logits" and sem_a.num_classes != sem_b.num_classes:
        raise ValueError(f"model.segmenter ({sem_a.num_classes} classes) and model.segmenter_b ({sem_b.num_classes}) "
                         "must segment the same classes to compare their logits")
    if kind == "backbone" and sem_a.net.arch != sem_b.net.arch:
        raise ValueError(f"model.segmenter ({sem_a.net.arch}) and model.segmenter_b ({sem_b.net.arch}) must share an "
                         "architecture to compare backbone features")


# ----------------------------------------------------------------------------------------------------------- build

def build(cfg: SemanticCycleganConfig, data: DataSpec) -> GanState:
    if not cfg.segmenter:
        raise ValueError(f"model.segmenter is not set. {HOW_TO_GET_WEIGHTS}")
    if data.layout != "unpaired":
        raise ValueError(f"semantic-cyclegan trains on unpaired A/B images; the dataset layout is {data.layout!r}")
    h, w, c = data.height, data.width, data.channels
    n_layers_d = patchgan_layers(cfg.n_layers_d, h, w)  # auto resolved; a set depth that does not fit: ValueError
    sem_a = load_segmenter(cfg.segmenter, cfg.segmenter_arch, data)
    extras: dict[str, object] = {"segmenter_A": sem_a}
    if cfg.segmenter_b and cfg.segmenter_b != cfg.segmenter:
        sem_b = load_segmenter(cfg.segmenter_b, cfg.segmenter_arch, data)
        _check_compatible(sem_a, sem_b, cfg.semantic_features)
        extras["segmenter_B"] = sem_b
    num_downs = cfg.num_downs if cfg.num_downs is not None else default_num_downs(h, w)
    nets: dict[str, nn.Module] = {
        "G_A": UnetGenerator(c, c, num_downs, cfg.ngf, cfg.dropout),
        "G_B": UnetGenerator(c, c, num_downs, cfg.ngf, cfg.dropout),
        "D_A": NLayerDiscriminator(c, cfg.ndf, n_layers_d),
        "D_B": NLayerDiscriminator(c, cfg.ndf, n_layers_d),
    }
    for net in nets.values():
        init_normal_(net, cfg.init_std)
    opt_g = torch.optim.Adam(chain(nets["G_A"].parameters(), nets["G_B"].parameters()), lr=cfg.lr, betas=cfg.betas)
    opt_d = torch.optim.Adam(chain(nets["D_A"].parameters(), nets["D_B"].parameters()), lr=cfg.lr, betas=cfg.betas)
    seeds = torch.randint(0, 2**62, (2,)).tolist()
    extras |= {"fake_B_pool": ImagePool(cfg.pool_size, seeds[0]), "fake_A_pool": ImagePool(cfg.pool_size, seeds[1])}
    return GanState(
        nets=nets,
        optimizers={"G": opt_g, "D": opt_d},
        schedulers={k: linear_decay_scheduler(o, cfg.decay_start, cfg.decay_steps)
                    for k, o in (("G", opt_g), ("D", opt_d))},
        ema={k: ema_copy(nets[k]) for k in ("G_A", "G_B")} if cfg.ema else {},
        extras=extras,  # type: ignore[arg-type]
        inference=("G_A", "G_B"),
    )


# ------------------------------------------------------------------------------------------------------------ step

def semantic_terms(sem_a: FrozenSegmenter, sem_b: FrozenSegmenter, real_a: Tensor, real_b: Tensor, fake_b: Tensor,
                   fake_a: Tensor, kind: Features) -> tuple[Tensor, Tensor]:
    """Report eq. 4: (L2(Sem_A(a), Sem_B(G_A(a))), L2(Sem_B(b), Sem_A(G_B(b)))); gradients reach the fakes only."""
    with torch.no_grad():
        src_a, src_b = sem_a.features(real_a, kind), sem_b.features(real_b, kind)
    return (losses.semantic_loss(src_a, sem_b.features(fake_b, kind)),
            losses.semantic_loss(src_b, sem_a.features(fake_a, kind)))


def generator_step(state: GanState, real_a: Tensor, real_b: Tensor, cfg: SemanticCycleganConfig
                   ) -> tuple[dict[str, float], Tensor, Tensor]:
    g_a, g_b, d_a, d_b = (state.nets[k] for k in ("G_A", "G_B", "D_A", "D_B"))
    sem_a, sem_b = segmenters(state)
    n, m = real_a.shape[0], real_b.shape[0]
    use_idt = cfg.lambda_identity > 0
    with frozen(d_a, d_b):
        out_a = g_a(torch.cat([real_a, real_b])) if use_idt else g_a(real_a)
        out_b = g_b(torch.cat([real_b, real_a])) if use_idt else g_b(real_b)
        fake_b, fake_a = out_a[:n], out_b[:m]
        rec_a, rec_b = g_b(fake_b), g_a(fake_a)
        adv_a = losses.g_loss(cfg.loss, d_a(fake_b))
        adv_b = losses.g_loss(cfg.loss, d_b(fake_a))
        cyc_a, cyc_b = losses.cycle_loss(rec_a, real_a), losses.cycle_loss(rec_b, real_b)
        sem_a_term, sem_b_term = semantic_terms(sem_a, sem_b, real_a, real_b, fake_b, fake_a, cfg.semantic_features)
        total = (adv_a + adv_b + cfg.lambda_cycle * (cyc_a + cyc_b)
                 + cfg.lambda_semantic * (sem_a_term + sem_b_term))
        terms = {"G_A": adv_a, "G_B": adv_b, "cycle_A": cyc_a, "cycle_B": cyc_b, "sem_A": sem_a_term,
                 "sem_B": sem_b_term}
        if use_idt:
            idt_a, idt_b = losses.identity_loss(out_a[n:], real_b), losses.identity_loss(out_b[m:], real_a)
            total = total + cfg.lambda_cycle * cfg.lambda_identity * (idt_a + idt_b)
            terms |= {"idt_A": idt_a, "idt_B": idt_b}
        opt = state.optimizers["G"]
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
    out = {k: float(v.detach()) for k, v in terms.items()} | {"G": float(total.detach())}
    return out, fake_b.detach(), fake_a.detach()


def train_step(state: GanState, batch: Batch, step: int, cfg: SemanticCycleganConfig) -> dict[str, float]:
    real_a, real_b = batch["A"], batch["B"]
    g_terms, fake_b, fake_a = generator_step(state, real_a, real_b, cfg)
    d_terms = discriminator_step(state.nets["D_A"], state.nets["D_B"], state.optimizers["D"],
                                 state.extras["fake_B_pool"], state.extras["fake_A_pool"],  # type: ignore[arg-type]
                                 real_a, real_b, fake_b, fake_a, cfg.loss)
    lr = finish_step(state, cfg.ema_decay)
    return g_terms | d_terms | {"lr": lr}


# ------------------------------------------------------------------------------------------------------- inference

@torch.no_grad()
def translate(nets: Mapping[str, nn.Module], images: Tensor, direction: Direction, cfg: SemanticCycleganConfig
              ) -> dict[str, Tensor]:
    """a2b with G_A, b2a with G_B; any H x W (the U-Net pads to its multiple and crops back)."""
    if direction not in ("a2b", "b2a"):
        raise ValueError(f"direction must be 'a2b' or 'b2a', got {direction!r}")
    net = unwrap(nets["G_A" if direction == "a2b" else "G_B"])
    check_images(images, net.in_channels)
    return {"image": net(images)}


@torch.no_grad()
def evaluate(state: GanState, batches: Iterable[Batch], cfg: SemanticCycleganConfig) -> dict[str, float]:
    """FCN score: mIoU of Sem_B on G_A(a) against A's masks (`fcn_miou`, `fcn_pixel_acc`), and of Sem_A on the real A
    images (`fcn_miou_real`). {} when the batches have no A masks or their classes exceed the segmenter's."""
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
    return {"fcn_miou": miou_from_confusion(fake_cm), "fcn_pixel_acc": pixel_accuracy(fake_cm),
            "fcn_miou_real": miou_from_confusion(real_cm)}



# Whole-run settings: report 001 sec. 2 (GTA5 -> Cityscapes, random horizontal flips, lr 2e-4) with CycleGAN's
# batch 1 and 100 + 100 epoch schedule (the report gives no length); 256 px crops of 286 px images (the report scales
# to 1024 px, beyond one GPU's memory for these nets at batch 1: say --size 1024 to follow it).
RUNS: dict[str, RunPreset] = {
    "default": RunPreset(loop={"batch_size": 1, "epochs": 200}, data={"size": 256, "load_size": 286, "flip": True},
                         epoch_fields={"decay_start": 100, "decay_steps": 100},
                         note="report 001 with CycleGAN's batch 1 and 100 + 100 epochs, 286 -> crop 256, flip"),
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
    presets=PRESETS, runs=RUNS, fit_to_data=fit_patchgan, default_preset="report", dataset="gta2cityscapes",
    description="CycleGAN with U-Net generators, PatchGAN, LSGAN, cycle L1 and the semantic-consistency loss: L2 "
                "between a frozen segmenter's logits of source and translation (needs model.segmenter weights)",
)
