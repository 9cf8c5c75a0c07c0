"""Defaults that fit the data (issue 14, part 5): where a report's network setting cannot apply to the images a run
meets (a discriminator too deep for small images), a config field left on auto (None) gets the closest setting that
fits, and the change is said in one note per field ("model.FIELD OLD -> NEW: why").

A family uses these helpers twice: its `build` resolves auto fields itself (so `build(cfg, data)` works on a config
that never went through the training CLI), and its `FamilySpec.fit_to_data` hook returns the config with those fields
resolved plus the notes, for the resolved config the CLI prints and stores. Both call the same resolver, so they agree.
A field the user set (not None) is never changed: if it does not fit, `build` raises its error with advice.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from gansvc.data.spec import DataSpec
from gansvc.nn.patchgan import patchgan_output_size

if TYPE_CHECKING:
    from gansvc.families.cycle import PatchGanFields

P = TypeVar("P", bound="PatchGanFields")  # a family config with the PatchGAN fields

# The 70x70 PatchGAN: 3 stride-2 layers (Isola et al. 2017; Zhu et al. 2017 appendix 7.2; official netD 'basic').
PATCHGAN_REPORT_LAYERS = 3
_MAX_SIDE = 1 << 16  # search bound for the smallest side a network accepts


def deepest(report: int, lowest: int, fits: Callable[[int], bool]) -> int | None:
    """The largest depth in [lowest, report] that fits (the report's own when it does), None when none does."""
    return next((n for n in range(report, lowest - 1, -1) if fits(n)), None)


def min_side(fits: Callable[[int], bool]) -> int:
    """The smallest image side accepted by a network whose acceptance grows with the side (bisection)."""
    lo, hi = 1, _MAX_SIDE
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if fits(mid) else (mid + 1, hi)
    return lo


def change_note(field: str, old: object, new: object, why: str) -> str:
    """The note for one changed field, in the one format the CLI prints and stores."""
    return f"model.{field} {old} -> {new}: {why}"


# ------------------------------------------------------------------------------------------------------- PatchGAN


def patchgan_fits(side: int, n_layers: int) -> bool:
    return patchgan_output_size(side, n_layers) >= 1


def patchgan_min_side(n_layers: int) -> int:
    return min_side(lambda s: patchgan_fits(s, n_layers))


def patchgan_layers(value: int | None, height: int, width: int, report: int = PATCHGAN_REPORT_LAYERS) -> int:
    """The PatchGAN depth to build: `value` when set (ValueError with advice when the images are too small for it),
    else (auto) the report's depth or, below the size it needs, the deepest that still gives a patch map."""
    side = min(height, width)
    if value is not None:
        if not patchgan_fits(side, value):
            raise ValueError(
                f"{height}x{width} images are too small for a PatchGAN with n_layers_d={value} (it needs "
                f">= {patchgan_min_side(value)} px): lower n_layers_d, leave it unset (auto: the deepest "
                f"that fits, at most {report}) or use larger images"
            )
        return value
    n = deepest(report, 1, lambda k: patchgan_fits(side, k))
    if n is None:
        raise ValueError(
            f"{height}x{width} images are too small for any PatchGAN (1 layer needs >= "
            f"{patchgan_min_side(1)} px): use larger images (--size)"
        )
    return n


def fit_patchgan(
    cfg: P, data: DataSpec, explicit: frozenset[str] = frozenset(), report: int = PATCHGAN_REPORT_LAYERS
) -> tuple[P, list[str]]:
    """`FamilySpec.fit_to_data` for a family with a PatchGAN depth field `n_layers_d` (cyclegan, semantic-cyclegan):
    resolves it when it is None (auto). `explicit` (the field names the user set) is accepted for the hook's
    signature; a set field is never None, so it is left alone either way."""
    if cfg.n_layers_d is not None:
        return cfg, []
    try:
        n = patchgan_layers(None, data.height, data.width, report)
    except ValueError:
        return cfg, []  # nothing fits: build raises the error with advice
    notes = (
        []
        if n == report
        else [
            change_note(
                "n_layers_d",
                report,
                n,
                f"the {report}-layer PatchGAN needs images of at least {patchgan_min_side(report)} px; these are "
                f"{data.height}x{data.width}, and {n} layers is the deepest that still gives a patch map",
            )
        ]
    )
    return cfg.model_copy(update={"n_layers_d": n}), notes
