"""Sample-quality gate (issue 14 §5): dcgan with DEFAULT model flags on real data, side by side with a textbook DCGAN.

Real data that no one here wrote: scikit-learn's bundled handwritten digits (tests/gate/digits.py; 8x8 upscaled to
16x16, dcgan's smallest size). As a user would: PNGs + labels.csv -> `python -m gansvc.data put` (a local folder),
`python -m gansvc.train dcgan` (default model flags; loop/data flags: batch 64, no flip, STEPS steps), `python -m
gansvc.registry promote`, `python -m gansvc.generate --n 1000`. The textbook DCGAN (Radford et al. 2016 layout in
plain PyTorch, tests/gate/textbook_dcgan.py) trains on the same images, steps and batch size. An independent
classifier trained on the real digits scores both: an Inception-Score analogue and class coverage (digits.py). The
real digits' own scores are the reference.

The test prints every figure, so a change of a default shows whether quality moved (compare the printed line with
the measurements below). Measured with `python tests/gate/pipeline.py --seeds 0,1,2 --steps 300` on 2 CPU cores:

    scorer (logistic regression on real 16x16 digits): held-out accuracy 0.969
    real digits (reference):   IS 7.60, coverage 10/10, 87 % confident
    300 steps, batch 64        gansvc dcgan defaults        textbook DCGAN (Radford et al. layout)
      seed 0                   IS 4.09, coverage 8          IS 3.51, coverage 6
      seed 1                   IS 3.69, coverage 5          IS 3.63, coverage 6
      seed 2                   IS 4.02, coverage 7          IS 3.49, coverage 6
    the old defaults (`--preset report`: transposed 5x5, LeakyReLU G, no BN in D), same data / steps / batch, trained
    in-process: seeds 0, 1, 2 -> IS 2.66, 3.42, 3.10, coverage 3, 5, 4 (this gate fails them).
    for scale: uniform noise IS 1.38; the real images of one digit IS 1.18, coverage 1.
(2026-11-29, on a machine shared with other test runs: the gansvc arm took 216-322 s, the textbook 146-1066 s.
Nearly unloaded: the test took 91 s (gansvc arm 70 s, textbook 14 s), 125 s with the session stack's start-up.)
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from gansvc import local
from tests.gate import digits
from tests.gate.pipeline import put_digits, run_seed, score

STEPS = 300
SEED = 0
# Thresholds from the measurements above: the defaults scored IS 3.69-4.09 / coverage 5-8 over three seeds (seed 0,
# the one tested: 4.09 / 8), so MIN_IS / MIN_COVERAGE sit below the worst seed and far above a collapsed or
# noise-making G (IS ~1.2-1.4). The defaults beat the textbook on every seed measured, so no tolerance: TOLERANCE 0.
MIN_IS = 3.4
MIN_COVERAGE = 5
TOLERANCE = 0.0


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_dcgan_defaults_score_at_least_as_well_as_a_textbook_dcgan_on_real_digits(
    ray_stack: local.StackState, tmp_path: Path
) -> None:
    t0 = time.perf_counter()
    env = {**os.environ, "RAY_ADDRESS": ray_stack.ray_address}
    scorer = digits.train_scorer()
    real_images, _ = digits.load_digits_16()
    real = score(scorer, real_images, 0.0)
    dataset = put_digits(tmp_path, env)
    ours, theirs = run_seed(scorer, dataset, tmp_path, STEPS, SEED, env)
    print(
        f"\nquality gate: sklearn digits 16x16, {STEPS} steps, batch 64, seed {SEED}; scorer held-out accuracy "
        f"{scorer.held_out_accuracy:.3f}\n  {real.line('real digits (reference)')}\n"
        f"  {ours.line('gansvc dcgan defaults')}\n  {theirs.line('textbook DCGAN')}\n"
        f"  gate: IS >= {MIN_IS}, coverage >= {MIN_COVERAGE}, IS >= textbook - {TOLERANCE}; "
        f"total {time.perf_counter() - t0:.0f} s"
    )
    assert scorer.held_out_accuracy > 0.9, "the scorer itself must recognise real digits"
    assert real.inception_score > ours.inception_score, "generated digits cannot beat the real ones' score"
    assert ours.inception_score >= MIN_IS and ours.coverage >= MIN_COVERAGE, "dcgan defaults lost sample quality"
    assert ours.inception_score >= theirs.inception_score - TOLERANCE, "dcgan defaults score below a textbook DCGAN"
