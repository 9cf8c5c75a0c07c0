"""`python -m gansvc.translate --model NAME --direction a2b IN OUT [--heatmap HEAT] [--resize WxH]`: offline
image-to-image translation.

IN and OUT are image files, or folders (one PNG per input image, same names); local paths or s3:// URIs. Loads a
registered model exactly as Serve does (`registry.load_model`). Images keep their size unless --resize is given (the
family pads to a multiple of 4 internally and crops back). Pixels: x / 255 * 2 - 1 in, (y + 1) / 2 * 255 out;
grayscale / RGBA inputs are converted to the model's channels (PIL `convert`, as the official data loaders do).
"""

from __future__ import annotations

import argparse
import io
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from gansvc import storage
from gansvc.checkpoint_layout import CheckpointError
from gansvc.data.imagefile import describe_image_error
from gansvc.registry import RegistryError, load_model

# torch (and gansvc.imaging, which needs it) is imported in the functions that compute, not here: `--help` and
# argument errors start in well under a second without it
if TYPE_CHECKING:
    import torch

    from gansvc.checkpoint import InferenceModel
    from gansvc.families.base import Direction

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif")
DIRECTIONS = ("a2b", "b2a")


class TranslateError(ValueError):
    """A request this CLI cannot serve; the message says what to do instead."""


@dataclass(frozen=True)
class Job:
    src: str  # input image URI
    out: str  # output PNG URI
    heat: str | None  # heatmap PNG URI


def parse_size(text: str | None) -> tuple[int, int] | None:
    """`64x48` -> (width 64, height 48)."""
    if not text:
        return None
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise TranslateError(f"--resize {text!r}: write WIDTHxHEIGHT, e.g. 256x256") from None
    if w < 1 or h < 1:
        raise TranslateError(f"--resize {text!r}: width and height must be positive")
    return w, h


def check_model(name: str, model: InferenceModel, direction: str) -> None:
    if model.spec.task == "generate" or model.spec.translate is None:
        raise TranslateError(
            f"{name} is a {model.spec.task} model ({model.spec.name}), not an image-to-image one: "
            "use python -m gansvc.generate"
        )
    if model.spec.task != "translate":
        raise TranslateError(f"{name} is a {model.spec.task} model ({model.spec.name}); this CLI runs translate models")
    if direction not in DIRECTIONS:
        raise TranslateError(f"unknown direction {direction!r}: use a2b or b2a")
    directions = model.extra.get("directions", list(DIRECTIONS))
    if direction not in directions:
        raise TranslateError(
            f"{name} translates {', '.join(directions)} only (it was imported without the other "
            f"generator): use --direction {directions[0]}, or re-import it with --b2a"
        )
    if model.data.channels not in (1, 3):
        raise TranslateError(
            f"{name} works on {model.data.channels}-channel images; this CLI reads 1- or 3-channel images only"
        )


def read_image(uri: str, channels: int, size: tuple[int, int] | None) -> torch.Tensor:
    """An image file -> (1, C, H, W) in [-1, 1]."""
    import torch  # deferred: see the imports

    try:
        with Image.open(io.BytesIO(storage.read_bytes(uri))) as file:
            img = file.convert("L" if channels == 1 else "RGB")
            if size is not None:
                img = img.resize(size, Image.Resampling.BICUBIC)  # official transforms resize bicubically
            arr = np.asarray(img, dtype=np.float32)
    except storage.StorageError:
        raise
    except Exception as err:  # noqa: BLE001 - PIL raises many types for bad files
        raise TranslateError(f"{uri}: not a readable image ({describe_image_error(err)})") from None
    x = torch.from_numpy(arr.copy()).reshape(arr.shape[0], arr.shape[1], -1).permute(2, 0, 1)
    return (x / 255.0 * 2.0 - 1.0).unsqueeze(0)


def _is_dir(uri: str) -> bool:
    loc = storage.parse_uri(uri)
    if not loc.is_s3:
        return Path(loc.path).is_dir()
    return not storage.exists(uri) and any(True for _ in storage.list_objects(uri))


def plan(src: str, out: str, heat: str | None) -> list[Job]:
    """The (input, output, heatmap) URIs: file -> file, or folder -> folder with the same names as PNG."""
    if not _is_dir(src):
        if not storage.exists(src):
            raise TranslateError(f"{src}: no such file or folder")
        if _is_dir(out):  # an existing folder: write NAME.png into it
            name = f"{PurePosixPath(storage.parse_uri(src).uri()).stem}.png"
            out = storage.parse_uri(out).join(name).uri()
            heat = storage.parse_uri(heat).join(name).uri() if heat and _is_dir(heat) else heat
        return [Job(src, out, heat)]
    rels = sorted(
        o.rel
        for o in storage.list_objects(src)
        if "/" not in o.rel and o.rel.lower().endswith(IMAGE_SUFFIXES) and not o.rel.startswith(".")
    )
    if not rels:
        raise TranslateError(f"{src} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    names = [f"{PurePosixPath(r).stem}.png" for r in rels]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise TranslateError(f"{src}: several inputs would be written as {', '.join(clash)}: rename them")
    src_loc, out_loc = storage.parse_uri(src), storage.parse_uri(out)
    heat_loc = storage.parse_uri(heat) if heat else None
    return [
        Job(src_loc.join(r).uri(), out_loc.join(n).uri(), heat_loc.join(n).uri() if heat_loc else None)
        for r, n in zip(rels, names, strict=True)
    ]


def _write_png(uri: str, images: torch.Tensor) -> None:
    from gansvc.imaging import png_bytes, to_pil, to_uint8  # deferred: see the imports

    storage.write_bytes(uri, png_bytes(to_pil(to_uint8(images)[0])), "image/png")


def translate_files(
    model_name: str,
    direction: str,
    src: str,
    out: str,
    heat: str | None = None,
    resize: tuple[int, int] | None = None,
    registry: str | None = None,
    device: str = "cpu",
) -> list[Job]:
    import torch  # deferred: see the imports

    with torch.inference_mode():
        _, model = load_model(model_name, registry, device)
        check_model(model_name, model, direction)
        way: Direction = "a2b" if direction == "a2b" else "b2a"  # check_model refused any other value
        jobs = plan(src, out, heat)
        assert model.spec.translate is not None
        for i, job in enumerate(jobs, 1):
            x = read_image(job.src, model.data.channels, resize).to(device)
            result = model.spec.translate(model.nets, x, way, model.config)
            if job.heat is not None and "heatmap" not in result:  # checked on the first image, before any write
                raise TranslateError(
                    f"{model_name} ({model.spec.name}) has no attention heatmap (only attention "
                    "models such as ugatit have one): drop --heatmap"
                )
            _write_png(job.out, result["image"])
            if job.heat is not None:
                _write_png(job.heat, result["heatmap"] * 2.0 - 1.0)  # [0, 1] -> the [-1, 1] image convention
            if len(jobs) > 1:
                print(f"[{i}/{len(jobs)}] {job.src} -> {job.out}", file=sys.stderr, flush=True)
    return jobs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m gansvc.translate",
        description="Offline image-to-image translation with a registered model: IN and OUT "
        "are image files, or folders (one PNG per input, same names).",
    )
    p.add_argument("input", help="image file or folder (local path or s3:// URI)")
    p.add_argument("output", help="output PNG file, or folder when the input is a folder")
    p.add_argument("--model", required=True, help="registered model name (python -m gansvc.registry list)")
    p.add_argument("--direction", default="a2b", help="a2b or b2a (default a2b)")
    p.add_argument("--heatmap", default=None, help="also write the attention heatmap (ugatit) to this file / folder")
    p.add_argument("--resize", default=None, help="resize inputs to WIDTHxHEIGHT first (default: keep their size)")
    p.add_argument("--registry", default=None, help="registry root (default $GANSVC_STORAGE/registry)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    args = p.parse_args(argv)
    try:
        jobs = translate_files(
            args.model,
            args.direction,
            args.input,
            args.output,
            args.heatmap,
            parse_size(args.resize),
            args.registry,
            args.device,
        )
    except (ValueError, RegistryError, CheckpointError, storage.StorageError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    extra = " (+ heatmaps)" if args.heatmap else ""
    print(f"wrote {len(jobs)} image(s){extra}: {jobs[0].out}{' ...' if len(jobs) > 1 else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
