"""The sample-quality gate's two arms, as a user runs them: gansvc's commands with default model flags, and the
textbook DCGAN (tests/gate/textbook_dcgan.py) on the same data, steps, batch size and scorer.

`python tests/gate/pipeline.py --seeds 0,1,2 --steps 300` measures several seeds outside pytest (Ray starts locally
in each training command when RAY_ADDRESS is unset); the figures in
tests/integration/train/test_quality_gate.py come from it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository's `tests` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.gate import digits, textbook_dcgan

# Loop and data flags (not model flags) of the gansvc run. Batch 64: the textbook's batch, set on both sides. No
# horizontal flip: a mirrored digit is another glyph (issue 14: flips are wrong for characters).
BATCH = 64
N_SAMPLES = 1000


@dataclass(frozen=True)
class Scores:
    inception_score: float
    coverage: int
    confident: float
    seconds: float

    def line(self, name: str) -> str:
        return (
            f"{name:<24} IS {self.inception_score:5.2f}  coverage {self.coverage:2d}/10  "
            f"confident {self.confident:4.0%}  ({self.seconds:.0f} s)"
        )


def score(scorer: digits.Scorer, images: np.ndarray, seconds: float) -> Scores:
    return Scores(scorer.inception_score(images), scorer.coverage(images), scorer.confident_share(images), seconds)


def _run(cmd: list[str], env: dict[str, str], timeout: float) -> str:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout + proc.stderr


def put_digits(work: Path, env: dict[str, str]) -> str:
    """The digits written as PNGs + labels.csv, then `python -m gansvc.data put` into a local dataset folder."""
    folder = digits.write_folder(work / "digits-src")
    dest = work / "datasets" / "digits"
    _run([sys.executable, "-m", "gansvc.data", "put", str(folder), str(dest), "--quiet"], env, 300)
    return str(dest)


def train_gansvc(dataset: str, work: Path, steps: int, seed: int, env: dict[str, str]) -> np.ndarray:
    """`gansvc.train dcgan` with default model flags, `registry promote`, `gansvc.generate` 1,000 samples."""
    py, name = sys.executable, f"gate-{seed}"
    runs, registry, out = work / "runs", work / "registry", work / f"generated-{seed}"
    _run(
        [
            py,
            "-m",
            "gansvc.train",
            "dcgan",
            "--dataset",
            dataset,
            "--storage",
            str(runs),
            "--name",
            name,
            "--max-steps",
            str(steps),
            "--batch-size",
            str(BATCH),
            "--seed",
            str(seed),
            "--set",
            "data.flip=false",
            "--log-every",
            str(steps),
            "--checkpoint-every",
            str(steps),
            "--eval-every",
            str(steps),
        ],
        env,
        900,
    )
    _run(
        [py, "-m", "gansvc.registry", "promote", str(runs / name), "--name", name, "--registry", str(registry)],
        env,
        120,
    )
    _run(
        [
            py,
            "-m",
            "gansvc.generate",
            "--model",
            name,
            "--n",
            str(N_SAMPLES),
            "--seed",
            str(seed),
            "--registry",
            str(registry),
            str(out),
        ],
        env,
        300,
    )
    return digits.read_pngs(out)


def train_textbook(steps: int, seed: int) -> np.ndarray:
    images, _ = digits.load_digits_16()
    return textbook_dcgan.sample(textbook_dcgan.train(images, steps, BATCH, seed), N_SAMPLES, seed)


def run_seed(
    scorer: digits.Scorer, dataset: str, work: Path, steps: int, seed: int, env: dict[str, str]
) -> tuple[Scores, Scores]:
    t0 = time.perf_counter()
    ours = train_gansvc(dataset, work, steps, seed, env)
    t1 = time.perf_counter()
    theirs = train_textbook(steps, seed)
    t2 = time.perf_counter()
    return score(scorer, ours, t1 - t0), score(scorer, theirs, t2 - t1)


def main() -> None:
    parser = argparse.ArgumentParser(description="measure the quality gate over several seeds")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--work", type=Path, required=True)
    args = parser.parse_args()
    env = dict(os.environ)
    scorer = digits.train_scorer()
    real_images, _ = digits.load_digits_16()
    print(f"scorer held-out accuracy {scorer.held_out_accuracy:.3f}", flush=True)
    print(score(scorer, real_images, 0.0).line("real digits"), flush=True)
    dataset = put_digits(args.work, env)
    for seed in (int(s) for s in args.seeds.split(",")):
        ours, theirs = run_seed(scorer, dataset, args.work, args.steps, seed, env)
        print(
            f"seed {seed} steps {args.steps}\n  {ours.line('gansvc dcgan defaults')}\n"
            f"  {theirs.line('textbook DCGAN')}",
            flush=True,
        )


if __name__ == "__main__":
    main()
