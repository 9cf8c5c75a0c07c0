"""Sliced Wasserstein distance on Laplacian-pyramid patches (Karras et al. 2018, "Progressive Growing of GANs", sec. 5
and their `metrics/sliced_wasserstein.py`). Needs no pretrained weights: gansvc's quality metric when there are no
Inception weights, and reported alongside FID when there are.

Per pyramid level (finest band first, down to a 16-pixel low-pass; one level for images under 32 pixels):
`nhoods_per_image` random 7x7 neighbourhoods of each image, each channel of the set normalised to zero mean / unit
std over the set, flattened to descriptors; the SWD between two descriptor sets is the mean over `dir_repeats` x
`dirs_per_repeat` random unit directions of the mean |sorted projection A - sorted projection B|. As in the paper the
per-level values are reported x 1e3 and averaged. Defaults differ from the paper's (128 neighbourhoods per image,
thousands of images) to keep an evaluation within a training step's memory: numbers compare within gansvc only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np
import torch
import torch.nn.functional as F

# 5-tap binomial filter of the Laplacian pyramid (Burt & Adelson 1983; the filter PGGAN's SWD code uses), applied
# separably (rows, then columns) with mirror padding as their scipy.ndimage "mirror" mode
_K1 = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0


def _blur(x: torch.Tensor, scale: float = 1.0, stride: int = 1) -> torch.Tensor:
    c = x.shape[1]
    k = _K1.to(x) * scale**0.5
    pad = F.pad(x, (2, 2, 2, 2), mode="reflect" if min(x.shape[-2:]) > 2 else "replicate")
    rows = F.conv2d(pad, k.view(1, 1, 5, 1).expand(c, 1, 5, 1), groups=c, stride=(stride, 1))
    return F.conv2d(rows, k.view(1, 1, 1, 5).expand(c, 1, 1, 5), groups=c, stride=(1, stride))


def pyr_down(x: torch.Tensor) -> torch.Tensor:
    return _blur(x, stride=2)  # = blur(x)[..., ::2, ::2]


def pyr_up(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    n, c, h, w = x.shape
    up = torch.zeros(n, c, 2 * h, 2 * w, dtype=x.dtype, device=x.device)
    up[..., ::2, ::2] = x
    return _blur(up, 4.0)[..., : size[0], : size[1]]


def laplacian_pyramid(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """[band 0 (finest detail), ..., band levels-2, low-pass]; band i = G_i - up(G_{i+1})."""
    gauss = [x]
    for _ in range(levels - 1):
        gauss.append(pyr_down(gauss[-1]))
    bands = [g - pyr_up(g_next, (g.shape[-2], g.shape[-1])) for g, g_next in pairwise(gauss)]
    return [*bands, gauss[-1]]


def num_levels(height: int, width: int, min_res: int = 16) -> int:
    """Levels from the image resolution halving down to `min_res` (PGGAN); at least one."""
    res, levels = min(height, width), 0
    while res >= min_res:
        levels, res = levels + 1, res // 2
    return max(levels, 1)


@dataclass
class SWDDescriptors:
    """Random 7x7 neighbourhood descriptors of each pyramid level, collected batch by batch."""

    nhoods_per_image: int = 64
    nhood_size: int = 7
    min_res: int = 16
    seed: int = 0
    levels: list[list[np.ndarray]] = field(default_factory=list)
    shape: tuple[int, int, int] | None = None  # (C, H, W) of the images
    n_images: int = 0

    def update(self, images: torch.Tensor) -> None:
        x = images.detach().to("cpu", torch.float32)
        if self.shape is None:
            _, c, h, w = x.shape
            self.shape = (c, h, w)
            if min(h, w) < self.nhood_size:
                raise ValueError(f"SWD needs images of at least {self.nhood_size} pixels, got {self.shape}")
            self.levels = [[] for _ in range(num_levels(h, w, self.min_res))]
        elif tuple(x.shape[1:]) != self.shape:
            raise ValueError(f"SWD images changed shape: {tuple(x.shape[1:])} after {self.shape}")
        half = self.nhood_size // 2
        offs = torch.arange(-half, half + 1)
        n = len(x)
        for lv, (level, band) in enumerate(zip(self.levels, laplacian_pyramid(x, len(self.levels)), strict=True)):
            _, _, h, w = band.shape
            img = torch.arange(n).repeat_interleave(self.nhoods_per_image)
            # positions depend on (seed, image index, level) only: the same for any batching of the same images
            pos = np.concatenate(
                [
                    np.random.default_rng([self.seed, self.n_images + i, lv]).random((2, self.nhoods_per_image))
                    for i in range(n)
                ],
                axis=1,
            )
            ys = torch.from_numpy(half + (pos[0] * (h - 2 * half)).astype(np.int64))
            xs = torch.from_numpy(half + (pos[1] * (w - 2 * half)).astype(np.int64))
            yy = (ys[:, None] + offs)[:, :, None]  # (M, k, 1)
            xx = (xs[:, None] + offs)[:, None, :]  # (M, 1, k)
            patches = band.permute(0, 2, 3, 1)[img[:, None, None], yy, xx]  # (M, k, k, C)
            level.append(patches.permute(0, 3, 1, 2).numpy())  # (M, C, k, k)
        self.n_images += n

    def finalize(self) -> list[np.ndarray]:
        """Per level: (M, C*k*k) descriptors, each channel normalised over the set (PGGAN `finalize_descriptors`)."""
        out = []
        for level in self.levels:
            d = np.concatenate(level)  # float32, as PGGAN (these sets are large)
            mean = d.mean(axis=(0, 2, 3), keepdims=True, dtype=np.float64)
            std = np.maximum(d.std(axis=(0, 2, 3), keepdims=True, dtype=np.float64), 1e-8)
            out.append(((d - mean.astype(np.float32)) / std.astype(np.float32)).reshape(len(d), -1))
        return out


def sliced_wasserstein(
    a: np.ndarray, b: np.ndarray, dir_repeats: int = 4, dirs_per_repeat: int = 128, seed: int = 0
) -> float:
    """Mean over random unit directions of the 1-D Wasserstein-1 distance of the projections (equal-size sets)."""
    if a.shape != b.shape:
        raise ValueError(f"sliced_wasserstein needs equal-size descriptor sets, got {a.shape} and {b.shape}")
    rng = np.random.default_rng(seed)
    results = []
    for _ in range(dir_repeats):
        dirs = rng.standard_normal((a.shape[1], dirs_per_repeat))
        dirs = (dirs / np.sqrt((dirs**2).sum(axis=0, keepdims=True))).astype(a.dtype)
        pa, pb = dirs.T @ a.T, dirs.T @ b.T  # (direction, neighbourhood): rows sort contiguously
        pa.sort(axis=1)
        pb.sort(axis=1)
        results.append(np.abs(pa - pb).mean(dtype=np.float64))
    return float(np.mean(results))


def swd_from_descriptors(a: list[np.ndarray], b: list[np.ndarray], seed: int = 0) -> list[float]:
    """Per-level SWD x 1e3 (PGGAN's reporting scale); the larger set of each level is subsampled to the smaller."""
    if len(a) != len(b):
        raise ValueError(f"SWD descriptor sets have {len(a)} and {len(b)} pyramid levels (different image sizes?)")
    rng = np.random.default_rng(seed)
    out = []
    for da, db in zip(a, b, strict=True):
        m = min(len(da), len(db))
        da = da if len(da) == m else da[np.sort(rng.choice(len(da), m, replace=False))]
        db = db if len(db) == m else db[np.sort(rng.choice(len(db), m, replace=False))]
        out.append(sliced_wasserstein(da, db, seed=seed) * 1e3)
    return out


def sliced_wasserstein_distance(
    images1: torch.Tensor, images2: torch.Tensor, nhoods_per_image: int = 64, min_res: int = 16, seed: int = 0
) -> float:
    """SWD between two image sets (N, C, H, W) in [-1, 1]: the mean over pyramid levels of per-level SWD x 1e3."""
    d1 = SWDDescriptors(nhoods_per_image, min_res=min_res, seed=seed)
    d2 = SWDDescriptors(nhoods_per_image, min_res=min_res, seed=seed)  # same positions: identical sets give 0
    d1.update(images1)
    d2.update(images2)
    return float(np.mean(swd_from_descriptors(d1.finalize(), d2.finalize(), seed=seed)))
