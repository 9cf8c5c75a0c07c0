"""Seeded inputs for the generation families: latents and attribute labels (by name), shared by Serve and the CLI.

Everything is drawn on the CPU from its own `torch.Generator`, then moved: the same seed gives the same latents and
labels on every device and never disturbs the global RNG of a training run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from gansvc.data.spec import DataSpec


def _latent_dim(cfg: Any) -> int:
    dim = cfg if isinstance(cfg, int) else getattr(cfg, "latent_dim", None)
    if not isinstance(dim, int) or dim < 1:
        raise ValueError(f"need a config with latent_dim (or an int >= 1), got {cfg!r}")
    return dim


def sample_latents(
    cfg: Any, n: int, seed: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """(n, cfg.latent_dim) standard normal latents, a pure function of (latent_dim, n, seed). `cfg` may be an int."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    z = torch.randn(n, _latent_dim(cfg), generator=gen, dtype=dtype)
    return z if device is None else z.to(device)


def sample_labels(data: DataSpec, n: int, seed: int, device: torch.device | str | None = None) -> Tensor:
    """(n, n_attributes) int64 labels, each attribute's value uniformly at random, a pure function of the seed."""
    if not data.attributes:
        raise ValueError("the dataset has no attributes: this model is not label-conditioned")
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    cols = [torch.randint(0, len(vals), (n,), generator=gen) for vals in data.attributes.values()]
    labels = torch.stack(cols, dim=1)
    return labels if device is None else labels.to(device)


def encode_labels(
    data: DataSpec,
    items: Sequence[Mapping[str, str]],
    seed: int | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Attribute values by name -> (len(items), n_attributes) int64, e.g.
    `encode_labels(spec, [{"hair_color": "blue", "eye_color": "red"}])`.

    Unknown attribute names or values raise ValueError naming them and listing the allowed ones. An attribute left out
    of an item is an error, unless `seed` is given: then it is drawn uniformly (reproducibly) from its values.
    """
    if not data.attributes:
        raise ValueError("this model has no attributes to condition on (it was trained without labels)")
    names = list(data.attributes)
    gen = torch.Generator(device="cpu").manual_seed(int(seed)) if seed is not None else None
    rows: list[list[int]] = []
    for i, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise ValueError(f"labels item {i} must be a mapping attribute -> value, got {type(item).__name__}")
        unknown = [k for k in item if k not in data.attributes]
        if unknown:
            raise ValueError(f"labels item {i}: unknown attribute {unknown[0]!r}; attributes: {', '.join(names)}")
        row = []
        for name in names:
            allowed = data.attributes[name]
            if name not in item:
                if gen is None:
                    raise ValueError(
                        f"labels item {i}: missing attribute {name!r} (allowed values: "
                        f"{', '.join(allowed)}); give every attribute or pass a seed to draw missing ones"
                    )
                row.append(int(torch.randint(0, len(allowed), (1,), generator=gen)))
                continue
            value = item[name]
            if not isinstance(value, str) or value not in allowed:
                raise ValueError(
                    f"labels item {i}: unknown value {value!r} for attribute {name!r}; allowed: {', '.join(allowed)}"
                )
            row.append(allowed.index(value))
        rows.append(row)
    labels = torch.tensor(rows, dtype=torch.long).reshape(len(rows), len(names))
    return labels if device is None else labels.to(device)


def decode_labels(data: DataSpec, labels: Tensor) -> list[dict[str, str]]:
    """Inverse of `encode_labels`: (N, n_attributes) int64 -> [{attribute: value}, ...]."""
    names = list(data.attributes)
    if labels.dim() != 2 or labels.shape[1] != len(names):
        raise ValueError(f"labels must have shape (N, {len(names)}), got {tuple(labels.shape)}")
    out = []
    for row in labels.tolist():
        d = {}
        for name, idx in zip(names, row, strict=True):
            vals = data.attributes[name]
            if not 0 <= idx < len(vals):
                raise ValueError(f"label index {idx} out of range for attribute {name!r} ({len(vals)} values)")
            d[name] = vals[idx]
        out.append(d)
    return out


# ---------------------------------------------------------------------------------------------------- latent walks

WALK_METHODS = ("slerp", "lerp")


def slerp(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    """Spherical linear interpolation (Shoemake 1985) from `a` to `b` (two (d,) vectors) at the fractions `t` (k,)
    -> (k, d), the GAN latent-walk formula of White 2016 ("Sampling Generative Networks"):
    sin((1 - t) W) / sin W * a + sin(t W) / sin W * b, W the angle between a and b. It follows the great circle
    between the two directions, so the frames keep the norm a Gaussian latent has (lerp's midpoint of two
    near-orthogonal latents is ~0.71 x as long, off the prior's shell). t = 0 gives `a`, t = 1 gives `b`, exactly.
    Computed in float64; (anti)parallel vectors (sin W ~ 0) fall back to lerp."""
    a64, b64, t64 = a.double(), b.double(), t.double().reshape(-1, 1)
    cos = torch.dot(a64 / a64.norm(), b64 / b64.norm()).clamp(-1.0, 1.0)
    omega = torch.arccos(cos)
    so = torch.sin(omega)
    if float(so) < 1e-6:
        return lerp(a, b, t)
    out = torch.sin((1.0 - t64) * omega) / so * a64 + torch.sin(t64 * omega) / so * b64
    return out.to(a.dtype)


def lerp(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    """Linear interpolation (1 - t) a + t b -> (k, d); t = 0 gives `a`, t = 1 gives `b`, exactly."""
    t64 = t.double().reshape(-1, 1)
    return ((1.0 - t64) * a.double() + t64 * b.double()).to(a.dtype)


def walk_inputs(
    cfg: Any,
    seeds: Sequence[int],
    steps: int,
    method: str = "slerp",
    data: DataSpec | None = None,
    labels: Sequence[Mapping[str, str]] | None = None,
) -> tuple[Tensor, Tensor | None]:
    """The inputs of a latent walk of `steps` frames from seed A to seed B: ((steps, latent_dim) latents,
    (steps, n_attributes) labels or None). The one definition Serve's /interpolate and the offline CLI share.

    Latents: each seed's latent is `sample_latents(cfg, 1, seed)[0]`, the image `generate` makes for n=1 and that seed,
    interpolated by `method` (slerp or lerp) at t = 0, 1/(steps-1), ..., 1: the first frame is seed A's image, the
    last seed B's.
    Labels (`data` given: a label-conditioned model): a family's generator takes attribute *indices* (categorical;
    it embeds or one-hot encodes them itself), so there is no meaningful value between two attribute values. Each
    end's labels are encoded as generate does (`encode_labels(data, [L], seed=S)`: attributes left out are drawn
    from that end's seed), and frames with t < 0.5 take A's labels, the others B's: the latent moves smoothly and the
    condition switches once, at the midpoint.
    """
    if len(seeds) != 2:
        raise ValueError(f"a walk needs two seeds (start and end), got {len(seeds)}")
    if steps < 2:
        raise ValueError(f"steps must be at least 2 (the two ends), got {steps}")
    if method not in WALK_METHODS:
        raise ValueError(f"unknown interpolation method {method!r}; methods: {', '.join(WALK_METHODS)}")
    za, zb = (sample_latents(cfg, 1, s)[0] for s in seeds)
    t = torch.linspace(0.0, 1.0, steps, dtype=torch.float64)
    z = (slerp if method == "slerp" else lerp)(za, zb, t)
    if data is None:
        if labels:
            raise ValueError("this model is not label-conditioned: drop labels")
        return z, None
    ends = list(labels) if labels is not None else [{}, {}]
    if len(ends) != 2:
        raise ValueError(f"labels must be two mappings (start and end), got {len(ends)}")
    ya, yb = (encode_labels(data, [dict(end)], seed=s)[0] for end, s in zip(ends, seeds, strict=True))
    y = torch.stack([ya if float(ti) < 0.5 else yb for ti in t])
    return z, y
