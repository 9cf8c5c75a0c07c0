"""CycleGAN (Zhu et al. 2017, "Unpaired Image-to-Image Translation using Cycle-Consistent Adversarial Networks"), the
baseline of the CycleGAN optimisation report (000, sec. 3.1).

Nets follow the official pytorch-CycleGAN-and-pix2pix naming: G_A maps A -> B, G_B maps B -> A, D_A judges domain B
(real B vs G_A(A)), D_B judges domain A. Objective (report eqs. in 3.1, Zhu et al. eqs. 1-3, LSGAN form of sec. 4):
  G:  (D_A(G_A(a)) - 1)^2 + (D_B(G_B(b)) - 1)^2 + lambda_cycle (|G_B(G_A(a)) - a|_1 + |G_A(G_B(b)) - b|_1)
      + lambda_identity lambda_cycle (|G_A(b) - b|_1 + |G_B(a) - a|_1)
  D:  1/2 [(D(real) - 1)^2 + D(fake)^2] per discriminator, fakes drawn from a 50-image history pool.
Training order per step is the official `optimize_parameters`: G update (Ds frozen), then D update on detached fakes.
The build, both steps and the shared config fields are the cycle base's (`gansvc.families.cycle`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, cast

import torch
from pydantic import BaseModel, Field
from torch import Tensor, nn

from gansvc.data.spec import DataSpec
from gansvc.families.base import (
    Batch,
    Direction,
    FamilyConfig,
    FamilySpec,
    GanState,
    Imported,
    Importer,
    ImportRequest,
    RunPreset,
)
from gansvc.families.cycle import CycleObjective, CycleWidths, PatchGanFields, build_cycle_state, check_unpaired
from gansvc.families.cycle import train_step as cycle_train_step
from gansvc.families.fit import fit_patchgan, patchgan_layers
from gansvc.families.importing import as_state_dict, build_imported, load_strict, read_torch
from gansvc.families.model_file import CheckpointError
from gansvc.nn.i2i_util import check_images, crop_to, pad_to_multiple
from gansvc.nn.resnet import (
    ResnetArch,
    ResnetGenerator,
    default_n_blocks,
    resnet_arch_from_state_dict,
    strip_instance_norm_stats,
    strip_module_prefix,
)
from gansvc.nn.wrappers import unwrap


class ResnetDepth(BaseModel):
    n_blocks: int | None = Field(None, ge=0, le=64)  # residual blocks; None: 9 at >= 256 px, 6 below (appendix 7.2)


class CycleganConfig(CycleObjective, PatchGanFields, ResnetDepth, CycleWidths, FamilyConfig):
    """Fields: `gansvc.families.cycle` (widths, n_blocks here, PatchGAN depth / dropout / init, objective and
    optimisation: Zhu et al. 2017 and the official defaults)."""


PRESETS: dict[str, dict[str, object]] = {
    # report 000 trains at 256 x 256 (sec. 4.1), where the official code uses 9 residual blocks
    "report": {"n_blocks": 9},
    # tiny nets for tests and CPU smoke runs (16-64 px images)
    "smoke": {"ngf": 8, "ndf": 8, "n_blocks": 2, "n_layers_d": 2, "pool_size": 8},
}


def build(cfg: CycleganConfig, data: DataSpec) -> GanState:
    check_unpaired(data, "cyclegan")
    h, w, c = data.height, data.width, data.channels
    if h % 4 or w % 4:
        raise ValueError(
            f"cyclegan needs image sides that are multiples of 4 (two stride-2 layers), got {h}x{w}: "
            "set data.size accordingly"
        )
    n_layers_d = patchgan_layers(cfg.n_layers_d, h, w)  # auto resolved; a set depth that does not fit: ValueError
    n_blocks = cfg.n_blocks if cfg.n_blocks is not None else default_n_blocks(h, w)
    return build_cycle_state(cfg, data, lambda: ResnetGenerator(c, c, cfg.ngf, n_blocks, cfg.dropout), n_layers_d)


def train_step(state: GanState, batch: Batch, step: int, cfg: CycleganConfig) -> dict[str, float]:
    return cycle_train_step(state, batch, cfg)


@torch.no_grad()
def translate(
    nets: Mapping[str, nn.Module], images: Tensor, direction: Direction, cfg: CycleganConfig
) -> dict[str, Tensor]:
    """a2b with G_A, b2a with G_B. Any H x W: the batch is reflection-padded to multiples of 4 and cropped back."""
    if direction not in ("a2b", "b2a"):
        raise ValueError(f"direction must be 'a2b' or 'b2a', got {direction!r}")
    # build makes G_A / G_B ResnetGenerators; the hook's Mapping holds any family's nets, as nn.Module
    net = cast(ResnetGenerator, unwrap(nets["G_A" if direction == "a2b" else "G_B"]))
    check_images(images, net.in_channels)
    padded, size = pad_to_multiple(images, 4)
    return {"image": crop_to(net(padded), size)}


# ------------------------------------------------------------------------------------------------------ import
# `cyclegan-official`: junyanz/pytorch-CycleGAN-and-pix2pix saves each net as a plain state dict
# (`BaseModel.save_networks` -> `latest_net_G_A.pth`, `latest_net_G_B.pth`); G_A maps A -> B, G_B maps B -> A. Files
# written before PyTorch 0.4 carry InstanceNorm running statistics, which its loader drops
# (`__patch_instance_norm_state_dict`); so do we. DataParallel saves may prefix keys with `module.`. Inference needs
# only generators. A CycleGAN imported without its G_B translates a2b only: the entry and the model file say
# `directions: ["a2b"]` and the translate CLI refuses b2a (the stored G_B is all zeros, a grey image, never a
# plausible translation).

OFFICIAL_SIZE = 256  # official default --load_size/--crop_size; any multiple of 4 works at inference
OFFICIAL_WHAT = "a cyclegan-official generator file (a ResnetGenerator state dict such as latest_net_G_A.pth)"


def _official_generator(uri: str, describe: Callable[[Any], str]) -> tuple[dict[str, Tensor], ResnetArch]:
    sd = strip_instance_norm_stats(as_state_dict(read_torch(uri, OFFICIAL_WHAT), uri, OFFICIAL_WHAT, describe))
    try:
        arch = resnet_arch_from_state_dict(sd)
    except ValueError as err:
        raise CheckpointError(f"{uri} is not {OFFICIAL_WHAT}: {err}; found {describe(sd)}") from None
    if arch.in_channels != arch.out_channels:
        raise CheckpointError(
            f"{uri}: the generator maps {arch.in_channels} to {arch.out_channels} channels; the "
            "cyclegan family translates between domains with the same number of channels"
        )
    return sd, arch


def import_official(req: ImportRequest) -> Imported:
    """G_A from `req.file` and, when given, G_B from `req.b2a` (else G_B is zeros and only a2b is offered)."""
    file, b2a = req.file, req.b2a
    sd_a, arch = _official_generator(file, req.describe)
    sd_b = None
    if b2a is not None:
        sd_b, arch_b = _official_generator(b2a, req.describe)
        if arch_b != arch:
            raise CheckpointError(
                f"{file} and {b2a} have different architectures ({arch} vs {arch_b}): give the G_A "
                "and G_B files of one training run"
            )
    data = DataSpec(layout="unpaired", height=OFFICIAL_SIZE, width=OFFICIAL_SIZE, channels=arch.in_channels)
    overrides = {"ngf": arch.ngf, "n_blocks": arch.n_blocks, "dropout": arch.dropout}
    cfg, state = build_imported(req.spec, overrides, data, file)
    load_strict(state.nets["G_A"], sd_a, "G_A", file, "the official ResnetGenerator layout")
    if sd_b is not None:
        load_strict(state.nets["G_B"], sd_b, "G_B", b2a or "", "the official ResnetGenerator layout")
        return Imported(req.spec, cfg, data, state, ("a2b", "b2a"))
    with torch.no_grad():  # no B -> A generator: zeros, so b2a can never pass for a translation
        for t in state.nets["G_B"].state_dict().values():
            t.zero_()
    return Imported(req.spec, cfg, data, state, ("a2b",))


def _looks_official(obj: Any) -> bool:
    return isinstance(obj, Mapping) and "model.1.weight" in strip_module_prefix({str(k): v for k, v in obj.items()})


IMPORTERS = {
    "cyclegan-official": Importer(
        load=import_official,
        what="a cyclegan-official generator state dict",
        looks_like=_looks_official,
        b2a="the B->A generator file (G_B)",
    )
}


# Whole-run settings (gansvc.families.base.RunPreset). "default": Zhu et al. 2017 sec. 4 and the official code
# (pytorch-CycleGAN-and-pix2pix: batch 1, n_epochs 100 + n_epochs_decay 100, load 286 then random crop 256, flip), an
# epoch being max(|A|, |B|) images. "report": report 000 sec. 4.1 / 4.4.1 (minibatch 10, 256 px crops, 200 epochs of
# 100 iterations = 20 000 steps, decaying after half: the config's decay_start / decay_steps defaults).
CROP_256 = {"size": 256, "load_size": 286, "flip": True}  # official: load 286, random crop 256, random flip
RUNS: dict[str, RunPreset] = {
    "default": RunPreset(
        loop={"batch_size": 1, "epochs": 200},
        data=CROP_256,
        epoch_fields={"decay_start": 100, "decay_steps": 100},
        note="Zhu et al. 2017 / official CycleGAN: batch 1, 100 + 100 epochs, 286 -> crop 256, flip",
    ),
    "report": RunPreset(
        loop={"batch_size": 10, "max_steps": 20_000},
        data=CROP_256,
        note="report 000: batch 10, 200 epochs x 100 iterations, 256 px crops",
    ),
}


SPEC: FamilySpec[CycleganConfig] = FamilySpec(
    name="cyclegan",
    task="translate",
    config=CycleganConfig,
    build=build,
    train_step=train_step,
    translate=translate,
    presets=PRESETS,
    runs=RUNS,
    fit_to_data=fit_patchgan,
    default_preset="default",
    dataset="horse2zebra",
    importers=IMPORTERS,
    description="CycleGAN: ResNet generators, 70x70 PatchGAN, LSGAN, cycle + identity L1, image pool, linear LR decay; "
    "loads official pytorch-CycleGAN-and-pix2pix checkpoints",
)
