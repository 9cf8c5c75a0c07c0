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
