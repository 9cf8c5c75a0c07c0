"""The ResNet generator of CycleGAN (Zhu et al. 2017, appendix 7.2; after Johnson et al. 2016), laid out exactly like
`ResnetGenerator` / `ResnetBlock` in the official pytorch-CycleGAN-and-pix2pix code (models/networks.py), so that the
state-dict keys of its published checkpoints (`model.1.weight`, `model.10.conv_block.1.weight`, ..., `model.26.weight`
for 9 blocks) load with `load_state_dict(strict=True)`.

Layout of `model` (n = n_blocks, instance norm, no dropout):
  0 ReflectionPad(3)  1 Conv7x7(in->ngf)  2 IN  3 ReLU                                  c7s1-ngf
  4 Conv3x3/2(ngf->2ngf)  5 IN  6 ReLU   7 Conv3x3/2(2ngf->4ngf)  8 IN  9 ReLU          d128, d256
  10 .. 9+n  ResnetBlock(4ngf)                                                          R256 x n
  10+n ConvT3x3/2(4ngf->2ngf)  11+n IN  12+n ReLU  13+n ConvT(2ngf->ngf)  14+n IN  15+n ReLU   u128, u64
  16+n ReflectionPad(3)  17+n Conv7x7(ngf->out)  18+n Tanh                              c7s1-3
Instance norm is affine=False and keeps no running statistics (official `get_norm_layer('instance')`), so it has no
state-dict entries; every conv before an instance norm has a bias (official `use_bias = norm is InstanceNorm2d`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from torch import Tensor, nn


class ResnetBlock(nn.Module):
    """x + [pad, conv3x3, IN, ReLU, (dropout), pad, conv3x3, IN](x); `conv_block.1` / `conv_block.5` hold the weights
    (`conv_block.6` with dropout). U-GAT-IT uses the same block with bias-free convs (UGATIT-pytorch networks.py)."""

    def __init__(self, dim: int, *, bias: bool = True, dropout: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, 3, bias=bias),
            nn.InstanceNorm2d(dim),
            nn.ReLU(True),
        ]
        if dropout:
            layers.append(nn.Dropout(0.5))
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=bias), nn.InstanceNorm2d(dim)]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        residual: Tensor = self.conv_block(x)
        return x + residual


class ResnetGenerator(nn.Module):
    """c7s1-ngf, d(2ngf), d(4ngf), n x R(4ngf), u(2ngf), u(ngf), c7s1-out, tanh. Any H, W that are multiples of 4
    come back at the same size (two stride-2 convs, two transposed convs with output_padding 1)."""

    def __init__(
        self, in_channels: int = 3, out_channels: int = 3, ngf: int = 64, n_blocks: int = 9, dropout: bool = False
    ) -> None:
        super().__init__()
        if n_blocks < 0:
            raise ValueError(f"n_blocks must be >= 0, got {n_blocks}")
        self.in_channels = in_channels
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(in_channels, ngf, 7),
            nn.InstanceNorm2d(ngf),
            nn.ReLU(True),
        ]
        for i in range(2):  # two stride-2 downsamplings
            c = ngf * 2**i
            layers += [nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), nn.InstanceNorm2d(2 * c), nn.ReLU(True)]
        layers += [ResnetBlock(4 * ngf, bias=True, dropout=dropout) for _ in range(n_blocks)]
        for i in range(2):  # two fractionally strided convs, stride 1/2
            c = ngf * 2 ** (2 - i)
            layers += [
                nn.ConvTranspose2d(c, c // 2, 3, stride=2, padding=1, output_padding=1),
                nn.InstanceNorm2d(c // 2),
                nn.ReLU(True),
            ]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_channels, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        y: Tensor = self.model(x)
        return y


def default_n_blocks(height: int, width: int) -> int:
    """Zhu et al. 2017, appendix 7.2: 6 residual blocks for 128x128 training images, 9 for 256x256 and larger."""
    return 9 if min(height, width) >= 256 else 6


# --- official checkpoints -------------------------------------------------------------------------------------------

_RUNNING_STATS = ("running_mean", "running_var", "num_batches_tracked")


def strip_module_prefix(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Drop a leading `module.` (a net saved while wrapped in DataParallel / DDP)."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module.") :]: v for k, v in state.items()}
    return dict(state)


def strip_instance_norm_stats(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Remove the InstanceNorm running-stat entries that checkpoints saved before PyTorch 0.4 carry.

    The official loader does the same (`__patch_instance_norm_state_dict` in models/base_model.py). An entry is
    dropped when it is a running statistic of a norm layer with no affine weight, which in these networks is exactly an
    InstanceNorm2d(affine=False); BatchNorm statistics (which come with `.weight`) are kept.
    """
    out = strip_module_prefix(state)
    for key in list(out):
        prefix, _, leaf = key.rpartition(".")
        if leaf in _RUNNING_STATS and f"{prefix}.weight" not in out:
            del out[key]
    return out


@dataclass(frozen=True)
class ResnetArch:
    in_channels: int
    out_channels: int
    ngf: int
    n_blocks: int
    dropout: bool


def resnet_arch_from_state_dict(state: Mapping[str, Tensor]) -> ResnetArch:
    """Read ngf, n_blocks, channels and dropout from an official `ResnetGenerator` state dict (e.g. a published
    `latest_net_G_A.pth`), so a matching `ResnetGenerator(**asdict(arch))` loads it strictly."""
    sd = strip_instance_norm_stats(state)
    try:
        first = sd["model.1.weight"]
    except KeyError:
        raise ValueError(
            "not an official ResnetGenerator state dict: no 'model.1.weight' "
            "(expected keys like model.1.weight, model.10.conv_block.1.weight)"
        ) from None
    blocks = {int(m.group(1)) for k in sd if (m := re.match(r"model\.(\d+)\.conv_block\.", k))}
    n_blocks = len(blocks)
    if blocks and blocks != set(range(10, 10 + n_blocks)):
        raise ValueError(
            f"residual blocks at unexpected positions {sorted(blocks)}; expected model.10 .. model.{9 + n_blocks}"
        )
    last = sd.get(f"model.{17 + n_blocks}.weight")
    if last is None:
        raise ValueError(f"missing final conv 'model.{17 + n_blocks}.weight' for {n_blocks} residual blocks")
    dropout = any(".conv_block.6." in k for k in sd)
    return ResnetArch(
        in_channels=int(first.shape[1]),
        out_channels=int(last.shape[0]),
        ngf=int(first.shape[0]),
        n_blocks=n_blocks,
        dropout=dropout,
    )
