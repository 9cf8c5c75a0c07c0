"""Import checkpoints of the official implementations into the registry (`python -m gansvc.registry import`).

Formats (facts from the public code):
- `cyclegan-official`: junyanz/pytorch-CycleGAN-and-pix2pix saves each net as a plain state dict
  (`BaseModel.save_networks` -> `latest_net_G_A.pth`, `latest_net_G_B.pth`); G_A maps A -> B, G_B maps B -> A. Files
  written before PyTorch 0.4 carry InstanceNorm running statistics, which its loader drops
  (`__patch_instance_norm_state_dict`); so do we. DataParallel saves may prefix keys with `module.`.
- `ugatit-pytorch`: znxlwm/UGATIT-pytorch `UGATIT.save` writes `params_%07d.pt` = a dict with the state dicts
  `genA2B`, `genB2A`, `disGA`, `disGB`, `disLA`, `disLB`.

Architecture sizes (ngf, residual blocks, channels, light/full, image size, discriminator depth) are read from the
weights; the family's own networks are built with them and loaded strictly, then saved as a gansvc model file
(`checkpoint.inference_payload`) and registered. A CycleGAN imported without its G_B translates a2b only: the entry and
the model file say `directions: ["a2b"]` and the translate CLI refuses b2a (the stored G_B is all zeros, a grey image,
never a plausible translation).

Inference needs only generators, so no discriminator constraint ever refuses one (issue 14): a ugatit-pytorch file
without discriminators imports, and the discriminators a file holds are each built at the depth and width their own
keys give and loaded strictly (the file must be the format it claims), whatever the image size. Their depths go into
the config only where they fit the model's image size; otherwise that depth stays auto and the entry's
`import_notes` say so (`discriminator_layers` lists the file's depths).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from pydantic import ValidationError
from torch import Tensor, nn

from gansvc import storage
from gansvc.checkpoint import FORMAT, CheckpointError, inference_payload
from gansvc.data.spec import DataSpec
from gansvc.families import cyclegan, ugatit
from gansvc.families.base import FamilyConfig, FamilySpec, GanState
from gansvc.nn.resnet import ResnetArch, resnet_arch_from_state_dict, strip_instance_norm_stats, strip_module_prefix
from gansvc.nn.ugatit import (UgatitDiscriminator, ugatit_arch_from_state_dict, ugatit_d_arch_from_state_dict,
                              ugatit_d_fits)

FORMATS = ("cyclegan-official", "ugatit-pytorch")
CYCLEGAN_SIZE = 256  # official default --load_size/--crop_size; any multiple of 4 works at inference
CYCLEGAN_WHAT = "a cyclegan-official generator file (a ResnetGenerator state dict such as latest_net_G_A.pth)"
UGATIT_WHAT = "a ugatit-pytorch params file (params_XXXXXXX.pt: a dict with genA2B, genB2A, disGA, ... state dicts)"
UGATIT_NETS = ("genA2B", "genB2A", "disGA", "disGB", "disLA", "disLB")


@dataclass(frozen=True)
class Imported:
    """What an importer produces: the family, its config and data spec, the built state and the directions."""

    spec: FamilySpec
    config: FamilyConfig
    data: DataSpec
    state: GanState
    directions: tuple[str, ...]
    # facts for the registry entry beyond the config (e.g. the file's discriminator depths, notes on what was adapted)
    info: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------------- reading

def _read_torch(uri: str, what: str) -> Any:
    try:
        raw = storage.read_bytes(uri)
    except storage.StorageError as err:
        raise CheckpointError(f"cannot read {uri}: {err}") from None
    try:
        return torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure: not a (complete) torch file
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{uri} is not {what}: it is not a readable torch file (damaged, truncated, another "
                              f"format, or it holds objects other than tensors): {first}") from None


def _describe(obj: Any) -> str:
    """A short description of what a file holds, for error messages."""
    if isinstance(obj, Mapping):
        keys = [str(k) for k in list(obj)[:6]]
        more = ", ..." if len(obj) > 6 else ""
        if obj.get("format") == FORMAT:
            return "a gansvc model file (register it with `python -m gansvc.registry promote`)"
        if "genA2B" in obj:
            return "a ugatit-pytorch params file (use --format ugatit-pytorch)"
        if "model.1.weight" in strip_module_prefix({str(k): v for k, v in obj.items()}):
            return "a cyclegan-official generator state dict (use --format cyclegan-official)"
        return f"a dict with keys {', '.join(keys)}{more}" if keys else "an empty dict"
    return f"a {type(obj).__name__}"


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, Tensor) for v in obj.values())


def _state_dict(obj: Any, uri: str, what: str) -> dict[str, Tensor]:
    if not _is_state_dict(obj):
        raise CheckpointError(f"{uri} is not {what}: found {_describe(obj)}")
    return {str(k): v for k, v in obj.items()}


def _load_strict(net: nn.Module, state: Mapping[str, Tensor], name: str, uri: str, what: str) -> None:
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:3])[:400]
        raise CheckpointError(f"{uri}: the {name} weights do not fit {what}: {detail}") from None


def _build(spec: FamilySpec, overrides: dict[str, Any], data: DataSpec, uri: str) -> tuple[FamilyConfig, GanState]:
    try:
        cfg = spec.config.model_validate(overrides)
        return cfg, spec.build(cfg, data)
    except (ValidationError, ValueError) as err:
        raise CheckpointError(f"{uri}: the architecture read from the weights ({overrides}, {data.height}x"
                              f"{data.width}x{data.channels}) is not supported by {spec.name}: {err}") from None


# ------------------------------------------------------------------------------------------------------- cyclegan

def _cyclegan_generator(uri: str) -> tuple[dict[str, Tensor], ResnetArch]:
    sd = strip_instance_norm_stats(_state_dict(_read_torch(uri, CYCLEGAN_WHAT), uri, CYCLEGAN_WHAT))
    try:
        arch = resnet_arch_from_state_dict(sd)
    except ValueError as err:
        raise CheckpointError(f"{uri} is not {CYCLEGAN_WHAT}: {err}; found {_describe(sd)}") from None
    if arch.in_channels != arch.out_channels:
        raise CheckpointError(f"{uri}: the generator maps {arch.in_channels} to {arch.out_channels} channels; the "
                              "cyclegan family translates between domains with the same number of channels")
    return sd, arch


def import_cyclegan(file: str, b2a: str | None = None) -> Imported:
    sd_a, arch = _cyclegan_generator(file)
    sd_b = None
    if b2a is not None:
        sd_b, arch_b = _cyclegan_generator(b2a)
        if arch_b != arch:
            raise CheckpointError(f"{file} and {b2a} have different architectures ({arch} vs {arch_b}): give the G_A "
                                  "and G_B files of one training run")
    spec = cyclegan.SPEC
    data = DataSpec(layout="unpaired", height=CYCLEGAN_SIZE, width=CYCLEGAN_SIZE, channels=arch.in_channels)
    cfg, state = _build(spec, {"ngf": arch.ngf, "n_blocks": arch.n_blocks, "dropout": arch.dropout}, data, file)
    _load_strict(state.nets["G_A"], sd_a, "G_A", file, "the official ResnetGenerator layout")
    if sd_b is not None:
        _load_strict(state.nets["G_B"], sd_b, "G_B", b2a or "", "the official ResnetGenerator layout")
        return Imported(spec, cfg, data, state, ("a2b", "b2a"))
    with torch.no_grad():  # no B -> A generator: zeros, so b2a can never pass for a translation
        for t in state.nets["G_B"].state_dict().values():
            t.zero_()
    return Imported(spec, cfg, data, state, ("a2b",))


# --------------------------------------------------------------------------------------------------------- ugatit

def _ugatit_discriminators(params: Mapping[str, Mapping[str, Tensor]], file: str) -> dict[str, UgatitDiscriminator]:
    """Each discriminator the file holds, built at the width and depth its own keys and shapes give and loaded
    strictly: the file must be the format it claims. No image size is involved (inference never runs them), so a
    discriminator too deep for the generator's images is still accepted."""
    out: dict[str, UgatitDiscriminator] = {}
    for name in (n for n in ugatit.DISCRIMINATORS if n in params):
        try:
            arch = ugatit_d_arch_from_state_dict(params[name])
            net = UgatitDiscriminator(arch.in_channels, arch.ndf, arch.n_layers)
        except ValueError as err:
            raise CheckpointError(f"{file} is not {UGATIT_WHAT}: its {name} entry: {err}") from None
        _load_strict(net, strip_module_prefix(params[name]), name, file, "the UGATIT-pytorch layout")
        out[name] = net
    return out


def _ugatit_depths(dis: Mapping[str, UgatitDiscriminator], side: int) -> tuple[dict[str, Any], list[str]]:
    """Config fields for the file's discriminators: their width, and each depth that fits the model's image side;
    a depth that does not fit stays auto (inference needs no discriminator), with a note saying so."""
    fields: dict[str, Any] = {}
    notes: list[str] = []
    if dis:
        fields["ndf"] = next(iter(dis.values())).model[1].out_channels
    for key, name, kind in (("n_dis_global", "disGA", "global"), ("n_dis_local", "disLA", "local")):
        net = dis.get(name, dis.get(name[:-1] + "B"))
        if net is None:
            continue
        depth = net.n_layers
        if ugatit_d_fits(side, depth):
            fields[key] = depth
        else:
            notes.append(f"the file's {kind} discriminators have {depth} layers, too deep for {side} px images; "
                         f"inference needs no discriminator, so model.{key} is left on auto (the deepest that fits)")
    return fields, notes


def import_ugatit(file: str) -> Imported:
    obj = _read_torch(file, UGATIT_WHAT)
    if not isinstance(obj, Mapping) or "genA2B" not in obj or "genB2A" not in obj:
        raise CheckpointError(f"{file} is not {UGATIT_WHAT}: found {_describe(obj)}")
    params = {}
    for k in (n for n in UGATIT_NETS if n in obj):
        if not _is_state_dict(obj[k]):
            raise CheckpointError(f"{file} is not {UGATIT_WHAT}: its {k} entry is {_describe(obj[k])}, "
                                  "not a state dict")
        params[k] = strip_instance_norm_stats({str(n): v for n, v in obj[k].items()})
    gens = {k: params[k] for k in ugatit.GENERATORS}
    try:
        arch = ugatit_arch_from_state_dict(gens)  # generators only: discriminators are read on their own below
    except (ValueError, KeyError) as err:
        raise CheckpointError(f"{file} is not {UGATIT_WHAT}: {err}") from None
    if arch.in_channels != arch.out_channels:
        raise CheckpointError(f"{file}: genA2B maps {arch.in_channels} to {arch.out_channels} channels; the ugatit "
                              "family translates between domains with the same number of channels")
    dis = _ugatit_discriminators(params, file)
    side = arch.img_size or CYCLEGAN_SIZE  # light weights do not depend on the size (UGATIT-pytorch default 256)
    fields, notes = _ugatit_depths(dis, side)
    overrides: dict[str, Any] = {"ngf": arch.ngf, "n_blocks": arch.n_blocks, "light": arch.light, **fields}
    data = DataSpec(layout="unpaired", height=side, width=side, channels=arch.in_channels)
    spec = ugatit.SPEC
    cfg, state = _build(spec, overrides, data, file)
    for name, sd in gens.items():
        _load_strict(state.nets[name], sd, name, file, "the UGATIT-pytorch layout")
    state.nets.update(dis)  # the file's own discriminators (their depths may differ from what the config builds)
    info: dict[str, Any] = {}
    if dis:
        info["discriminator_layers"] = {k: v.n_layers for k, v in dis.items()}
    if notes:
        info["import_notes"] = notes
    return Imported(spec, cfg, data, state, ("a2b", "b2a"), info)


# ------------------------------------------------------------------------------------------------------- register

def import_checkpoint(fmt: str, file: str, name: str, b2a: str | None = None, root: str | None = None
                      ) -> dict[str, Any]:
    """Read an official checkpoint (local path or s3:// URI), check it strictly and register it as NAME."""
    from gansvc import registry  # registry imports this module lazily; import it lazily too

    registry.check_name(name)  # fail before reading large files
    if fmt == "cyclegan-official":
        imp = import_cyclegan(file, b2a)
    elif fmt == "ugatit-pytorch":
        if b2a is not None:
            raise CheckpointError("--b2a is for cyclegan-official; a ugatit-pytorch params file holds both generators")
        imp = import_ugatit(file)
    else:
        raise CheckpointError(f"unknown import format {fmt!r}; formats: {', '.join(FORMATS)}")
    info = {"directions": list(imp.directions), "import_format": fmt, **imp.info}
    payload = inference_payload(imp.spec, imp.config, imp.data, imp.state, {**info, "source": file, "b2a": b2a})
    buf = io.BytesIO()
    torch.save(payload, buf)
    source = file if b2a is None else f"{file} + {b2a}"
    return registry.register(name, buf.getvalue(), source, {}, "", root, info)
