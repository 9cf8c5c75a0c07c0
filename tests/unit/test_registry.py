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
    (run / "best" / META_FILE).write_text(
        json.dumps({"step": 10, "metric": "swd", "value": 1.0, "metrics": {"swd": 1.0}})
    )
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
    with pytest.raises(RegistryError, match=r"no checkpoint of .* has metric 'fid'"):
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


def _clis(*commands: tuple[str, ...]) -> list[subprocess.CompletedProcess[str]]:
    """`_cli(*command)` for each command, run at the same time (independent processes that only read the registry:
    most of each one's time is its interpreter start and imports, which overlap)."""
    procs = [
        subprocess.Popen([sys.executable, "-m", *cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for cmd in commands
    ]
    results = []
    for cmd, proc in zip(commands, procs, strict=True):
        try:
            out, err = proc.communicate(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        results.append(subprocess.CompletedProcess([sys.executable, "-m", *cmd], proc.returncode, out, err))
    return results


def test_cli_generate_is_seeded_and_checks_labels(tmp_path: Path) -> None:
    reg = str(tmp_path / "registry")
    promote(str(_run(tmp_path)), "acgan-m", root=reg)
    out1, out2 = tmp_path / "o1", tmp_path / "o2"
    generate = ("gansvc.generate", "--model", "acgan-m", "--registry", reg)
    seeded = ("--n", "3", "--seed", "5", "--labels", "shape=circle", "--grid")
    listed, shown, *made, bad_value, bad_name = _clis(
        ("gansvc.registry", "list", "--registry", reg),
        ("gansvc.registry", "--registry", reg, "show", "acgan-m"),
        *[(*generate, *seeded, str(out)) for out in (out1, out2)],
        (*generate, "--labels", "shape=hexagon", str(tmp_path / "o3")),
        (*generate, "--labels", "size=big", str(tmp_path / "o4")),
    )
    assert listed.returncode == 0 and "acgan-m" in listed.stdout and "16x16x3" in listed.stdout
    shown = json.loads(shown.stdout)
    assert shown["data_spec"]["attributes"] == {"shape": ["circle", "square"], "color": ["blue", "red"]}
    for r in made:
        assert r.returncode == 0, r.stderr
    files = sorted(p.name for p in out1.iterdir())
    assert len(files) == 4 and files[-1].endswith("grid.png")
    assert all((out1 / f).read_bytes() == (out2 / f).read_bytes() for f in files), "same seed, same images"
    assert bad_value.returncode == 2 and "hexagon" in bad_value.stderr and "circle" in bad_value.stderr
    assert bad_name.returncode == 2 and "size" in bad_name.stderr and "Traceback" not in bad_name.stderr
    deleted = _cli("gansvc.registry", "delete", "acgan-m", "--registry", reg)
    assert deleted.returncode == 0 and list_entries(reg) == []
    assert not any((Path(reg) / "models").rglob("*.pt")), "delete removes the stored weights"


# ------------------------------------------------------------------------------------------- the one name rule (#11)

BAD_NAMES = ["../../runs/r1/x", "..", ".hidden", "a/b", "a\\b", "Upper", "", "x\n", "-lead", "a" * 65, "sp ace"]


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_every_registry_entry_point_refuses_bad_names(tmp_path: Path, bad: str) -> None:
    """A name is a storage key: every function a name enters by checks it against NAME_RULE before any I/O."""
    from gansvc import registry
    from gansvc.registry import import_checkpoint

    reg = str(tmp_path / "registry")
    run = _run(tmp_path)
    model_bytes = (run / "checkpoint-00000010" / MODEL_FILE).read_bytes()
    calls = {
        "get_entry": lambda: registry.get_entry(bad, reg),
        "load_model": lambda: registry.load_model(bad, reg),
        "delete": lambda: registry.delete(bad, reg),
        "promote": lambda: registry.promote(str(run), bad, root=reg),
        "register": lambda: registry.register(bad, model_bytes, "test", {}, root=reg),
        "import": lambda: import_checkpoint("cyclegan-official", str(tmp_path / "missing.pth"), bad, root=reg),
    }
    for what, call in calls.items():
        with pytest.raises(RegistryError, match=r"invalid model name .*\[a-z0-9\]\[a-z0-9._-\]\{0,63\}"):
            call()
        assert not (tmp_path / "registry").exists() or not any((tmp_path / "registry").rglob("*.pt")), what


def test_delete_cannot_escape_the_registry_root(tmp_path: Path) -> None:
    """issue 13 #11: `registry delete ../../runs/r1/x` deleted RUNS/r1/x.json and RUNS/r1/x/* on local storage."""
    from gansvc.registry import main as registry_main

    reg = tmp_path / "store" / "registry"
    (reg / "entries").mkdir(parents=True)
    victim = tmp_path / "store" / "runs" / "r1"
    (victim / "x").mkdir(parents=True)
    (victim / "x.json").write_text(json.dumps({"name": "x"}))
    (victim / "x" / "weights.pt").write_bytes(b"precious")
    for argv in (["delete", "../../runs/r1/x"], ["show", "../../runs/r1/x"]):
        assert registry_main(["--registry", str(reg), *argv]) == 2
    assert (victim / "x.json").exists() and (victim / "x" / "weights.pt").read_bytes() == b"precious"
    r = _cli("gansvc.registry", "delete", "../../runs/r1/x", "--registry", str(reg))
    assert r.returncode == 2 and "[a-z0-9][a-z0-9._-]{0,63}" in r.stderr and "Traceback" not in r.stderr
    assert (victim / "x.json").exists()


def test_name_rule_accepts_the_documented_names(tmp_path: Path) -> None:
    from gansvc.registry import NAME_PATTERN, check_name

    for good in ("a", "0", "shapes-dcgan", "horse2zebra", "v1.2_final", "a" * 64):
        assert check_name(good) == good
    import re

    assert re.match(NAME_PATTERN, "a" * 64) and not re.match(NAME_PATTERN, "a" * 65)


def test_promote_skips_a_torn_best_and_a_damaged_latest(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """best/ counts only when meta.json names a model whose hash matches (#16: meta is the commit point); a latest
    checkpoint whose model.pt no longer matches the hash in its meta.json is skipped with a warning."""
    import hashlib

    from gansvc.checkpoint import read_best, write_best

    run, reg = _run(tmp_path), str(tmp_path / "registry")
    good = (run / "checkpoint-00000020" / MODEL_FILE).read_bytes()
    committed = write_best(str(run), good, {"step": 20, "metric": "swd", "value": 3.0, "metrics": {"swd": 3.0}})
    assert read_best(str(run))[0]["model"] == committed["model"]
    # a torn write: the model object is replaced but meta.json (the commit point) still names the old hash
    (run / "best" / committed["model"]).write_bytes(good[: len(good) // 2])
    assert read_best(str(run)) is None
    entry = promote(str(run), "after-torn-best", root=reg)
    assert entry["step"] == 30, "an uncommitted best is ignored: the latest checkpoint is taken"
    # a damaged newest checkpoint whose meta.json records the model hash: the previous one is promoted
    meta = json.loads((run / "checkpoint-00000030" / META_FILE).read_text())
    meta["files"] = {MODEL_FILE: hashlib.sha256(b"something else").hexdigest()}
    (run / "checkpoint-00000030" / META_FILE).write_text(json.dumps(meta))
    entry = promote(str(run), "after-damage", root=reg)
    assert entry["step"] == 20 and "damaged" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------- start-up time (issue 16)

LIGHT_SCRIPT = """
import json, sys
import gansvc.registry as r
codes = [r.main(["list", "--registry", sys.argv[1]]), r.main(["show", "nope", "--registry", sys.argv[1]])]
for words in (["list", "--help"], ["export", "--help"]):
    try:
        r.main(words)
    except SystemExit:
        pass
print(json.dumps({"codes": codes, "heavy": sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "ray"))}))
"""


@pytest.mark.timeout(120)
def test_registry_listing_commands_do_not_import_torch(tmp_path: Path) -> None:
    """issue 16 #10: `python -m gansvc.registry list` took 3-4 s because the module imported checkpoint -> families ->
    torch. Importing the registry and running list / show / --help in a fresh interpreter imports neither torch nor
    Ray (the model-loading paths import them inside their functions); nor does `export --help` (issue 17: the
    exporters are imported by the export command itself)."""
    out = subprocess.run(
        [sys.executable, "-c", LIGHT_SCRIPT, str(tmp_path / "empty-registry")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["codes"] == [0, 2]  # an empty listing; an unknown name is an error, as before
    assert result["heavy"] == [], f"the listing commands imported {result['heavy'][:5]}"


def test_import_formats_come_from_the_family_declarations() -> None:
    """The registry's import command lists and accepts the formats the families declare (FamilySpec.importers), with
    the --b2a help each declares; registry.py names no format."""
    from gansvc.families import import_formats
    from gansvc.registry import _import_formats

    declared = {fmt: (spec.name, imp.b2a) for fmt, (spec, imp) in import_formats().items()}
    assert declared == {
        "cyclegan-official": ("cyclegan", "the B->A generator file (G_B)"),
        "ugatit-pytorch": ("ugatit", None),
    }
    assert _import_formats() == {fmt: b2a for fmt, (_, b2a) in declared.items()}
    out = subprocess.run(
        [sys.executable, "-m", "gansvc.registry", "import", "--help"], capture_output=True, text=True, timeout=120
    )
    assert "{cyclegan-official,ugatit-pytorch}" in out.stdout and "cyclegan-official: the B->A generator" in out.stdout
    source = (Path(__file__).resolve().parents[2] / "gansvc" / "registry.py").read_text()
    assert "cyclegan" not in source and "ugatit" not in source
