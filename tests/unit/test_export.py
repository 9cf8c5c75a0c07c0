"""Export for use outside Ray (`python -m gansvc.registry export NAME --format onnx|torchscript OUT`): every family's
smoke model, registered with random weights, exports to ONNX (run with onnxruntime) and TorchScript (torch.jit.load),
and the exported graphs match the registry model's own generate / translate within 1e-4 at the trace batch and size,
another batch size and (translation) other image sizes, which proves the dynamic axes."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from gansvc.checkpoint import inference_payload
from gansvc.data.spec import DataSpec
from gansvc.export import example_inputs
from gansvc.families import FAMILIES
from gansvc.registry import load_model, register
from gansvc.registry import main as registry_main

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TOL = 1e-4
ATTRS = {"shape": ("circle", "square", "triangle"), "color": ("blue", "red")}


def _data(family: str) -> DataSpec:
    spec = FAMILIES[family]
    if spec.task == "generate":
        return DataSpec("single", 16, 16, 3, ATTRS if spec.conditional else {})
    return DataSpec("unpaired", 16, 16, 3, {}, num_classes=4)


def _register(root: Path | str, family: str, name: str, extra: dict[str, Any] | None = None) -> None:
    """A smoke model of `family` with random (non-trivial) weights, registered under NAME in a local registry."""
    spec = FAMILIES[family]
    cfg = spec.make_config("smoke")
    data = _data(family)
    torch.manual_seed(0)
    state = spec.build(cfg, data)
    with torch.no_grad():  # random affine/bias parameters too (norm layers start at 1/0)
        for net in state.inference_nets().values():
            for p in net.parameters():
                p.add_(torch.randn_like(p) * 0.05)
    buf = io.BytesIO()
    torch.save(inference_payload(spec, cfg, data, state, extra), buf)
    register(name, buf.getvalue(), f"test:{family}", {}, root=str(root))


def _reference(name: str, root: Path | str, stem: str, inputs: tuple[torch.Tensor, ...]) -> list[np.ndarray]:
    """The registry model's outputs: the family's generate / translate, loaded as the CLIs load it."""
    _, model = load_model(name, str(root))
    with torch.no_grad():
        if model.spec.task == "generate":
            assert model.spec.generate is not None
            labels = inputs[1] if len(inputs) > 1 else None
            return [model.spec.generate(model.nets, inputs[0], labels, model.config).numpy()]
        assert model.spec.translate is not None
        out = model.spec.translate(model.nets, inputs[0], stem, model.config)  # type: ignore[arg-type]
        keys = ("image", *(k for k in out if k != "image"))
        return [out[k].numpy() for k in keys]


def _cases(name: str, root: Path) -> list[tuple[int, tuple[int, int] | None]]:
    """(batch, image size) pairs to compare: the trace's (2, odd size), another batch, other sizes (translation)."""
    _, model = load_model(name, str(root))
    if model.spec.task == "generate":
        return [(2, None), (5, None)]
    return [(2, None), (3, (20, 28)), (1, (23, 18))]


def _diff(got: list[np.ndarray], want: list[np.ndarray]) -> float:
    assert len(got) == len(want)
    worst = 0.0
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape and g.dtype == w.dtype, (g.shape, w.shape, g.dtype, w.dtype)
        if np.issubdtype(w.dtype, np.integer):
            assert np.array_equal(g, w), "integer outputs (class ids) differ"
        else:
            worst = max(worst, float(np.abs(g.astype(np.float64) - w.astype(np.float64)).max()))
    return worst


@pytest.mark.timeout(180)
@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_matches_the_registry_model(tmp_path: Path, family: str, fmt: str) -> None:
    """Each graph of the export equals the family's function on the registry model (max abs diff <= 1e-4), at the
    trace inputs, a second batch size and, for translation, two other image sizes (one not a multiple of 4)."""
    root, out, name = tmp_path / "reg", tmp_path / "out", f"m-{family}"
    _register(root, family, name)
    assert registry_main(["export", name, str(out), "--format", fmt, "--registry", str(root)]) == 0
    manifest = json.loads((out / "export.json").read_text())
    spec = FAMILIES[family]
    expected = ["generate"] if spec.task == "generate" else ["a2b", "b2a"]
    assert sorted(manifest["graphs"]) == sorted(expected)
    assert manifest["model"]["family"] == family and manifest["model"]["version"] == 1
    assert manifest["value_range"] == [-1.0, 1.0] and manifest["format"] == fmt
    if spec.conditional:
        assert manifest["labels"]["attributes"] == {k: list(v) for k, v in ATTRS.items()}
    _, model = load_model(name, str(root))
    worst = 0.0
    for stem, graph in manifest["graphs"].items():
        path = out / graph["file"]
        in_names = [i["name"] for i in graph["inputs"]]
        assert graph["outputs"][0]["name"] == "image"
        if fmt == "onnx":
            import onnxruntime as ort

            sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            assert [i.name for i in sess.get_inputs()] == in_names
        else:
            loaded = torch.jit.load(str(path))
        for batch, size in _cases(name, root):
            inputs = example_inputs(model, batch, size, seed=batch)
            want = _reference(name, root, stem, inputs)
            if fmt == "onnx":
                got = sess.run(None, {n: t.numpy() for n, t in zip(in_names, inputs, strict=True)})
            else:
                with torch.no_grad():
                    res = loaded(*inputs)
                got = [t.numpy() for t in (res if isinstance(res, tuple) else (res,))]
            worst = max(worst, _diff([np.asarray(g) for g in got], want))
    assert worst <= TOL, f"{family} {fmt}: max abs difference {worst:.3g} > {TOL}"
    print(f"{family} {fmt}: max abs diff {worst:.2e}")


@pytest.mark.timeout(120)
def test_export_exports_only_the_directions_the_model_has(tmp_path: Path) -> None:
    """A translation model that has a2b only (imported without its other generator) exports a2b only; each
    translation family's declared outputs follow its translate (heatmap / mask where it returns them)."""
    family = next(s.name for s in FAMILIES.values() if s.task == "translate")
    root, out = tmp_path / "reg", tmp_path / "out"
    _register(root, family, "one-way", {"directions": ["a2b"]})
    assert registry_main(["export", "one-way", str(out), "--format", "onnx", "--registry", str(root)]) == 0
    manifest = json.loads((out / "export.json").read_text())
    assert list(manifest["graphs"]) == ["a2b"] and sorted(p.name for p in out.iterdir()) == ["a2b.onnx", "export.json"]


@pytest.mark.timeout(180)
def test_export_to_s3(tmp_path: Path, s3_prefix: str) -> None:
    """A registry in S3 exported to an s3:// OUT (the embedded S3 server): the files and the manifest land there, the
    graph read back from S3 runs in onnxruntime and equals the model; a second export without --overwrite is
    refused, as for a local folder."""
    import onnxruntime as ort

    from gansvc import storage

    family = next(s.name for s in FAMILIES.values() if s.task == "generate" and s.conditional)
    registry, out = f"{s3_prefix}/registry", f"{s3_prefix}/exports/m"
    _register(registry, family, "m")
    assert registry_main(["export", "m", out, "--format", "onnx", "--registry", registry]) == 0
    manifest = storage.read_json(f"{out}/export.json")
    assert sorted(o.rel for o in storage.list_objects(out)) == ["export.json", manifest["graphs"]["generate"]["file"]]
    graph = storage.read_bytes(f"{out}/{manifest['graphs']['generate']['file']}")
    sess = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    _, model = load_model("m", registry)
    inputs = example_inputs(model, 3, None, seed=3)
    got = sess.run(None, {i.name: t.numpy() for i, t in zip(sess.get_inputs(), inputs, strict=True)})
    assert _diff([np.asarray(g) for g in got], _reference("m", registry, "generate", inputs)) <= TOL
    assert registry_main(["export", "m", out, "--format", "onnx", "--registry", registry]) == 2


@pytest.mark.timeout(120)
def test_export_refusals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Clear refusals, exit 2 with `error: ...`: an unknown model (as a command line, where the registry module is
    __main__), an OUT that already holds an export (without --overwrite), an OUT that is a file, an unknown format;
    --overwrite replaces."""
    root, out = tmp_path / "reg", tmp_path / "out"
    family = sorted(FAMILIES)[0]
    _register(root, family, "m")
    missing = subprocess.run(
        [
            sys.executable,
            "-m",
            "gansvc.registry",
            "--registry",
            str(root),
            "export",
            "nope",
            str(out),
            "--format",
            "onnx",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 2 and missing.stderr.startswith("error: no model named 'nope'"), missing.stderr

    def cli(*words: str) -> tuple[int, str]:
        code = registry_main(["export", *words, "--registry", str(root)])
        return code, capsys.readouterr().err

    assert cli("m", str(out), "--format", "torchscript") == (0, "")
    code, err = cli("m", str(out), "--format", "onnx")
    assert code == 2 and err.startswith("error: ") and "already holds an export" in err and "--overwrite" in err
    assert cli("m", str(out), "--format", "onnx", "--overwrite") == (0, "")
    assert json.loads((out / "export.json").read_text())["format"] == "onnx"
    (tmp_path / "f").write_text("x")
    code, err = cli("m", str(tmp_path / "f"), "--format", "onnx")
    assert code == 2 and "OUT must be a folder" in err, err
    with pytest.raises(SystemExit) as exc:
        cli("m", str(out), "--format", "tflite")
    assert exc.value.code == 2 and "invalid choice: 'tflite'" in capsys.readouterr().err


@pytest.mark.timeout(60)
def test_a_family_without_an_inference_function_is_refused(tmp_path: Path) -> None:
    """What cannot be exported is refused with the reason (here: a spec whose task names no function to export)."""
    from dataclasses import replace

    from gansvc.export import ExportError, export

    family = sorted(FAMILIES)[0]
    _register(tmp_path / "reg", family, "m")
    entry, model = load_model("m", str(tmp_path / "reg"))
    model.spec = replace(model.spec, generate=None, translate=None)
    with pytest.raises(ExportError, match="nothing to export"):
        export(entry, model, "onnx", str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
