"""Networks of the attention model of the CycleGAN optimisation report (report 000, sec. 3.2, after U-GAT-IT,
Kim et al. 2019), laid out like the public UGATIT-pytorch `networks.py` (`ResnetGenerator`, `ResnetAdaILNBlock`,
`adaILN`, `ILN`, `Discriminator`) so that its checkpoints (`genA2B`, `genB2A`, `disGA`, ... entries) load strictly.

Generator (official attribute names, which are the state-dict keys):
  DownBlock  pad3-conv7(in->ngf)-IN-ReLU, 2 x [pad1-conv3/2-IN-ReLU], n_blocks x ResnetBlock(4ngf)   (bias-free convs)
  gap_fc, gmp_fc  Linear(4ngf -> 1) on global average / max pooled features: the auxiliary classifier eta_s; its
                  weights also re-weight the feature channels (class activation map, Zhou et al. 2016)
  conv1x1 + relu  fuses the two attention maps (2*4ngf -> 4ngf); the channel sum is the heatmap
  FC, gamma, beta MLP giving AdaLIN's gamma and beta; "light" pools the features first, "full" flattens them
                  (full: first Linear has (H/4)(W/4)4ngf inputs)
  UpBlock1_1..n   ResnetAdaILNBlock(4ngf): AdaLIN(a, gamma, beta) = gamma (rho a_I + (1 - rho) a_L) + beta (report eq.)
  UpBlock2        2 x [nearest up x2, pad1, conv3, ILN, ReLU], pad3, conv7(ngf->out), tanh
Discriminator: pad-SNconv4/2-LReLU(0.2) x (n_layers - 2), one stride-1 layer, then its own CAM (gap_fc, gmp_fc with
spectral norm, conv1x1, LeakyReLU) and a final SN conv4 to a 1-channel patch map. Spectral norm (Miyato et al. 2018) is
`torch.nn.utils.spectral_norm`, whose keys (`weight_orig`, `weight_u`, `weight_v`) are those of the official files.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import spectral_norm

from gansvc.nn.resnet import ResnetBlock, strip_module_prefix


def _instance_layer_norm(x: Tensor, rho: Tensor, eps: float) -> Tensor:
    """rho * a_I + (1 - rho) * a_L with a_I normalised per (sample, channel) and a_L per sample (report sec. 3.2.2).
    Unbiased variances, as `torch.var` in UGATIT-pytorch (its later networks.py; earlier revisions nested torch.var
    over one dim at a time, which is not the variance)."""
    in_var, in_mean = torch.var_mean(x, dim=(2, 3), keepdim=True)
    ln_var, ln_mean = torch.var_mean(x, dim=(1, 2, 3), keepdim=True)
    a_i = (x - in_mean) / torch.sqrt(in_var + eps)
    a_l = (x - ln_mean) / torch.sqrt(ln_var + eps)
    return rho * a_i + (1 - rho) * a_l


class AdaLIN(nn.Module):
    """Adaptive layer-instance norm; gamma, beta (N, C) come from the generator's MLP. rho starts at 0.9 (UGATIT-pytorch
    `adaILN`) and is clipped to [0, 1] after every optimizer step (`clip_rho_`; report: rho <- clip(rho - tau d_rho)).
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.rho = nn.Parameter(torch.full((1, num_features, 1, 1), 0.9))

    def forward(self, x: Tensor, gamma: Tensor, beta: Tensor) -> Tensor:
        return _instance_layer_norm(x, self.rho, self.eps) * gamma[:, :, None, None] + beta[:, :, None, None]


class LIN(nn.Module):
    """Layer-instance norm of the upsampling path with learned gamma, beta (UGATIT-pytorch `ILN`: rho 0, gamma 1,
    beta 0 at init)."""

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.rho = nn.Parameter(torch.zeros(1, num_features, 1, 1))
        self.gamma = nn.Parameter(torch.ones(1, num_features, 1, 1))
        self.beta = nn.Parameter(torch.zeros(1, num_features, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return _instance_layer_norm(x, self.rho, self.eps) * self.gamma + self.beta


class ResnetAdaLINBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.pad1 = nn.ReflectionPad2d(1)
        self.conv1 = nn.Conv2d(dim, dim, 3, bias=False)
        self.norm1 = AdaLIN(dim)
        self.relu1 = nn.ReLU(True)
        self.pad2 = nn.ReflectionPad2d(1)
        self.conv2 = nn.Conv2d(dim, dim, 3, bias=False)
        self.norm2 = AdaLIN(dim)

    def forward(self, x: Tensor, gamma: Tensor, beta: Tensor) -> Tensor:
        out = self.relu1(self.norm1(self.conv1(self.pad1(x)), gamma, beta))
        residual: Tensor = self.norm2(self.conv2(self.pad2(out)), gamma, beta)
        return x + residual


def _cam(x: Tensor, gap_fc: nn.Linear, gmp_fc: nn.Linear, gap_w: Tensor, gmp_w: Tensor) -> tuple[Tensor, Tensor]:
    """Auxiliary classifier on average- and max-pooled features; its weights re-weight the channels (CAM).
    Returns the logits (N, 2) and the two attended feature maps concatenated (N, 2C, h, w)."""
    gap_logit = gap_fc(F.adaptive_avg_pool2d(x, 1).flatten(1))
    gmp_logit = gmp_fc(F.adaptive_max_pool2d(x, 1).flatten(1))
    attended = torch.cat([x * gap_w[0][None, :, None, None], x * gmp_w[0][None, :, None, None]], dim=1)
    return torch.cat([gap_logit, gmp_logit], dim=1), attended


class UgatitGenerator(nn.Module):
    """forward(x) -> (image in [-1, 1], CAM logits (N, 2), heatmap (N, 1, H/4, W/4), not normalised)."""

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        ngf: int = 64,
        n_blocks: int = 4,
        img_size: int | tuple[int, int] = 256,
        light: bool = True,
    ) -> None:
        super().__init__()
        h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
        if h % 4 or w % 4:
            raise ValueError(f"U-GAT-IT image size must be a multiple of 4, got {h}x{w}")
        self.in_channels, self.n_blocks, self.light = in_channels, n_blocks, light
        self.feat_size = (h // 4, w // 4)  # size the full variant's first FC layer was built for
        dim = 4 * ngf
        down: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(in_channels, ngf, 7, bias=False),
            nn.InstanceNorm2d(ngf),
            nn.ReLU(True),
        ]
        for i in range(2):
            c = ngf * 2**i
            down += [
                nn.ReflectionPad2d(1),
                nn.Conv2d(c, 2 * c, 3, stride=2, bias=False),
                nn.InstanceNorm2d(2 * c),
                nn.ReLU(True),
            ]
        down += [ResnetBlock(dim, bias=False) for _ in range(n_blocks)]
        self.gap_fc = nn.Linear(dim, 1, bias=False)
        self.gmp_fc = nn.Linear(dim, 1, bias=False)
        self.conv1x1 = nn.Conv2d(2 * dim, dim, 1)
        self.relu = nn.ReLU(True)
        fc_in = dim if light else self.feat_size[0] * self.feat_size[1] * dim
        self.FC = nn.Sequential(
            nn.Linear(fc_in, dim, bias=False), nn.ReLU(True), nn.Linear(dim, dim, bias=False), nn.ReLU(True)
        )
        self.gamma = nn.Linear(dim, dim, bias=False)
        self.beta = nn.Linear(dim, dim, bias=False)
        for i in range(n_blocks):
            setattr(self, f"UpBlock1_{i + 1}", ResnetAdaLINBlock(dim))
        up: list[nn.Module] = []
        for i in range(2):
            c = ngf * 2 ** (2 - i)
            up += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.ReflectionPad2d(1),
                nn.Conv2d(c, c // 2, 3, bias=False),
                LIN(c // 2),
                nn.ReLU(True),
            ]
        up += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_channels, 7, bias=False), nn.Tanh()]
        self.DownBlock = nn.Sequential(*down)
        self.UpBlock2 = nn.Sequential(*up)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = self.DownBlock(x)
        cam_logit, attended = _cam(x, self.gap_fc, self.gmp_fc, self.gap_fc.weight, self.gmp_fc.weight)
        x = self.relu(self.conv1x1(attended))
        heatmap = x.sum(dim=1, keepdim=True)
        if self.light:
            style = F.adaptive_avg_pool2d(x, 1).flatten(1)
        else:
            # The full MLP was sized for the training resolution; at another size the attended features are resized
            # to it for the gamma/beta path only (the image path keeps the input resolution).
            feats = (
                x
                if tuple(x.shape[-2:]) == self.feat_size
                else F.interpolate(x, size=self.feat_size, mode="bilinear", align_corners=False)
            )
            style = feats.flatten(1)
        style = self.FC(style)
        gamma, beta = self.gamma(style), self.beta(style)
        for i in range(self.n_blocks):
            x = getattr(self, f"UpBlock1_{i + 1}")(x, gamma, beta)
        return self.UpBlock2(x), cam_logit, heatmap


class UgatitDiscriminator(nn.Module):
    """forward(x) -> (patch logits (N, 1, h, w), CAM logits (N, 2), heatmap). n_layers 7 is the global D (report sec.
    4.2: receptive field 190), 5 the local one (46); both as `Discriminator(n_layers=...)` in UGATIT-pytorch."""

    def __init__(self, in_channels: int = 3, ndf: int = 64, n_layers: int = 5) -> None:
        super().__init__()
        if n_layers < 3:
            raise ValueError(f"U-GAT-IT discriminator needs n_layers >= 3, got {n_layers}")
        self.n_layers = n_layers
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(1),
            spectral_norm(nn.Conv2d(in_channels, ndf, 4, stride=2)),
            nn.LeakyReLU(0.2, True),
        ]
        for i in range(1, n_layers - 2):
            c = ndf * 2 ** (i - 1)
            layers += [nn.ReflectionPad2d(1), spectral_norm(nn.Conv2d(c, 2 * c, 4, stride=2)), nn.LeakyReLU(0.2, True)]
        c = ndf * 2 ** (n_layers - 3)
        layers += [nn.ReflectionPad2d(1), spectral_norm(nn.Conv2d(c, 2 * c, 4, stride=1)), nn.LeakyReLU(0.2, True)]
        dim = 2 * c
        self.gap_fc = spectral_norm(nn.Linear(dim, 1, bias=False))
        self.gmp_fc = spectral_norm(nn.Linear(dim, 1, bias=False))
        self.conv1x1 = nn.Conv2d(2 * dim, dim, 1)
        self.leaky_relu = nn.LeakyReLU(0.2, True)
        self.pad = nn.ReflectionPad2d(1)
        self.conv = spectral_norm(nn.Conv2d(dim, 1, 4, bias=False))
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = self.model(x)
        # UGATIT-pytorch re-weights the channels with `list(fc.parameters())[0]`, i.e. the spectral-norm module's raw
        # `weight_orig`, not the normalised weight; kept for checkpoint fidelity.
        # spectral_norm registers `weight_orig` as a Parameter; torch types module attributes as Tensor | Module
        gap_w, gmp_w = cast(Tensor, self.gap_fc.weight_orig), cast(Tensor, self.gmp_fc.weight_orig)
        cam_logit, attended = _cam(x, self.gap_fc, self.gmp_fc, gap_w, gmp_w)
        x = self.leaky_relu(self.conv1x1(attended))
        heatmap = x.sum(dim=1, keepdim=True)
        return self.conv(self.pad(x)), cam_logit, heatmap


def _d_side(side: int, n_layers: int) -> int | None:
    """Side of the patch map, None when some reflection pad of 1 meets a feature map under 2 pixels (PyTorch's
    reflection pad needs pad < size)."""
    s = side
    for stride in [2] * (n_layers - 2) + [1, 1]:  # n_layers - 2 stride-2 convs, one stride-1 conv, the final conv
        if s < 2:
            return None
        s = (s + 2 - 4) // stride + 1
    return s if s >= 1 else None


def ugatit_d_fits(side: int, n_layers: int) -> bool:
    return _d_side(side, n_layers) is not None


def ugatit_d_min_side(n_layers: int) -> int:
    """The smallest image side an `n_layers` discriminator accepts: 6 px for 3 layers, doubling per layer (96 px for
    the report's 7-layer global D, 24 px for its 5-layer local D)."""
    s = 1
    while not ugatit_d_fits(s, n_layers):
        s += 1
    return s


def ugatit_d_output_size(side: int, n_layers: int) -> int:
    """Side of the discriminator's patch map for an input side; raises when the input is too small for `n_layers`
    (each 4x4 conv follows a reflection pad of 1, which needs a feature map of at least 2 pixels)."""
    out = _d_side(side, n_layers)
    if out is None:
        raise ValueError(
            f"images of side {side} are too small for a {n_layers}-layer U-GAT-IT discriminator (it "
            f"needs >= {ugatit_d_min_side(n_layers)} px); lower n_dis_global / n_dis_local, leave them "
            "unset (auto: the deepest that fits) or use larger images"
        )
    return out


@torch.no_grad()
def clip_rho_(net: nn.Module) -> None:
    """Clamp every AdaLIN / LIN rho into [0, 1] (UGATIT-pytorch `RhoClipper(0, 1)`, applied after each G step)."""
    for m in net.modules():
        if isinstance(m, (AdaLIN, LIN)):
            m.rho.clamp_(0.0, 1.0)


# --- official checkpoints -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UgatitArch:
    in_channels: int
    out_channels: int
    ngf: int
    n_blocks: int
    light: bool
    img_size: int | None  # None for light checkpoints, whose weights do not depend on the image size
    n_dis_global: int | None
    n_dis_local: int | None


def _n_dis(state: Mapping[str, Tensor]) -> int:
    convs = [k for k in state if re.fullmatch(r"model\.\d+\.weight_orig", k)]
    if not convs:
        raise ValueError("not a UGATIT-pytorch Discriminator state dict: no 'model.<i>.weight_orig' keys")
    return len(convs) + 1  # n_layers - 1 convs in `model`, plus the final `conv`


@dataclass(frozen=True)
class UgatitDArch:
    in_channels: int
    ndf: int
    n_layers: int


def ugatit_d_arch_from_state_dict(state: Mapping[str, Tensor]) -> UgatitDArch:
    """Channels, width and depth of one UGATIT-pytorch `Discriminator` state dict, read from its keys and shapes alone
    (no image size is involved: the depth is the number of SN convs in `model` plus the final `conv`)."""
    sd = strip_module_prefix(state)
    n_layers = _n_dis(sd)
    first = sd.get("model.1.weight_orig")
    if first is None or first.dim() != 4:
        raise ValueError("not a UGATIT-pytorch Discriminator state dict: no 4-d 'model.1.weight_orig' (its first conv)")
    return UgatitDArch(in_channels=int(first.shape[1]), ndf=int(first.shape[0]), n_layers=n_layers)


def ugatit_arch_from_state_dict(params: Mapping[str, Mapping[str, Tensor]] | Mapping[str, Tensor]) -> UgatitArch:
    """Architecture of a UGATIT-pytorch checkpoint: either its whole `params` dict ({'genA2B': ..., 'disGA': ...},
    as `UGATIT.save` writes it) or one generator state dict. Light vs full comes from `FC.0.weight`'s input size
    (4ngf for light, (s/4)^2 4ngf for full, which also gives the image side s)."""
    gen = params.get("genA2B", params)
    if not isinstance(gen, Mapping) or "FC.0.weight" not in gen:
        raise ValueError(
            "not a UGATIT-pytorch generator state dict: no 'FC.0.weight' (expected keys like "
            "DownBlock.1.weight, FC.0.weight, UpBlock1_1.norm1.rho)"
        )
    # holding FC.0.weight, `gen` is one generator state dict (mypy cannot tell the two Mapping forms of `params` apart)
    gen = strip_module_prefix(cast("Mapping[str, Tensor]", gen))
    first, fc0 = gen["DownBlock.1.weight"], gen["FC.0.weight"]
    ngf, dim = int(first.shape[0]), int(fc0.shape[0])
    n_blocks = len({int(m.group(1)) for k in gen if (m := re.match(r"UpBlock1_(\d+)\.", k))})
    fc_in = int(fc0.shape[1])
    light = fc_in == dim
    img_size = None
    if not light:
        cells = fc_in // dim
        side = round(cells**0.5)
        if side * side * dim != fc_in:
            raise ValueError(f"FC.0.weight has {fc_in} inputs: not (s/4)^2 * {dim} for a square image side s")
        img_size = 4 * side
    out = gen[max((k for k in gen if re.fullmatch(r"UpBlock2\.\d+\.weight", k)), key=lambda k: int(k.split(".")[1]))]
    # with discriminators in it, `params` is the whole {name: state dict} form
    nets = cast("Mapping[str, Mapping[str, Tensor]]", params)
    n_global = _n_dis(strip_module_prefix(nets["disGA"])) if "disGA" in params else None
    n_local = _n_dis(strip_module_prefix(nets["disLA"])) if "disLA" in params else None
    return UgatitArch(
        in_channels=int(first.shape[1]),
        out_channels=int(out.shape[0]),
        ngf=ngf,
        n_blocks=n_blocks,
        light=light,
        img_size=img_size,
        n_dis_global=n_global,
        n_dis_local=n_local,
    )
