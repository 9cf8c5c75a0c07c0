"""Strict pydantic models and the messages their errors give: the base of every gansvc config and file schema.

A base-layer module (pydantic and yaml only): dataset manifests (gansvc.data), the experiment config
(gansvc.config) and sweep specs (gansvc.tune) all build on it, and a CLI can parse and report a config error without
importing torch.
"""

from __future__ import annotations

import difflib
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError


class Strict(BaseModel):
    """An unknown field is an error that names it (extra="forbid"): a misspelt key is never silently ignored."""

    model_config = ConfigDict(extra="forbid")


class FrozenStrict(Strict):
    """A Strict model that never changes once validated (configs, sweep specs): `model_copy(update=...)` makes a
    changed copy. Pydantic merges this model_config with Strict's (extra="forbid" stays)."""

    model_config = ConfigDict(frozen=True)


class ConfigError(ValueError):
    """An invalid experiment config or sweep spec; the message names each bad field."""


def _fields_at(root: type[BaseModel] | None, path: tuple[Any, ...]) -> list[str]:
    """The field names of the (nested) pydantic model at `path` under `root`; [] when the path leaves the models."""
    model: Any = root
    for key in path:
        field = model.model_fields.get(key) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if field is None:
            return []
        model = field.annotation
    return list(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) else []


def did_you_mean(name: str, known: list[str]) -> str:
    """' (did you mean lr_g, lr_d?)' for a mistyped field: close spellings and the fields that start with it."""
    close = [k for k in known if k.startswith(f"{name}_") or (k.startswith(name) and len(name) >= 3)]
    close += [k for k in difflib.get_close_matches(name, known, n=4, cutoff=0.6) if k not in close]
    if close:
        return f" (did you mean {', '.join(close[:5])}?)"
    return f"; the fields here are: {', '.join(known)}" if known else ""


def format_validation(err: ValidationError, prefix: str = "", root: type[BaseModel] | None = None) -> str:
    """One line per error, named by its dotted field path. With `root` (the validated model class), an unknown field
    gets the close names it may have meant (`model.lr: Extra inputs are not permitted (did you mean lr_g, lr_d?)`)."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        loc = f"{prefix}{loc}" if loc else prefix.rstrip(".") or "config"
        hint = ""
        if e["type"] == "extra_forbidden" and root is not None and e["loc"]:
            hint = did_you_mean(str(e["loc"][-1]), _fields_at(root, tuple(e["loc"][:-1])))
        lines.append(f"  {loc}: {e['msg']}{hint}")
    return "\n".join(lines)


def set_path(d: dict[str, Any], dotted: str, value: Any) -> None:
    """`set_path(cfg, "model.lr_g", 1e-4)`: nested assignment, creating sections as needed."""
    keys = dotted.split(".")
    if not all(keys):
        raise ConfigError(f"bad key {dotted!r}: use dotted paths like model.lr_g or loop.batch_size")
    cur = d
    for k in keys[:-1]:
        nxt = cur.setdefault(k, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"cannot set {dotted}: {k} is not a section")
        cur = nxt
    cur[keys[-1]] = value


def parse_set(item: str) -> tuple[str, Any]:
    """`key.path=value` with YAML typing of the value (1e-4 -> float, true -> bool, [3,5] -> list)."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key.path=value")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value
