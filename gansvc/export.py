"""Export a registered model's inference nets for use outside Ray: ONNX or TorchScript
(`python -m gansvc.registry export NAME --format onnx|torchscript OUT`).

The model is loaded exactly as Serve and the offline CLIs load it (`registry.load_model`), and each exported graph is
the trace of a small `nn.Module` that calls the family's own `FamilySpec.generate` / `FamilySpec.translate`, so it
computes what the family's function computes (same clamping, padding, cropping, heatmap scaling, colouring).

OUT is a folder (local path or s3:// URI) that receives one file per entry point and `export.json` (the manifest):
- task "generate":              `generate.onnx` / `generate.pt`: z (N, latent_dim) float32 [+ labels (N, n_attributes)
                                int64] -> image (N, C, H, W) in [-1, 1];
- tasks "translate"/"segment":  `a2b.*` and `b2a.*` (the directions the model has): images (N, C, H, W) in [-1, 1]
                                -> the outputs of the family's translate in its order (image first; + heatmap (N, 1, H,
                                W) in [0, 1] for attention models; + mask (N, H, W) int64 class ids for segmenters).
The batch axis is dynamic, and for translation H and W too: the trace runs at an odd size (one above the model's
training size when that is even), so the family's pad-to-a-multiple path is recorded with sizes computed from the
input (a trace at a multiple would record "no padding" and be wrong at other sizes).

ONNX goes through the TorchScript-based exporter (`torch.onnx.export(dynamo=False)`, opset 17; it needs the `onnx`
package, the dynamo exporter would also need `onnxscript`); TorchScript is `torch.jit.trace` + `torch.jit.save`.
Layer 3, beside the registry and the importers: `registry.export_model` loads the model and calls `export`; this
module never imports the registry.
"""

from __future__ import annotations

import importlib.util
import io
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import torch
from torch import Tensor, nn

import gansvc
from gansvc import storage
from gansvc.checkpoint import InferenceModel
from gansvc.families.sampling import encode_labels, sample_latents

ExportFormat = Literal["onnx", "torchscript"]
FORMATS: tuple[ExportFormat, ...] = ("onnx", "torchscript")
SUFFIX: dict[str, str] = {"onnx": ".onnx", "torchscript": ".pt"}
MANIFEST = "export.json"
ONNX_OPSET = 17
DIRECTIONS = ("a2b", "b2a")


class ExportError(ValueError):
    """A model (or a request) that cannot be exported; the message says why and what to do."""


class _Generate(nn.Module):
    """z [, labels] -> the family's generate(...) (images in [-1, 1])."""

    def __init__(self, model: InferenceModel) -> None:
        super().__init__()
        self.nets = nn.ModuleDict(model.nets)
        self._fn = cast(Callable[..., Tensor], model.spec.generate)
        self._cfg = model.config

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        return self._fn(self.nets, z, labels, self._cfg)


class _Translate(nn.Module):
    """images -> the family's translate(...) outputs, as a tuple in `keys` order."""

    def __init__(self, model: InferenceModel, direction: str, keys: tuple[str, ...]) -> None:
        super().__init__()
        self.nets = nn.ModuleDict(model.nets)
        self._fn = cast(Callable[..., dict[str, Tensor]], model.spec.translate)
        self._cfg = model.config
        self.direction = direction
        self.keys = keys

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        out = self._fn(self.nets, images, self.direction, self._cfg)
        return tuple(out[k] for k in self.keys)


@dataclass(frozen=True)
class EntryPoint:
    """One exported graph: its file stem, the wrapper, example inputs and the manifest's description."""

    stem: str
    module: nn.Module
    inputs: tuple[Tensor, ...]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    dynamic_axes: dict[str, dict[int, str]]
    described: dict[str, Any]


def _odd(n: int) -> int:
    return n if n % 2 else n + 1


def _io(name: str, shape: list[Any], dtype: str, what: str) -> dict[str, Any]:
    return {"name": name, "shape": shape, "dtype": dtype, "description": what}


def example_inputs(
    model: InferenceModel, batch: int, size: tuple[int, int] | None = None, seed: int = 0
) -> tuple[Tensor, ...]:
    """Fixed inputs of an entry point: (z[, labels]) for generate, (images,) for translate; `size` (H, W) of images
    (default: the trace size)."""
    if model.spec.task == "generate":
        z = sample_latents(model.config, batch, seed)
        if model.spec.conditional:
            return z, encode_labels(model.data, [{}] * batch, seed=seed)
        return (z,)
    h, w = size or (_odd(model.data.height), _odd(model.data.width))
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, model.data.channels, h, w, generator=gen) * 2.0 - 1.0,)


def entry_points(model: InferenceModel) -> list[EntryPoint]:
    """The graphs to export for a loaded model; ExportError when the family has no inference function to export."""
    spec = model.spec
    if spec.task == "generate":
        if spec.generate is None:
            raise ExportError(f"{spec.name} declares task generate but no generate function: nothing to export")
        inputs = example_inputs(model, 2)
        latent = int(inputs[0].shape[1])
        names: tuple[str, ...] = ("z", "labels") if len(inputs) == 2 else ("z",)
        c, h, w = model.data.channels, model.data.height, model.data.width
        ins = [_io("z", ["N", latent], "float32", "standard normal latents")]
        if len(inputs) == 2:
            ins.append(
                _io(
                    "labels",
                    ["N", len(model.data.attributes)],
                    "int64",
                    "column j = index of the value of attribute j (see labels)",
                )
            )
        described = {
            "inputs": ins,
            "outputs": [_io("image", ["N", c, h, w], "float32", "images in [-1, 1]")],
            "value_range": [-1.0, 1.0],
        }
        gen_axes = {n: {0: "N"} for n in (*names, "image")}
        return [EntryPoint("generate", _Generate(model), inputs, names, ("image",), gen_axes, described)]
    if spec.translate is None:
        raise ExportError(f"{spec.name} declares task {spec.task} but no translate function: nothing to export")
    directions = [d for d in model.extra.get("directions", list(DIRECTIONS)) if d in DIRECTIONS]
    if not directions:
        raise ExportError(f"the model lists no direction to export (directions: {model.extra.get('directions')})")
    points = []
    for direction in directions:
        inputs = example_inputs(model, 2)
        with torch.no_grad():
            sample = spec.translate(model.nets, inputs[0], direction, model.config)
        keys = ("image", *(k for k in sample if k != "image"))
        outs = []
        for k in keys:
            t = sample[k]
            shape: list[Any] = ["N", *t.shape[1:]]
            if t.dim() >= 3:
                shape[-2:] = ["H", "W"]
            what = {
                "image": "translated images in [-1, 1]",
                "heatmap": "attention heatmap in [0, 1], per image min-max scaled",
                "mask": "predicted class ids (argmax of the logits)",
            }.get(k, k)
            if spec.task == "segment" and k == "image":
                what = "the predicted mask coloured with the fixed palette, in [-1, 1]"
            outs.append(_io(k, shape, str(t.dtype).removeprefix("torch."), what))
        c = model.data.channels
        described = {
            "direction": direction,
            "inputs": [_io("images", ["N", c, "H", "W"], "float32", "images in [-1, 1] (pixels x / 255 * 2 - 1)")],
            "outputs": outs,
            "value_range": [-1.0, 1.0],
        }
        axes: dict[str, dict[int, str]] = {"images": {0: "N", 2: "H", 3: "W"}}
        for k in keys:
            axes[k] = {0: "N", sample[k].dim() - 2: "H", sample[k].dim() - 1: "W"} if sample[k].dim() >= 3 else {0: "N"}
        points.append(
            EntryPoint(direction, _Translate(model, direction, keys), inputs, ("images",), keys, axes, described)
        )
    return points


def _export_bytes(point: EntryPoint, fmt: ExportFormat) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings on the families' Python checks (shapes, branches)
        if fmt == "onnx":
            with tempfile.TemporaryDirectory() as tmp:  # a path: the exporter's declared target type
                path = f"{tmp}/{point.stem}.onnx"
                torch.onnx.export(
                    point.module,
                    point.inputs,
                    path,
                    dynamo=False,  # the TorchScript-based exporter: dynamic axes from the trace, no onnxscript
                    opset_version=ONNX_OPSET,
                    input_names=list(point.input_names),
                    output_names=list(point.output_names),
                    dynamic_axes=point.dynamic_axes,
                )
                with open(path, "rb") as f:
                    return f.read()
        else:
            traced = torch.jit.trace(point.module, point.inputs, check_trace=False)
            torch.jit.save(traced, buf)
    return buf.getvalue()


def export(entry: dict[str, Any], model: InferenceModel, fmt: str, out: str, overwrite: bool = False) -> dict[str, Any]:
    """Export a loaded registry model (`registry.load_model`: its entry and inference model) to folder `out` in format
    `fmt`; returns the manifest (also written as OUT/export.json). ExportError when it cannot be done."""
    check_target(fmt, out, overwrite)
    loc = storage.parse_uri(out)
    name = entry.get("name", "the model")
    points = entry_points(model)
    files: dict[str, Any] = {}
    for point in points:
        try:
            data = _export_bytes(point, cast(ExportFormat, fmt))
        except Exception as err:  # noqa: BLE001 - the exporters raise many types; the message names the cause
            first = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
            raise ExportError(
                f"{name} ({model.spec.name}): the {point.stem} graph cannot be exported to {fmt}: {first}; try the "
                f"other format ({' or '.join(f for f in FORMATS if f != fmt)})"
            ) from None
        file = f"{point.stem}{SUFFIX[fmt]}"
        storage.write_bytes(loc.join(file).uri(), data)
        files[point.stem] = {"file": file, **point.described}
    manifest: dict[str, Any] = {
        "format": fmt,
        **({"onnx_opset": ONNX_OPSET} if fmt == "onnx" else {"load": "torch.jit.load(file)"}),
        "gansvc_version": gansvc.__version__,
        "torch_version": torch.__version__,
        "model": {k: entry.get(k) for k in ("name", "version", "family", "task", "checkpoint", "source", "created")},
        "data_spec": model.data.to_dict(),
        "graphs": files,
        "value_range": [-1.0, 1.0],
        "pixels": "in: x / 255 * 2 - 1 (NCHW, float32); out: (y + 1) / 2 * 255",
        "dynamic_axes": "N (batch)" + ("" if model.spec.task == "generate" else ", H and W (any image size)"),
    }
    if model.spec.task == "generate" and model.spec.conditional:
        manifest["labels"] = {
            "attributes": {k: list(v) for k, v in model.data.attributes.items()},
            "encoding": "labels[:, j] = index of the value of the j-th attribute in its list (int64)",
        }
    if model.spec.task != "generate":
        manifest["sizes"] = (
            "any H x W: the graph pads to the network's multiple and crops back, as the family does (traced at "
            f"{_odd(model.data.height)}x{_odd(model.data.width)}); the training size is "
            f"{model.data.height}x{model.data.width}. Images smaller than the padding the family adds are outside "
            "the exported graph's exact range (the family then pads by replication, the graph by reflection)."
        )
    storage.write_json(loc.join(MANIFEST).uri(), manifest)  # last: a complete export has its manifest
    return manifest


def check_target(fmt: str, out: str, overwrite: bool) -> None:
    """ExportError for an unknown format or an OUT that cannot receive an export (checked before loading a model)."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}: use {' or '.join(FORMATS)}")
    if fmt == "onnx" and importlib.util.find_spec("onnx") is None:  # torch.onnx.export writes through it
        raise ExportError("ONNX export needs the onnx package: pip install onnx (or use --format torchscript)")
    loc = storage.parse_uri(out)
    if storage.exists(loc.join(MANIFEST).uri()) and not overwrite:
        raise ExportError(f"{out} already holds an export ({MANIFEST}): choose another folder or pass --overwrite")
    if not loc.is_s3 and Path(loc.path).exists() and not Path(loc.path).is_dir():
        raise ExportError(f"{out} is a file: OUT must be a folder (it receives one file per graph + {MANIFEST})")
