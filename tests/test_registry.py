"""Model registry and offline generation: promote / list / show / delete, the load path, seeded generation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gansvc.checkpoint import META_FILE, MODEL_FILE, CheckpointError, inference_payload, load_inference
from gansvc.data.spec import DataSpec
from gansvc.families import FAMILIES
from gansvc.registry import RegistryError, get_entry, list_entries, load_model, promote

SHAPES = DataSpec("single", 16, 16, 3, {"shape": ("circle", "square"), "color": ("blue", "red")})


def _checkpoint(root: Path, family: str, step: int, metrics: dict[str, float], data: DataSpec = SHAPES) -> Path:
    """A checkpoint directory as the training loop writes it (model.pt + meta.json) from freshly built nets."""
    spec = FAMILIES[family]
    cfg = spec.make_config("smoke")
    torch.manual_seed(step)
    state = spec.build(cfg, data)
    ckpt = root / f"checkpoint-{step:08d}"
    ckpt.mkdir(parents=True)
    torch.save(inference_payload(spec, cfg, data, state, {"step": step}), ckpt / MODEL_FILE)
    (ckpt / META_FILE).write_text(json.dumps({"step": step, "metrics": metrics}))
    return ckpt


def _run(root: Path, family: str = "acgan") -> Path:
    run = root / "runs" / "r1"
    run.mkdir(parents=True)
    (run / "gansvc-config.json").write_text(json.dumps({"family": family, "data": {"uri": "s3://b/shapes"}}))
    for step, swd in ((10, 5.0), (20, 3.0), (30, 4.0)):
        _checkpoint(run, family, step, {"swd": swd, "loss_d": 1.0})
    return run


def test_promote_latest_best_and_by_metric(tmp_path: Path) -> None:
    run, reg = _run(tmp_path), str(tmp_path / "registry")
    latest = promote(str(run), "latest", root=reg)
    assert latest["step"] == 30 and latest["dataset"] == "s3://b/shapes" and latest["family"] == "acgan"
    by_metric = promote(str(run), "by-swd", metric="swd", root=reg)
    assert by_metric["step"] == 20 and by_metric["metrics"]["swd"] == 3.0
    # the run's evaluated best wins when there is one
    (run / "best").mkdir()
    (run / "best" / MODEL_FILE).write_bytes((run / "checkpoint-00000010" / MODEL_FILE).read_bytes())
    (run / "best" / META_FILE).write_text(json.dumps({"step": 10, "metric": "swd", "value": 1.0,
                                                      "metrics": {"swd": 1.0}}))
    best = promote(str(run), "best", root=reg)
    assert best["step"] == 10 and best["source"].endswith("best/model.pt")
    assert [e["name"] for e in list_entries(reg)] == ["best", "by-swd", "latest"]
    again = promote(str(run), "latest", root=reg)
    assert again["version"] == 2, "re-promoting a name bumps its version"
    # the registry keeps its own copy: the run's checkpoints may go away
    for ckpt in run.glob("checkpoint-*"):
        for f in ckpt.iterdir():
            f.unlink()
    entry, model = load_model("latest", reg)
    assert entry["version"] == 2 and model.spec.name == "acgan" and set(model.nets) == {"G"}


def test_promote_errors(tmp_path: Path) -> None:
    reg = str(tmp_path / "registry")
    with pytest.raises(RegistryError, match="neither a gansvc checkpoint"):
        promote(str(tmp_path), "x", root=reg)
    run = _run(tmp_path)
    with pytest.raises(RegistryError, match="no checkpoint of .* has metric 'fid'"):
        promote(str(run), "x", metric="fid", root=reg)
    with pytest.raises(RegistryError, match="invalid model name"):
        promote(str(run), "Bad Name!", root=reg)
    with pytest.raises(RegistryError, match="no model named 'nope'"):
        get_entry("nope", reg)


def test_wrong_file_is_refused(tmp_path: Path) -> None:
    ckpt = tmp_path / "c"
    ckpt.mkdir()
    torch.save({"hello": torch.zeros(2)}, ckpt / MODEL_FILE)
    with pytest.raises(CheckpointError, match="not a gansvc model file"):
        load_inference(str(ckpt))
    (ckpt / MODEL_FILE).write_bytes(b"not a torch file at all")
    with pytest.raises(CheckpointError, match="not a gansvc checkpoint file"):
        load_inference(str(ckpt))


def test_registry_in_s3(tmp_path: Path, s3_prefix: str) -> None:
    run = _run(tmp_path, "dcgan")
    entry = promote(str(run), "s3-model", root=f"{s3_prefix}/registry")
    assert entry["checkpoint"].startswith(f"{s3_prefix}/registry/models/s3-model/v1/")
    _, model = load_model("s3-model", f"{s3_prefix}/registry")
    assert model.spec.name == "dcgan"


def _cli(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=300)


def test_cli_generate_is_seeded_and_checks_labels(tmp_path: Path) -> None:
    reg = str(tmp_path / "registry")
    promote(str(_run(tmp_path)), "acgan-m", root=reg)
    listed = _cli("gansvc.registry", "list", "--registry", reg)
    assert listed.returncode == 0 and "acgan-m" in listed.stdout and "16x16x3" in listed.stdout
    shown = json.loads(_cli("gansvc.registry", "--registry", reg, "show", "acgan-m").stdout)
    assert shown["data_spec"]["attributes"] == {"shape": ["circle", "square"], "color": ["blue", "red"]}
    out1, out2 = tmp_path / "o1", tmp_path / "o2"
    for out in (out1, out2):
        r = _cli("gansvc.generate", "--model", "acgan-m", "--registry", reg, "--n", "3", "--seed", "5",
                 "--labels", "shape=circle", "--grid", str(out))
        assert r.returncode == 0, r.stderr
    files = sorted(p.name for p in out1.iterdir())
    assert len(files) == 4 and files[-1].endswith("grid.png")
    assert all((out1 / f).read_bytes() == (out2 / f).read_bytes() for f in files), "same seed, same images"
    bad = _cli("gansvc.generate", "--model", "acgan-m", "--registry", reg, "--labels", "shape=hexagon", str(out1))
    assert bad.returncode == 2 and "hexagon" in bad.stderr and "circle" in bad.stderr
    bad = _cli("gansvc.generate", "--model", "acgan-m", "--registry", reg, "--labels", "size=big", str(out1))
    assert bad.returncode == 2 and "size" in bad.stderr and "Traceback" not in bad.stderr
    deleted = _cli("gansvc.registry", "delete", "acgan-m", "--registry", reg)
    assert deleted.returncode == 0 and list_entries(reg) == []
    assert not any((Path(reg) / "models").rglob("*.pt")), "delete removes the stored weights"
