"""tests/gate/shapes.py, the demo-grid measure, stays right: its data is the demo's dataset, its scores separate real
shapes from shapeless images, and a short run of the defaults goes through end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gansvc.data.synth import write_shapes
from tests.gate import shapes

ROOT = Path(__file__).resolve().parents[3]


def test_shapes_data_equals_the_written_dataset(tmp_path: Path) -> None:
    # the measure trains on exactly what `data synth shapes` writes for the demo (same seed, size, order, labels)
    write_shapes(tmp_path, 6, shapes.SIZE, 0, 0, grayscale=False)  # the demo's size
    images, classes = shapes.shapes_data(6, 0)
    rows = (tmp_path / "labels.csv").read_text().splitlines()[1:]
    for i, row in enumerate(rows):
        name, shape, color = row.split(",")
        assert np.array_equal(np.asarray(Image.open(tmp_path / name).convert("RGB")), images[i])
        assert classes[i] == shapes.SHAPES.index(shape) * len(shapes.COLORS) + list(shapes.COLORS).index(color)


@pytest.fixture(scope="module")
def scorer() -> torch.nn.Module:
    net, accuracy = shapes.train_scorer(count=1500, epochs=6)
    assert accuracy > 0.5  # a short training already tells most of the 12 classes apart (1.00 with the defaults)
    return net


def test_scores_separate_shapes_from_blobs(scorer: torch.nn.Module) -> None:
    real = shapes.score(scorer, shapes.shapes_data(300, 9)[0])
    # shapeless images: the real ones blurred into blobs, and flat dark ground
    blurred = np.stack(
        [
            np.asarray(Image.fromarray(x).resize((4, 4)).resize((shapes.SIZE, shapes.SIZE)))
            for x in shapes.shapes_data(300, 9)[0]
        ]
    )
    flat = np.full((300, shapes.SIZE, shapes.SIZE, 3), 30, np.uint8)
    blobs, ground = shapes.score(scorer, blurred), shapes.score(scorer, flat)
    assert real.inception_score > 2 * max(blobs.inception_score, ground.inception_score)
    assert real.coverage > max(blobs.coverage, ground.coverage)
    assert ground.coverage <= 1 and ground.inception_score < 1.5
    assert abs(sum(real.shape_shares) - 1) < 1e-6


def test_parse_sets() -> None:
    assert shapes.parse_sets(["lr_g=5e-4", "betas=[0.5, 0.99]", "loss=hinge", "ema=true"]) == {
        "lr_g": 5e-4, "betas": [0.5, 0.99], "loss": "hinge", "ema": True,
    }  # fmt: skip
    with pytest.raises(SystemExit, match="key=value"):
        shapes.parse_sets(["lr_g"])


@pytest.mark.timeout(200)
def test_command_runs_end_to_end(tmp_path: Path) -> None:
    # tiny: smoke nets, 3 steps, the rough scorer
    cmd = ["tests/gate/shapes.py", "--steps", "3", "--preset", "smoke", "--quick", "--work", str(tmp_path)]
    out = subprocess.run([sys.executable, *cmd], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    assert "held-out accuracy" in out.stdout and "seed 0" in out.stdout and "[smoke]" in out.stdout
    assert Image.open(tmp_path / f"grid-{shapes.SIZE}px-3-seed0.png").size == (512, 512)
