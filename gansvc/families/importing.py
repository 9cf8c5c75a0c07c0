"""Helpers for a family's importers (`FamilySpec.importers`): read a torch file, check state dicts, load strictly and
build the family at the architecture read from the weights. Errors are CheckpointError naming the file, what it should
be and what it is. The generic driver (format lookup, registration) is `gansvc.importers`.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from typing import Any

import torch
from pydantic import ValidationError
from torch import Tensor, nn

from gansvc import storage
from gansvc.data.spec import DataSpec
from gansvc.families.base import FamilyConfig, FamilySpec, GanState
from gansvc.families.model_file import CheckpointError


def read_torch(uri: str, what: str) -> Any:
    """The object of a torch file (tensors, dicts, lists only: weights_only=True)."""
    try:
        raw = storage.read_bytes(uri)
    except storage.StorageError as err:
        raise CheckpointError(f"cannot read {uri}: {err}") from None
    try:
        return torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure: not a (complete) torch file
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"{uri} is not {what}: it is not a readable torch file (damaged, truncated, another "
            f"format, or it holds objects other than tensors): {first}"
        ) from None


def is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, Tensor) for v in obj.values())


def as_state_dict(obj: Any, uri: str, what: str, describe: Callable[[Any], str]) -> dict[str, Tensor]:
    """`obj` as a state dict with str keys, else CheckpointError saying what it is instead."""
    if not is_state_dict(obj):
        raise CheckpointError(f"{uri} is not {what}: found {describe(obj)}")
    return {str(k): v for k, v in obj.items()}


def load_strict(net: nn.Module, state: Mapping[str, Tensor], name: str, uri: str, what: str) -> None:
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:3])[:400]
        raise CheckpointError(f"{uri}: the {name} weights do not fit {what}: {detail}") from None


def build_imported(
    spec: FamilySpec[Any], overrides: dict[str, Any], data: DataSpec, uri: str
) -> tuple[FamilyConfig, GanState]:
    """The family's config from `overrides` (the architecture read from the weights) and its built state."""
    try:
        cfg = spec.config.model_validate(overrides)
        return cfg, spec.build(cfg, data)
    except (ValidationError, ValueError) as err:
        raise CheckpointError(
            f"{uri}: the architecture read from the weights ({overrides}, {data.height}x"
            f"{data.width}x{data.channels}) is not supported by {spec.name}: {err}"
        ) from None
