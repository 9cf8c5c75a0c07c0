"""The segmentation network of the semantic-consistency report (001, sec. 2.2.2 / 2.3), trained on a dataset's masks so
that `semantic-cyclegan` can use it, frozen, for its semantic loss and FCN score.

The report uses DRN-26 (a dilated residual network) trained with learning rate 1e-3 and batch size 2; DRN is not in
torchvision, so the architecture is one of torchvision's segmentation models (built untrained, nothing downloaded;
`arch`, default the small dilated `deeplabv3_mobilenet_v3_large`; the `report` preset takes `deeplabv3_resnet50`, the
dilated-ResNet relative of DRN) or the in-house `tiny` net for tests (see `gansvc.nn.segnet`). Batch size is the
loop's `--batch-size` (report: 2).

Loss: per-pixel cross-entropy over the mask classes, pixels marked 255 ignored. Optimizer: Adam (the report names no
optimizer; from scratch Adam at the report's 1e-3 converges without a schedule) or SGD with momentum 0.9.

Data: any dataset with masks (`gansvc.data`): single-domain batches train on ("image", "mask"); unpaired ones on every
domain that has masks ("A" with "A_mask", "B" with "B_mask", concatenated). `translate` segments images (either
direction) and returns the coloured mask and the class map; `evaluate` gives mIoU and pixel accuracy on held-out masks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Annotated, Literal, cast

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from gansvc.data.spec import IGNORE_INDEX, DataSpec, mask_key
from gansvc.families.base import Batch, Direction, FamilyConfig, FamilySpec, GanState, RunPreset
from gansvc.nn.ema import ema_copy, ema_update
from gansvc.nn.i2i_util import check_images
from gansvc.nn.segnet import Arch, SegNet, colorize
from gansvc.nn.wrappers import unwrap

Beta = Annotated[float, Field(ge=0.0, lt=1.0)]
STREAMS = ("image", "A", "B")


class SegmenterConfig(FamilyConfig):
    arch: Arch = "deeplabv3_mobilenet_v3_large"  # gansvc.nn.segnet.ARCHS
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0.0, le=10.0)  # report 001 sec. 2.3: "learning rate ... set to 1e-3"
    betas: tuple[Beta, Beta] = (0.9, 0.999)  # Adam (PyTorch defaults)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)  # SGD
    weight_decay: float = Field(0.0, ge=0.0, le=1.0)


PRESETS: dict[str, dict[str, object]] = {
    # DRN-26 is a dilated residual network: torchvision's closest is DeepLabV3 on a dilated ResNet-50
    "report": {"arch": "deeplabv3_resnet50"},
    # a ~50 k-parameter net for tests and CPU smoke runs (16-64 px)
    "smoke": {"arch": "tiny"},
}


def build(cfg: SegmenterConfig, data: DataSpec) -> GanState:
    if data.num_classes < 1:
        raise ValueError(
            "segmenter trains on segmentation masks and this dataset has none: put one with masks "
            "(train/x.png + train_masks/x.png, or trainA_masks/ for unpaired data; see `python -m "
            "gansvc.data --help`), or write a synthetic one: `python -m gansvc.data synth stripes URI "
            "--masks` (unpaired) or `python -m gansvc.data synth shapes-seg URI` (single domain)"
        )
    net = SegNet(cfg.arch, data.channels, data.num_classes)
    params = net.parameters()
    if cfg.optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return GanState(
        nets={"S": net}, optimizers={"S": opt}, ema={"S": ema_copy(net)} if cfg.ema else {}, inference=("S",)
    )


def masked_pairs(batch: Batch) -> list[tuple[Tensor, Tensor]]:
    """(images, masks) of every stream of the batch that has masks."""
    return [(batch[k], batch[mask_key(k)]) for k in STREAMS if k in batch and mask_key(k) in batch]


def train_step(state: GanState, batch: Batch, step: int, cfg: SegmenterConfig) -> dict[str, float]:
    pairs = masked_pairs(batch)
    if not pairs:
        raise ValueError(
            f"segmenter needs masks in its batches, got keys {sorted(batch)}: train it on a dataset with masks"
        )
    images = torch.cat([p[0] for p in pairs])
    masks = torch.cat([p[1] for p in pairs])
    if images.shape[0] < 2 and cfg.arch.startswith("deeplabv3"):
        raise ValueError(
            f"{cfg.arch} needs at least 2 images per worker and step (its ASPP pooling branch batch-"
            "normalises a 1x1 map): raise --batch-size to 2 (the report's) or use fewer workers"
        )
    logits = state.nets["S"](images)
    loss = F.cross_entropy(logits, masks, ignore_index=IGNORE_INDEX)
    opt = state.optimizers["S"]
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    for name, ema in state.ema.items():
        ema_update(ema, state.nets[name], cfg.ema_decay)
    with torch.no_grad():
        valid = masks != IGNORE_INDEX
        acc = (logits.argmax(1) == masks)[valid].float().mean() if bool(valid.any()) else loss.new_zeros(())
    return {"loss_seg": float(loss.detach()), "acc": float(acc)}


@torch.no_grad()
def translate(
    nets: Mapping[str, nn.Module], images: Tensor, direction: Direction, cfg: SegmenterConfig
) -> dict[str, Tensor]:
    """Segment `images` (N, C, H, W) in [-1, 1] (either direction: one network for every domain)."""
    if direction not in ("a2b", "b2a"):
        raise ValueError(f"direction must be 'a2b' or 'b2a', got {direction!r}")
    net = cast(SegNet, unwrap(nets["S"]))  # build makes S a SegNet; the hook's Mapping holds nets as nn.Module
    check_images(images, net.in_channels)
    mask = net(images).argmax(1)
    return {"image": colorize(mask).to(images.dtype), "mask": mask}


@torch.no_grad()
def evaluate(state: GanState, batches: Iterable[Batch], cfg: SegmenterConfig) -> dict[str, float]:
    """mIoU and pixel accuracy over every masked stream of the held-out batches ({} without masks)."""
    from gansvc.metrics.segmentation import confusion_matrix, miou_from_confusion, pixel_accuracy

    net = cast(SegNet, state.inference_nets()["S"])  # build makes S a SegNet; GanState holds nets as nn.Module
    cm: Tensor | None = None
    for batch in batches:
        for images, masks in masked_pairs(batch):
            part = confusion_matrix(net(images).argmax(1), masks, net.num_classes).cpu()
            cm = part if cm is None else cm + part
    if cm is None or int(cm.sum()) == 0:
        return {}
    return {"miou": miou_from_confusion(cm), "pixel_acc": pixel_accuracy(cm)}


# Whole-run settings: report 001 sec. 2.3 trains the segmentation network (DRN-26) on Cityscapes with lr 1e-3; it gives
# no batch or length: batch 8 and 100 epochs of 256 px crops here, flip as its augmentation (sec. 2.1).
RUNS: dict[str, RunPreset] = {
    "report": RunPreset(
        loop={"batch_size": 8, "epochs": 100},
        data={"size": 256, "load_size": 286, "flip": True},
        note="report 001 sec. 2.3 lr 1e-3; batch 8, 100 epochs (the report gives none)",
    ),
}


SPEC: FamilySpec[SegmenterConfig] = FamilySpec(
    name="segmenter",
    task="segment",
    config=SegmenterConfig,
    build=build,
    train_step=train_step,
    translate=translate,
    evaluate=evaluate,
    presets=PRESETS,
    runs=RUNS,
    default_preset="report",
    dataset="gta2cityscapes",
    description="semantic segmentation network (torchvision DeepLabV3 / LR-ASPP / FCN or a tiny net), cross-entropy "
    "on dataset masks (255 ignored); the frozen network of semantic-cyclegan's semantic loss",
)
