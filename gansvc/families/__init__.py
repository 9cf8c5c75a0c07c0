"""The registry of GAN families: the only list of families in the code base.

Adding a family = one module exporting `SPEC` + one line in `_SPECS` below.
"""

from __future__ import annotations

from gansvc.families import acgan, dcgan, wacgan, wgan, wgan_gp
from gansvc.families import cyclegan, ugatit
from gansvc.families import segmenter, semantic_cyclegan
from gansvc.families.base import FamilySpec

_SPECS: list[FamilySpec] = [
    # one line per family, e.g.: dcgan.SPEC,
    dcgan.SPEC, wgan.SPEC, wgan_gp.SPEC, acgan.SPEC, wacgan.SPEC,
    cyclegan.SPEC, ugatit.SPEC,
    semantic_cyclegan.SPEC, segmenter.SPEC,
]

FAMILIES: dict[str, FamilySpec] = {s.name: s for s in _SPECS}


def get_family(name: str) -> FamilySpec:
    try:
        return FAMILIES[name]
    except KeyError:
        known = ", ".join(sorted(FAMILIES)) or "(none registered)"
        raise ValueError(f"unknown family {name!r}; known families: {known}") from None
