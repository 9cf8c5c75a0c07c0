"""Segmentation networks: a segment family trains one, a translation family may use one frozen for a semantic loss.

`SegNet` wraps one architecture behind one interface: images in [-1, 1], (N, C, H, W) with C = 1 or 3, in; per-pixel
class logits (N, K, H, W) out (`forward`), or the backbone's feature map (`features(x, "backbone")`).

Architectures (`ARCHS`):
- the torchvision segmentation models, built with `weights=None, weights_backbone=None` (nothing is downloaded):
  `deeplabv3_mobilenet_v3_large` (11 M parameters, dilated MobileNetV3 + ASPP: small, CPU-friendly),
  `lraspp_mobilenet_v3_large` (3.2 M), `deeplabv3_resnet50` / `deeplabv3_resnet101` (dilated ResNet + ASPP: the
  torchvision relative of the report's DRN-26, a dilated residual network), `fcn_resnet50` / `fcn_resnet101`.
  Inputs are mapped from [-1, 1] to torchvision's convention ([0, 1], ImageNet mean/std normalisation) inside the
  wrapper, so state dicts of torchvision-trained models (e.g. its COCO weights, given as a file) work as they are.
- `tiny`: an in-house ~50 k-parameter dilated net for tests and CPU smoke runs at 16-64 px (stride-2 stem, three
  dilated 3x3 convs (1, 2, 4), a skip from full resolution, a 1x1 classifier). Batch norm throughout.

Greyscale images are repeated to 3 channels for the torchvision nets; `tiny` is built for the data's channels.
`FrozenSegmenter` holds a network as a fixed function (eval mode, no gradients for its weights) for a loss or a score.
`colorize` draws class maps with a fixed palette (PASCAL VOC's), for translate outputs and sample grids.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, Literal, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

Arch = Literal[
    "tiny",
    "deeplabv3_mobilenet_v3_large",
    "lraspp_mobilenet_v3_large",
    "deeplabv3_resnet50",
    "deeplabv3_resnet101",
    "fcn_resnet50",
    "fcn_resnet101",
]
ARCHS: tuple[str, ...] = (
    "tiny",
    "deeplabv3_mobilenet_v3_large",
    "lraspp_mobilenet_v3_large",
    "deeplabv3_resnet50",
    "deeplabv3_resnet101",
    "fcn_resnet50",
    "fcn_resnet101",
)
Features = Literal["logits", "backbone"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# the output conv of each architecture's head: its weight's first dimension is the number of classes
_CLASSIFIER_KEY = {"tiny": "classifier.weight", "lraspp_mobilenet_v3_large": "classifier.high_classifier.weight"}


def _conv_bn_relu(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class TinySegNet(nn.Module):
    """Full-resolution stem, one stride-2 conv, dilated context (1, 2, 4), upsample + skip, 1x1 classifier."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 32) -> None:
        super().__init__()
        self.stem = _conv_bn_relu(in_channels, width // 2)
        self.down = _conv_bn_relu(width // 2, width, stride=2)
        self.context = nn.Sequential(*(_conv_bn_relu(width, width, dilation=d) for d in (1, 2, 4)))
        self.fuse = _conv_bn_relu(width + width // 2, width)
        self.classifier = nn.Conv2d(width, num_classes, 1)

    def backbone(self, x: Tensor) -> dict[str, Tensor]:
        return {"out": self.context(self.down(self.stem(x)))}

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        skip = self.stem(x)
        ctx = self.context(self.down(skip))
        up = F.interpolate(ctx, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return {"out": self.classifier(self.fuse(torch.cat([up, skip], 1)))}


def _torchvision_net(arch: str, num_classes: int) -> nn.Module:
    from torchvision.models import segmentation

    net: nn.Module = getattr(segmentation, arch)(weights=None, weights_backbone=None, num_classes=num_classes)
    return net


class SegNet(nn.Module):
    """One segmentation architecture: [-1, 1] images in, logits out. `net` holds the architecture's own modules (its
    state-dict keys are the architecture's, prefixed `net.`)."""

    mean: Tensor  # buffers (registered in __init__)
    std: Tensor

    def __init__(self, arch: str, in_channels: int, num_classes: int) -> None:
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"unknown segmentation architecture {arch!r}; choose one of {', '.join(ARCHS)}")
        if num_classes < 1:
            raise ValueError(f"a segmentation network needs at least 1 class, got {num_classes}")
        if in_channels not in (1, 3):
            raise ValueError(f"segmentation networks take 1- or 3-channel images, got {in_channels}")
        self.arch, self.in_channels, self.num_classes = arch, in_channels, num_classes
        self.net = TinySegNet(in_channels, num_classes) if arch == "tiny" else _torchvision_net(arch, num_classes)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def prepare(self, x: Tensor) -> Tensor:
        """[-1, 1] images -> what `net` expects: the data's channels for `tiny`; normalised RGB for torchvision."""
        if self.arch == "tiny":
            if x.shape[1] != self.in_channels:  # 3 -> 1: luminance mean; 1 -> 3: repeat
                x = x.mean(1, keepdim=True) if self.in_channels == 1 else x.expand(-1, 3, -1, -1)
            return x
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return ((x + 1) * 0.5 - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def forward(self, x: Tensor) -> Tensor:
        """(N, K, H, W) class logits at the input's resolution."""
        logits: Tensor = self.net(self.prepare(x))["out"]
        return logits

    def features(self, x: Tensor, kind: Features = "logits") -> Tensor:
        """ "logits": `forward`; "backbone": the backbone's last feature map (LR-ASPP: its high-level branch)."""
        if kind == "logits":
            return self.forward(x)
        # every architecture's `backbone` is a submodule (torch types module attributes as Tensor | Module)
        feats: dict[str, Tensor] = cast(nn.Module, self.net.backbone)(self.prepare(x))
        return feats["out"] if "out" in feats else feats["high"]


def num_classes_of(arch: str, state: Mapping[str, Tensor]) -> int:
    """Classes of a state dict of `arch` (bare architecture keys), read from its classifier's output conv."""
    key = _CLASSIFIER_KEY.get(arch, "classifier.4.weight")
    if key not in state:
        raise ValueError(f"not a {arch} state dict: no {key!r} (keys look like {', '.join(list(state)[:3])})")
    return int(state[key].shape[0])


def segnet_from_state_dict(arch: str, state: Mapping[str, Any], in_channels: int) -> SegNet:
    """A `SegNet` of `arch` with the weights of a plain state dict: a `SegNet`'s own (`net.` keys), the bare
    architecture's (torchvision's), optionally under `module.` (DDP) or inside {"state_dict"/"model": ...}."""
    for wrapper in ("state_dict", "model"):
        if isinstance(state.get(wrapper), Mapping):
            state = state[wrapper]
    sd = {k: v for k, v in state.items() if isinstance(v, Tensor)}
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    if sd and all(k.startswith("net.") for k in sd):
        sd = {k[len("net.") :]: v for k, v in sd.items()}
    sd = {k: v for k, v in sd.items() if not k.startswith("aux_classifier.")}  # we build without the auxiliary head
    if arch == "tiny" and "stem.0.weight" in sd:
        in_channels = int(sd["stem.0.weight"].shape[1])
    net = SegNet(arch, in_channels, num_classes_of(arch, sd))
    try:
        net.net.load_state_dict(sd)
    except RuntimeError as err:
        raise ValueError(
            f"the weights do not fit a {arch} network: {str(err).splitlines()[0][:300]}; "
            "set the architecture they were trained with"
        ) from None
    return net


def weights_digest(net: nn.Module) -> str:
    h = hashlib.sha256()
    for key, t in sorted(net.state_dict().items()):
        h.update(key.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:32]


class FrozenSegmenter:
    """A segmentation network used as a fixed function (a `GanState` extra): eval mode (batch norm uses its running
    statistics), weights without gradients (gradients still flow to its input), moved lazily to the input's device.

    Its state dict is the source and a digest of the weights, not the weights: they come from the family config
    (`segmenter`); restoring a checkpoint refuses a segmenter whose weights changed since (a different objective).
    """

    def __init__(self, net: SegNet, source: str) -> None:
        self.net = net.eval().requires_grad_(False)
        self.source = source
        self.digest = weights_digest(self.net)

    @property
    def num_classes(self) -> int:
        return self.net.num_classes

    def _on(self, x: Tensor) -> SegNet:
        p = next(self.net.parameters())
        if p.device != x.device:
            self.net.to(x.device)
        return self.net

    def features(self, x: Tensor, kind: Features = "logits") -> Tensor:
        return self._on(x).features(x, kind)

    def logits(self, x: Tensor) -> Tensor:
        logits: Tensor = self._on(x)(x)
        return logits

    def state_dict(self) -> dict[str, Any]:
        return {"source": self.source, "digest": self.digest}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("digest") != self.digest:
            raise ValueError(
                f"the segmenter's weights ({self.source}) differ from those the checkpoint was trained "
                f"with ({state.get('source')}): resume with the same model.segmenter"
            )


# --------------------------------------------------------------------------------------------------- mask pictures


def _voc_palette(n: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map (class 0 black, 1 dark red, 2 dark green, ...; 255 the cream 'void' colour)."""
    pal = np.zeros((n, 3), np.uint8)
    for i in range(n):
        c, rgb = i, [0, 0, 0]
        for j in range(8):
            for ch in range(3):
                rgb[ch] |= ((c >> ch) & 1) << (7 - j)
            c >>= 3
        pal[i] = rgb
    return pal


PALETTE = torch.from_numpy(_voc_palette())  # (256, 3) uint8, fixed: the same class has the same colour everywhere


def colorize(mask: Tensor) -> Tensor:
    """(N, H, W) class indices (0..255) -> (N, 3, H, W) float images in [-1, 1] with the fixed palette."""
    idx = mask.long().clamp(0, 255)
    rgb = PALETTE.to(mask.device)[idx]  # (N, H, W, 3)
    return rgb.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
