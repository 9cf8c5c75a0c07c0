"""The registry of GAN families: the only list of families in the code base.

Adding a family = one module exporting `SPEC` + one line in `MODULES` below (CONTRIBUTING.md). Everything the rest
of the code needs to know of a family is read from the specs (the helpers below gather the declarations).
"""

from __future__ import annotations

import importlib
from typing import Any, Literal

from gansvc.families.base import ExtraMetric, FamilySpec, Importer

# One line per family: its module under gansvc/families/ (it exports `SPEC`), in the order lists show them.
MODULES: tuple[str, ...] = (
    "dcgan",
    "wgan",
    "wgan_gp",
    "acgan",
    "wacgan",
    "cyclegan",
    "ugatit",
    "semantic_cyclegan",
    "segmenter",
)


def _spec_of(module: str) -> FamilySpec[Any]:
    spec = getattr(importlib.import_module(f"gansvc.families.{module}"), "SPEC", None)
    if not isinstance(spec, FamilySpec):  # a programming error in a new family module
        raise TypeError(f"gansvc/families/{module}.py must export SPEC = FamilySpec(...), found {type(spec).__name__}")
    return spec


_SPECS: list[FamilySpec[Any]] = [_spec_of(module) for module in MODULES]

FAMILIES: dict[str, FamilySpec[Any]] = {s.name: s for s in _SPECS}


def get_family(name: str) -> FamilySpec[Any]:
    try:
        return FAMILIES[name]
    except KeyError:
        known = ", ".join(sorted(FAMILIES)) or "(none registered)"
        raise ValueError(f"unknown family {name!r}; known families: {known}") from None


def extra_metrics() -> dict[str, ExtraMetric]:
    """Every metric a family declares beyond gansvc.metrics.METRICS (name -> ExtraMetric)."""
    return {name: m for s in _SPECS for name, m in s.extra_metrics.items()}


def metric_mode(name: str) -> Literal["min", "max"]:
    """ "max" when higher is better, else "min", for a shared metric (gansvc.metrics.METRICS) or one a family declares;
    "min" for an unknown name (Tune's default)."""
    # deferred: gansvc.metrics loads the Inception extractors' modules (~0.2 s), needed only here
    from gansvc.metrics import METRICS

    if name in METRICS:
        return METRICS[name].mode
    declared = extra_metrics().get(name)
    return declared.mode if declared is not None else "min"


def import_formats() -> dict[str, tuple[FamilySpec[Any], Importer]]:
    """Import format name -> (the family that declares it, its Importer), in registry order."""
    out: dict[str, tuple[FamilySpec[Any], Importer]] = {}
    for spec in _SPECS:
        for fmt, importer in spec.importers.items():
            if fmt in out:  # a programming error: two families claim one format name
                raise RuntimeError(f"import format {fmt!r} is declared by {out[fmt][0].name} and {spec.name}")
            out[fmt] = (spec, importer)
    return out
