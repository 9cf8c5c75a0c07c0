"""The demo copies its small sample grids scaled up by a whole factor, every pixel a square of equal pixels."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from gansvc.demo import viewable


def _png(arr: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(arr).save(out, format="PNG")
    return out.getvalue()


def test_small_grid_scaled_by_a_whole_factor_nearest() -> None:
    arr = np.random.default_rng(0).integers(0, 256, (146, 146, 3), dtype=np.uint8)  # the 16 px dcgan's 8 x 8 grid
    big = np.asarray(Image.open(io.BytesIO(viewable(_png(arr)))))
    assert big.shape == (438, 438, 3)  # x3: the first whole factor reaching 384 px
    assert np.array_equal(big, arr.repeat(3, axis=0).repeat(3, axis=1))


def test_wide_enough_image_is_returned_unchanged() -> None:
    png = _png(np.zeros((10, 400, 3), np.uint8))
    assert viewable(png) == png
