"""samples/curves.png: every family's train_step terms are plotted, whatever the family names them (issue 16.10:
cyclegan's losses panel was empty because its terms are G_A, cycle_A, D_B... rather than loss_*)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from gansvc.train.evaluation import is_train_term, plot_curves


def _history(terms: tuple[str, ...]) -> list[dict[str, float]]:
    return [
        {
            "step": s,
            "epoch": 0,
            "lr": 2e-4,
            "lr/G": 2e-4,
            "grad_norm/G_A": 3.0,
            "images_per_s": 10.0,
            "step_time_s": 0.1,
            "data_wait_frac": 0.0,
            **{t: 1.0 + 0.1 * s + i for i, t in enumerate(terms)},
        }
        for s in range(1, 6)
    ]


def _coloured_pixels(png: bytes) -> int:
    """Pixels of a line colour (saturated: max - min channel > 80), i.e. plotted curves, not axes or text."""
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    return int(((rgb.max(axis=2) - rgb.min(axis=2)) > 80).sum())


def test_family_named_terms_are_curves_and_loop_keys_are_not() -> None:
    cycle = ("G_A", "G_B", "cycle_A", "cycle_B", "idt_A", "D_A", "D_B")
    keys = sorted(_history(cycle)[0])
    assert [k for k in keys if is_train_term(k)] == sorted(cycle)
    assert not any(is_train_term(k) for k in ("fid", "swd", "miou", "lr/D", "grad_norm/D", "step", "protocol"))
    assert _coloured_pixels(plot_curves(_history(cycle))) > 200  # the panel has curves
    assert _coloured_pixels(plot_curves(_history(()))) == 0  # no terms: nothing plotted (the check can fail)
