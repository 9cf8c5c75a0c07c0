"""Built-in deterministic synthetic datasets, so every part of the product runs with no download.

- `shapes` (single domain, labelled): one filled shape on a dark textured background; attributes `shape`
  (circle / square / triangle) and `color` (red / green / blue / yellow) are written to labels.csv, so ACGAN-style
  families can condition on two attributes at once, like hair and eye colour in the anime-face study.
- `stripes` (unpaired A/B): A holds smooth, plain brown blobs on grass-green backgrounds; B the same kind of blobs
  filled with black-and-white stripes: a change of texture and colour of the horse -> zebra kind. With `masks=True`
  (`synth stripes --masks`) every split also gets its masks (`trainA_masks/` ...: 0 background, 1 blob; classes.txt),
  so a segmenter can be trained on it and semantic-cyclegan's FCN score computed.
- `shapes-seg` (single domain, segmentation masks): one or two filled shapes of random colours on a dark textured
  background; `train_masks/` / `test_masks/` hold their classes (0 background, 1 circle, 2 square, 3 triangle; later
  shapes paint over earlier ones in image and mask alike), named in classes.txt.

Image i of a dataset depends only on (seed, split, i), so a dataset is the same on every machine.
"""

from __future__ import annotations

import csv
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SHAPES = ("circle", "square", "triangle")
COLORS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (50, 80, 230), "yellow": (230, 210, 40)}


def _rng(seed: int, split: str, i: int) -> np.random.Generator:
    return np.random.default_rng([seed, sum(map(ord, split)), i])


def _background(rng: np.random.Generator, size: int, base: tuple[int, int, int], noise: float) -> Image.Image:
    """A flat colour with low-frequency noise (blurred), so images are not trivially constant."""
    field = rng.normal(0.0, noise, (size // 4 + 1, size // 4 + 1, 3))
    img = Image.fromarray(np.clip(np.array(base) + field, 0, 255).astype(np.uint8)).resize(
        (size, size), Image.Resampling.BICUBIC
    )
    return img


def shape_image(rng: np.random.Generator, size: int, shape: str, color: str) -> Image.Image:
    img = _background(rng, size, (30, 30, 40), 12.0)
    draw = ImageDraw.Draw(img)
    r = size * rng.uniform(0.22, 0.34)
    cx, cy = rng.uniform(r + 1, size - r - 1, 2)
    jitter = rng.integers(-25, 26, 3)
    fill = tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(COLORS[color], jitter, strict=True))
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=fill)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r * 0.8), (cx + r, cy + r * 0.8)], fill=fill)
    return img


def blob_image(rng: np.random.Generator, size: int, striped: bool) -> Image.Image:
    """A horse-like blob (body ellipse + head) on grass; striped=True paints zebra stripes inside it."""
    return blob_image_and_mask(rng, size, striped)[0]


def blob_image_and_mask(rng: np.random.Generator, size: int, striped: bool) -> tuple[Image.Image, Image.Image]:
    """`blob_image` and its mask (mode L: 1 where the blob covers more than half of a pixel, else 0)."""
    img = _background(rng, size, (70, 140, 60), 18.0)
    mask = Image.new("L", (size, size), 0)
    md = ImageDraw.Draw(mask)
    w, h = size * rng.uniform(0.45, 0.65), size * rng.uniform(0.25, 0.4)
    cx, cy = rng.uniform(w / 2 + 1, size - w / 2 - 1), rng.uniform(h / 2 + size * 0.1, size - h / 2 - 1)
    md.ellipse([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], fill=255)
    side = 1 if rng.random() < 0.5 else -1
    hx, hy, hr = cx + side * w * 0.5, cy - h * 0.55, h * 0.35
    md.ellipse([hx - hr, hy - hr, hx + hr, hy + hr], fill=255)
    mask = mask.filter(ImageFilter.GaussianBlur(0.6))
    if striped:
        period = max(3.0, size / rng.uniform(5, 8))
        phase, angle = rng.uniform(0, period), rng.uniform(-0.5, 0.5)
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        t = (xx * np.cos(angle) + yy * np.sin(angle) + phase) % period
        stripes = np.where(t < period / 2, 235, 25).astype(np.uint8)
        body = Image.fromarray(np.stack([stripes] * 3, axis=-1))
    else:
        tone = np.array([150, 95, 50]) + rng.integers(-20, 21, 3)
        body = _background(rng, size, (int(tone[0]), int(tone[1]), int(tone[2])), 8.0)
    img.paste(body, (0, 0), mask)
    return img, mask.point(lambda v: 1 if v >= 128 else 0)


def _write(img: Image.Image, path: Path, grayscale: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    (img.convert("L") if grayscale else img).save(path, format="PNG", optimize=False, compress_level=1)


def shape_item(seed: int, split: str, i: int, size: int) -> tuple[Image.Image, str, str]:
    """Item `i` of the `shapes` dataset's `split` for `seed`: (image, shape, colour), the same as `write_shapes`
    writes (the demo quality check, tests/gate/shapes.py, rebuilds the demo's data with it)."""
    rng = _rng(seed, split, i)
    shape, color = SHAPES[int(rng.integers(len(SHAPES)))], list(COLORS)[int(rng.integers(len(COLORS)))]
    return shape_image(rng, size, shape, color), shape, color


def write_shapes(out: Path, count: int, size: int, seed: int, test_count: int, grayscale: bool) -> None:
    rows = []
    for split, n in (("train", count), ("test", test_count)):
        for i in range(n):
            img, shape, color = shape_item(seed, split, i, size)
            name = f"{split}/{i:06d}.png"
            _write(img, out / name, grayscale)
            rows.append((name, shape, color))
    with open(out / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "shape", "color"])
        w.writerows(rows)


def _write_mask(mask: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    mask.save(path, format="PNG", optimize=False, compress_level=1)


def write_stripes(
    out: Path, count: int, size: int, seed: int, test_count: int, grayscale: bool, masks: bool = False
) -> None:
    for split, n in (("trainA", count), ("trainB", count), ("testA", test_count), ("testB", test_count)):
        for i in range(n):
            img, mask = blob_image_and_mask(_rng(seed, split, i), size, striped=split.endswith("B"))
            _write(img, out / f"{split}/{i:06d}.png", grayscale)
            if masks:
                _write_mask(mask, out / f"{split}_masks/{i:06d}.png")
    if masks:
        (out / "classes.txt").write_text("background\nblob\n")


SEG_CLASSES = ("background", *SHAPES)


def shapes_seg_image(rng: np.random.Generator, size: int) -> tuple[Image.Image, Image.Image]:
    """One or two shapes of random colours and sizes; the mask holds each pixel's class (SEG_CLASSES)."""
    img = _background(rng, size, (30, 30, 40), 12.0)
    mask = Image.new("L", (size, size), 0)
    draws = (ImageDraw.Draw(img), ImageDraw.Draw(mask))
    for _ in range(int(rng.integers(1, 3))):
        k = int(rng.integers(len(SHAPES)))
        r = size * rng.uniform(0.15, 0.3)
        cx, cy = rng.uniform(r + 1, size - r - 1, 2)
        color = COLORS[list(COLORS)[int(rng.integers(len(COLORS)))]]
        fill = tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(color, rng.integers(-25, 26, 3), strict=True))
        values: tuple[tuple[int, ...] | int, ...] = (fill, k + 1)  # RGB fill on the image, class id on the mask
        for draw, value in zip(draws, values, strict=True):
            if SHAPES[k] == "circle":
                draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=value)
            elif SHAPES[k] == "square":
                draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=value)
            else:
                draw.polygon([(cx, cy - r), (cx - r, cy + r * 0.8), (cx + r, cy + r * 0.8)], fill=value)
    return img, mask


def write_shapes_seg(
    out: Path, count: int, size: int, seed: int, test_count: int, grayscale: bool, masks: bool = True
) -> None:
    for split, n in (("train", count), ("test", test_count)):
        for i in range(n):
            img, mask = shapes_seg_image(_rng(seed, split, i), size)
            _write(img, out / f"{split}/{i:06d}.png", grayscale)
            _write_mask(mask, out / f"{split}_masks/{i:06d}.png")
    (out / "classes.txt").write_text("\n".join(SEG_CLASSES) + "\n")


SYNTHS: dict[str, tuple[Callable[..., None], str]] = {
    "shapes": (write_shapes, "single-domain, labelled: shape x color (an ACGAN/DCGAN toy)"),
    "stripes": (write_stripes, "unpaired A/B: plain blobs -> striped blobs (a CycleGAN toy; --masks adds blob masks)"),
    "shapes-seg": (
        write_shapes_seg,
        "single-domain with segmentation masks: background/circle/square/triangle (a segmenter toy)",
    ),
}
# the synthetic datasets that can write masks on request (`masks=True`); shapes-seg always has them
MASKABLE = ("stripes", "shapes-seg")


def synth(
    name: str,
    count: int = 2000,
    size: int = 32,
    seed: int = 0,
    test_count: int | None = None,
    grayscale: bool = False,
    masks: bool = False,
    out: Path | None = None,
) -> Path:
    """Write synthetic dataset `name` to a local folder and return it (callers `put` it, then remove it). `masks`:
    also write segmentation masks (datasets in MASKABLE). `out`: an empty or new folder to write in (default: a fresh
    temporary folder, which the caller must remove)."""
    if name not in SYNTHS:
        raise ValueError(f"unknown synthetic dataset {name!r}; choose one of: {', '.join(SYNTHS)}")
    if masks and name not in MASKABLE:
        raise ValueError(f"--masks: {name} has no masks; these do: {', '.join(MASKABLE)}")
    if count < 1:
        raise ValueError("--count must be at least 1")
    if not 8 <= size <= 1024:
        raise ValueError("--size must be between 8 and 1024 pixels")
    if out is None:
        out = Path(tempfile.mkdtemp(prefix=f"gansvc-synth-{name}-"))
    elif out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} is not empty: synth writes a whole dataset, into an empty or new folder")
    out.mkdir(parents=True, exist_ok=True)
    extra = {"masks": True} if masks else {}
    SYNTHS[name][0](
        out, count, size, seed, max(1, count // 10) if test_count is None else test_count, grayscale, **extra
    )
    return out
