"""Tensor <-> image helpers shared by data previews, training sample grids, offline CLIs and Serve.

Pixel convention of the official CycleGAN code: x / 255 * 2 - 1 in, (y + 1) / 2 * 255 out.
"""

from __future__ import annotations

import io
import math

import numpy as np
import torch
from PIL import Image


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> (N, H, W, C) uint8, rounding as (y + 1) / 2 * 255."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def to_pil(image: np.ndarray) -> Image.Image:
    """(H, W, C) uint8 -> PIL image (C = 1 gives grayscale)."""
    return Image.fromarray(image[:, :, 0], "L") if image.shape[2] == 1 else Image.fromarray(image, "RGB")


GRID_PAD = 2  # white pixels around and between the images of a grid


def grid_columns(n: int) -> int:
    """How many images a row of a grid of n holds by default (a near-square grid); the API sends it as
    X-Grid-Columns, so a client (the playground) can cut the frames back out."""
    return max(1, math.ceil(math.sqrt(n)))


def grid(images: torch.Tensor, nrow: int | None = None, pad: int = GRID_PAD) -> Image.Image:
    """A grid of (N, C, H, W) images in [-1, 1] with `pad` pixels of white around and between them, row by row."""
    arr = to_uint8(images)
    n, h, w, c = arr.shape
    nrow = nrow or grid_columns(n)
    rows = math.ceil(n / nrow)
    canvas = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), 255, np.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        canvas[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + col * (w + pad) : pad + col * (w + pad) + w] = arr[
            i
        ]
    return to_pil(canvas)


def on_white(image: Image.Image) -> Image.Image:
    """An image with transparency composited on opaque white; other images unchanged.

    THE rule for transparent pixels, shared by training (gansvc.data.pipeline.decode) and serving
    (gansvc.serve.uploads.decode_image), so a model sees at serve time what it saw in training. Covers alpha modes
    (RGBA, LA, PA), palette images (P, whose palette may hold transparent entries) and L/RGB images with a tRNS
    colour key (`transparency` in PIL's info). A fully opaque image comes out with the same pixels.
    """
    if image.mode in ("RGBA", "LA", "P", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return image


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


# a latent walk's frames as one file (gansvc.families.sampling.walk_inputs makes the frames)
WALK_FORMATS = ("grid", "webp", "gif")
WALK_MEDIA_TYPES = {"grid": "image/png", "webp": "image/webp", "gif": "image/gif"}
WALK_FRAME_MS = 100  # each frame of an animated walk (WebP / GIF), looping forever


def walk_bytes(images: torch.Tensor, fmt: str, frame_ms: int = WALK_FRAME_MS) -> bytes:
    """The frames (N, C, H, W) in [-1, 1] as one file: `grid` a PNG grid (row by row), `webp` an animated lossless
    WebP, `gif` an animated GIF, both looping forever at `frame_ms` per frame. Deterministic: the same frames give the
    same bytes."""
    if fmt == "grid":
        return png_bytes(grid(images))
    if fmt not in WALK_FORMATS:
        raise ValueError(f"unknown walk format {fmt!r}; formats: {', '.join(WALK_FORMATS)}")
    frames = [to_pil(a).convert("RGB") for a in to_uint8(images)]
    buf = io.BytesIO()
    if fmt == "webp":
        frames[0].save(
            buf, "WEBP", save_all=True, append_images=frames[1:], duration=frame_ms, loop=0, lossless=True, method=4
        )
    else:
        frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=frame_ms, loop=0)
    return buf.getvalue()
