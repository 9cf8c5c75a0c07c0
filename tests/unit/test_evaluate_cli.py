"""`python -m gansvc.evaluate`: generate (with intra-FID of a conditional model) and translate (both directions,
kid_x100) end to end on registered models and `data put` datasets, the SWD-only path without weights, and the clear
errors (unknown model, dataset of the wrong layout)."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from gansvc import evaluate as evaluate_cli
from gansvc.checkpoint import MODEL_FILE, inference_payload
from gansvc.data.pipeline import DataConfig, ImageDataset
from gansvc.families import FAMILIES
from gansvc.metrics import FID_EXTRACTOR
from gansvc.registry import register
from tests.unit.metrics.test_fidelity_equal import random_fid_inception_state


def _register(reg: str, name: str, family: str, dataset: str, size: int = 16) -> None:
    """An untrained model of `family` ("smoke" preset) for `dataset`'s spec, registered as `name`."""
    spec = FAMILIES[family]
    cfg = spec.make_config("smoke")
    data = ImageDataset(DataConfig(uri=dataset, size=size)).spec
    torch.manual_seed(0)
    state = spec.build(cfg, data)
    buf = io.BytesIO()
    torch.save(inference_payload(spec, cfg, data, state, {"step": 1}), buf)
    register(name, buf.getvalue(), f"test/{name}/{MODEL_FILE}", {"swd": 1.0}, dataset, reg)


def _evaluate(*args: str) -> subprocess.CompletedProcess[str]:
    """`python -m gansvc.evaluate ARGS`, in this process (its `main`): a subprocess would pay torch's import again."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = evaluate_cli.main(list(args))
    return subprocess.CompletedProcess(["gansvc.evaluate", *args], code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="module")
def fid_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fid") / "random-fid-inception.pth"
    torch.save(random_fid_inception_state(0), path)
    return path


@pytest.mark.timeout(300)
def test_evaluate_generate_conditional_with_intra_fid(
    tmp_path: Path, synth_put: Callable[..., str], fid_weights: Path
) -> None:
    shapes = synth_put("shapes", str(tmp_path / "shapes"), count=8, size=16, seed=0, test_count=6)
    reg = str(tmp_path / "registry")
    _register(reg, "acgan-e", "acgan", shapes)
    out = _evaluate(
        "--model",
        "acgan-e",
        "--dataset",
        shapes,
        "--registry",
        reg,
        "--n",
        "6",
        "--n-per-class",
        "2",
        "--inception",
        str(fid_weights),
        "--batch-size",
        "6",
        "--kid-subsets",
        "3",
        "--is-splits",
        "2",
        "--json",
    )
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    r, p = doc["results"], doc["protocol"]
    assert {"fid", "kid", "kid_x100", "kid_std", "is", "is_std", "swd", "intra_fid"} <= set(r)
    assert r["kid_x100"] == pytest.approx(100 * r["kid"]) and r["fid"] > 0 and r["intra_fid"] > 0
    assert doc["split"] == "test" and p["reference"]["split"] == "test" and p["n_generated"] == 6
    assert p["n_real"] == 6 and p["extractor"] == FID_EXTRACTOR and len(p["weights_sha256"]) == 64
    assert p["weights_are_published"] is False and "not the published" in doc["weights"]
    assert p["kid"]["subset_size"] == 6 and p["kid"]["subsets"] == 3 and p["is"]["splits"] == 2
    assert p["intra_fid"]["attribute"] == "shape" and p["intra_fid"]["fid_per_class"]

    table = _evaluate(
        "--model",
        "acgan-e",
        "--dataset",
        shapes,
        "--registry",
        reg,
        "--n",
        "4",
        "--n-per-class",
        "0",
        "--inception",
        str(tmp_path / "missing.pth"),
    )
    assert table.returncode == 0, table.stderr  # no weights: SWD only, and it says so
    assert "swd" in table.stdout and "fid " not in table.stdout and "FID/KID/IS NOT computed" in table.stdout
    assert "missing.pth" in table.stdout and "does not exist" in table.stdout


@pytest.mark.timeout(300)
def test_evaluate_translate_both_directions_and_errors(
    tmp_path: Path, synth_put: Callable[..., str], fid_weights: Path
) -> None:
    stripes = synth_put("stripes", str(tmp_path / "stripes"), count=4, size=16, seed=1, test_count=3)
    shapes = synth_put("shapes", str(tmp_path / "shapes"), count=4, size=16, seed=0, test_count=2)
    reg = str(tmp_path / "registry")
    _register(reg, "cyc-e", "cyclegan", stripes)
    out = _evaluate(
        "--model",
        "cyc-e",
        "--dataset",
        stripes,
        "--registry",
        reg,
        "--n",
        "3",
        "--inception",
        str(fid_weights),
        "--batch-size",
        "3",
        "--kid-subsets",
        "2",
        "--json",
    )
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    for d in ("a2b", "b2a"):
        assert {f"fid_{d}", f"kid_{d}", f"kid_x100_{d}", f"swd_{d}"} <= set(doc["results"])
        assert "is" not in doc["results"] and doc["protocol"][d]["n_generated"] == 3
    assert doc["protocol"]["a2b"]["reference"]["stream"] == "B" and doc["protocol"]["b2a"]["reference"]["stream"] == "A"

    unknown = _evaluate("--model", "nope", "--dataset", stripes, "--registry", reg)
    assert unknown.returncode == 2 and "nope" in unknown.stderr
    wrong = _evaluate(
        "--model", "cyc-e", "--dataset", shapes, "--registry", reg, "--inception", str(tmp_path / "x.pth")
    )
    assert wrong.returncode == 2 and "'single' dataset" in wrong.stderr and "unpaired" in wrong.stderr
