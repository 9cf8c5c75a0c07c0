"""Importing official checkpoints (`gansvc.importers`, `python -m gansvc.registry import`) and offline translation
(`python -m gansvc.translate`).

Official-format files are written here with torch.save: a pytorch-CycleGAN-and-pix2pix `latest_net_G_A.pth` (a plain
ResnetGenerator state dict, checked against the key layout written out below, plus the InstanceNorm running stats of
pre-0.4 files) and a UGATIT-pytorch `params_XXXXXXX.pt` (genA2B, genB2A, disGA, disGB, disLA, disLB state dicts).
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gansvc import importers, registry, storage
from gansvc.checkpoint import CheckpointError, inference_payload
from gansvc.data.spec import DataSpec
from gansvc.families import dcgan
from gansvc.nn.resnet import ResnetGenerator
from gansvc.nn.ugatit import UgatitDiscriminator, UgatitGenerator
from gansvc.registry import RegistryError, get_entry, list_entries, load_model, register
from gansvc.registry import main as registry_main
from gansvc.translate import main as translate_main
from tests.unit.families.test_official_compat import official_ugatit_d, official_ugatit_g, random_state

REPO = Path(__file__).resolve().parents[3]
W, H = 36, 20  # non-square test image (PIL size order: width, height)

# pytorch-CycleGAN-and-pix2pix ResnetGenerator(3, 3, ngf=8, norm='instance', n_blocks=2), written out from its
# models/networks.py: model = [pad, conv7, IN, relu] (0-3), 2 x [conv3/2, IN, relu] (4-9), 2 ResnetBlocks (10, 11),
# 2 x [convT3/2, IN, relu] (12-17), [pad, conv7, tanh] (18-20); convs have biases (norm is InstanceNorm).
OFFICIAL_G_NGF8_2BLOCKS = {
    "model.1.weight": (8, 3, 7, 7),
    "model.1.bias": (8,),
    "model.4.weight": (16, 8, 3, 3),
    "model.4.bias": (16,),
    "model.7.weight": (32, 16, 3, 3),
    "model.7.bias": (32,),
    "model.10.conv_block.1.weight": (32, 32, 3, 3),
    "model.10.conv_block.1.bias": (32,),
    "model.10.conv_block.5.weight": (32, 32, 3, 3),
    "model.10.conv_block.5.bias": (32,),
    "model.11.conv_block.1.weight": (32, 32, 3, 3),
    "model.11.conv_block.1.bias": (32,),
    "model.11.conv_block.5.weight": (32, 32, 3, 3),
    "model.11.conv_block.5.bias": (32,),
    "model.12.weight": (32, 16, 3, 3),
    "model.12.bias": (16,),
    "model.15.weight": (16, 8, 3, 3),
    "model.15.bias": (8,),
    "model.19.weight": (3, 8, 7, 7),
    "model.19.bias": (3,),
}
# where its InstanceNorm2d layers sit (old files saved their running_mean / running_var)
OFFICIAL_G_NORMS = {
    "model.2": 8,
    "model.5": 16,
    "model.8": 32,
    "model.10.conv_block.2": 32,
    "model.10.conv_block.6": 32,
    "model.11.conv_block.2": 32,
    "model.11.conv_block.6": 32,
    "model.13": 16,
    "model.16": 8,
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def official_cyclegan_g(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    sd = {k: v.normal_(0.0, 0.05) for k, v in ResnetGenerator(3, 3, 8, 2).state_dict().items()}
    assert {k: tuple(v.shape) for k, v in sd.items()} == OFFICIAL_G_NGF8_2BLOCKS
    for prefix, c in OFFICIAL_G_NORMS.items():  # pre-PyTorch-0.4 files
        sd[f"{prefix}.running_mean"] = torch.zeros(c)
        sd[f"{prefix}.running_var"] = torch.ones(c)
    return sd


def ugatit_params(light: bool, seed: int) -> dict[str, dict[str, torch.Tensor]]:
    torch.manual_seed(seed)
    gens = {k: UgatitGenerator(3, 3, 8, 2, 32, light) for k in ("genA2B", "genB2A")}
    dis = {k: UgatitDiscriminator(3, 8, 4 if k.startswith("disG") else 3) for k in ("disGA", "disGB", "disLA", "disLB")}
    params = {k: {n: t + 0.05 * torch.randn_like(t) for n, t in g.state_dict().items()} for k, g in gens.items()}
    return params | {k: d.state_dict() for k, d in dis.items()}


def save(obj: object, path: Path) -> str:
    torch.save(obj, path)
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("official")
    out = {
        "G_A": save(official_cyclegan_g(1), d / "latest_net_G_A.pth"),
        "G_B": save(official_cyclegan_g(2), d / "latest_net_G_B.pth"),
        "ugatit": save(ugatit_params(True, 3), d / "params_0001000.pt"),
        "ugatit_full": save(ugatit_params(False, 4), d / "params_full.pt"),
    }
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8), "RGB").save(d / "in.png")
    out["png"] = str(d / "in.png")
    return out


@pytest.fixture(scope="module")
def reg(tmp_path_factory: pytest.TempPathFactory, files: dict[str, str]) -> str:
    """A local registry with cg (both generators), cg1 (G_A only) and ug (light ugatit)."""
    root = str(tmp_path_factory.mktemp("registry"))
    registry.import_checkpoint("cyclegan-official", files["G_A"], "cg", b2a=files["G_B"], root=root)
    registry.import_checkpoint("cyclegan-official", files["G_A"], "cg1", root=root)
    registry.import_checkpoint("ugatit-pytorch", files["ugatit"], "ug", root=root)
    return root


def run_cli(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=REPO, env=env, timeout=120
    )


def png(path: str | Path) -> Image.Image:
    with Image.open(path) as img:
        img.load()
        return img


# ----------------------------------------------------------------------------------------------------------- import


def test_import_infers_architecture_and_loads_weights(reg: str, files: dict[str, str]) -> None:
    cg = get_entry("cg", reg)
    assert (cg["family"], cg["task"], cg["directions"], cg["import_format"]) == (
        "cyclegan",
        "translate",
        ["a2b", "b2a"],
        "cyclegan-official",
    )
    assert (cg["config"]["ngf"], cg["config"]["n_blocks"], cg["config"]["dropout"]) == (8, 2, False)
    assert cg["data_spec"] == {"layout": "unpaired", "height": 256, "width": 256, "channels": 3, "attributes": {}}
    assert get_entry("cg1", reg)["directions"] == ["a2b"]
    _, model = load_model("cg", reg)
    assert model.extra["directions"] == ["a2b", "b2a"]
    for net, key in (("G_A", "G_A"), ("G_B", "G_B")):
        official = torch.load(files[key], weights_only=True)
        loaded = model.nets[net].state_dict()
        assert set(loaded) == set(OFFICIAL_G_NGF8_2BLOCKS)
        assert all(torch.equal(loaded[k], official[k]) for k in loaded)
    _, one_way = load_model("cg1", reg)
    assert all(not t.any() for t in one_way.nets["G_B"].state_dict().values())  # never a plausible b2a

    ug = get_entry("ug", reg)
    assert ug["family"] == "ugatit" and ug["directions"] == ["a2b", "b2a"]
    c = ug["config"]
    assert (c["ngf"], c["ndf"], c["n_blocks"], c["light"], c["n_dis_global"], c["n_dis_local"]) == (8, 8, 2, True, 4, 3)
    assert (ug["data_spec"]["height"], ug["data_spec"]["channels"]) == (256, 3)  # light: size-free, UGATIT default
    _, ug_model = load_model("ug", reg)
    official = torch.load(files["ugatit"], weights_only=True)["genB2A"]
    assert all(torch.equal(v, official[k]) for k, v in ug_model.nets["genB2A"].state_dict().items())


def test_import_full_ugatit_reads_image_size(tmp_path: Path, files: dict[str, str]) -> None:
    entry = registry.import_checkpoint("ugatit-pytorch", files["ugatit_full"], "ugfull", root=str(tmp_path))
    assert entry["config"]["light"] is False
    assert (entry["data_spec"]["height"], entry["data_spec"]["width"]) == (32, 32)
    _, model = load_model("ugfull", str(tmp_path))
    out = model.spec.translate(model.nets, torch.zeros(1, 3, H, W), "b2a", model.config)
    assert out["image"].shape == (1, 3, H, W) and out["heatmap"].shape == (1, 1, H, W)


def test_wrong_format_files_are_rejected(
    tmp_path: Path, files: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    root = str(tmp_path / "reg")
    bad = {
        "random": save({"foo": torch.zeros(2), "bar": torch.ones(3)}, tmp_path / "random.pt"),
        "list": save([torch.zeros(2)], tmp_path / "list.pt"),
        "text": str(tmp_path / "notes.pt"),
        "truncated": str(tmp_path / "truncated.pth"),
    }
    Path(bad["text"]).write_text("not a torch file\n")
    raw = Path(files["G_A"]).read_bytes()
    Path(bad["truncated"]).write_bytes(raw[: len(raw) // 2])
    small = official_cyclegan_g(5)
    small["model.4.weight"] = torch.zeros(16, 8, 5, 5)  # right keys, wrong kernel
    bad["shape"] = save(small, tmp_path / "shape.pth")
    bad["module"] = save(ResnetGenerator(3, 3, 4, 1), tmp_path / "module.pth")  # a pickled nn.Module, not weights
    bad["no_b2a"] = save({"genA2B": ugatit_params(True, 6)["genA2B"], "genB2A": {}}, tmp_path / "params_half.pt")

    cases = [
        ("cyclegan-official", files["ugatit"], r"not a cyclegan-official generator file.*ugatit-pytorch params file"),
        ("ugatit-pytorch", files["G_A"], r"not a ugatit-pytorch params file.*cyclegan-official generator state dict"),
        ("cyclegan-official", bad["random"], r"not a cyclegan-official .*model\.1\.weight.*foo, bar"),
        ("ugatit-pytorch", bad["random"], r"not a ugatit-pytorch params file.*keys foo, bar"),
        ("cyclegan-official", bad["list"], r"not a cyclegan-official .*found a list"),
        ("cyclegan-official", bad["text"], r"not a cyclegan-official .*not a readable torch file"),
        ("cyclegan-official", bad["truncated"], r"not a cyclegan-official .*not a readable torch file"),
        ("ugatit-pytorch", bad["truncated"], r"not a ugatit-pytorch .*not a readable torch file"),
        ("cyclegan-official", bad["module"], r"not a cyclegan-official .*objects other than tensors"),
        ("ugatit-pytorch", bad["no_b2a"], r"not a ugatit-pytorch params file.*genB2A entry is an empty dict"),
        ("cyclegan-official", bad["shape"], r"G_A weights do not fit the official ResnetGenerator layout.*model\.4"),
        ("cyclegan-official", str(tmp_path / "missing.pth"), r"cannot read .*missing\.pth.*no such file"),
        ("pix2pix", files["G_A"], r"unknown import format 'pix2pix'.*cyclegan-official, ugatit-pytorch"),
    ]
    for fmt, path, pattern in cases:
        with pytest.raises(CheckpointError, match=pattern):
            registry.import_checkpoint(fmt, path, "bad", root=root)
    other = save(ResnetGenerator(3, 3, 4, 2).state_dict(), tmp_path / "ngf4.pth")
    with pytest.raises(CheckpointError, match="different architectures"):
        registry.import_checkpoint("cyclegan-official", files["G_A"], "bad", b2a=other, root=root)
    with pytest.raises(RegistryError, match="invalid model name"):
        registry.import_checkpoint("cyclegan-official", files["G_A"], "Bad Name", root=root)
    with pytest.raises(
        CheckpointError, match=r"^--b2a is for cyclegan-official; a ugatit-pytorch params file holds both generators$"
    ):
        registry.import_checkpoint("ugatit-pytorch", files["ugatit"], "bad", b2a=files["G_B"], root=root)
    assert list_entries(root) == []  # nothing half-registered

    capsys.readouterr()  # the registry CLI (in-process: `python -m gansvc.registry` runs the same main)
    argv = ["--registry", root, "import", "--format", "cyclegan-official", files["ugatit"], "--name", "bad"]
    assert registry_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert "cyclegan-official" in err and "ugatit-pytorch" in err


# -------------------------------------------------------------------------------------------------------- translate


def test_translate_cyclegan_cli(reg: str, files: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "out.png"
    res = run_cli("gansvc.translate", "--model", "cg", "--direction", "a2b", "--registry", reg, files["png"], str(out))
    assert res.returncode == 0, res.stderr
    img = png(out)
    assert (img.size, img.mode) == ((W, H), "RGB")
    # the same translation, computed here from the official weights and the official pixel convention
    g = ResnetGenerator(3, 3, 8, 2)
    g.load_state_dict({k: v for k, v in torch.load(files["G_A"], weights_only=True).items() if "running" not in k})
    x = torch.from_numpy(np.asarray(png(files["png"]), dtype=np.float32)).permute(2, 0, 1)[None] / 255 * 2 - 1
    with torch.no_grad():
        want = ((g.eval()(x)[0].permute(1, 2, 0) + 1) / 2 * 255).round().clamp(0, 255).numpy()
    assert np.abs(np.asarray(img, dtype=np.float32) - want).max() <= 1.0

    # folder -> folder (in-process main), b2a; grayscale and RGBA inputs with odd sizes; names kept, PNG out
    src, dst = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    Image.new("L", (W + 1, H + 3), 128).save(src / "gray.png")
    Image.new("RGBA", (H, W), (10, 200, 30, 100)).save(src / "rgba.png")
    Image.new("RGB", (W, H)).save(src / "photo.jpg")
    (src / "notes.txt").write_text("not an image")
    assert translate_main(["--model", "cg", "--direction", "b2a", "--registry", reg, str(src), str(dst)]) == 0
    assert sorted(p.name for p in dst.iterdir()) == ["gray.png", "photo.png", "rgba.png"]
    for name, size in (("gray.png", (W + 1, H + 3)), ("rgba.png", (H, W)), ("photo.png", (W, H))):
        assert (png(dst / name).size, png(dst / name).mode) == (size, "RGB")


def test_translate_ugatit_heatmap_cli(reg: str, files: dict[str, str], tmp_path: Path) -> None:
    out, heat = tmp_path / "out.png", tmp_path / "heat.png"
    res = run_cli(
        "gansvc.translate",
        "--model",
        "ug",
        "--direction",
        "b2a",
        "--registry",
        reg,
        "--heatmap",
        str(heat),
        files["png"],
        str(out),
    )
    assert res.returncode == 0, res.stderr
    assert (png(out).size, png(out).mode) == ((W, H), "RGB")
    assert (png(heat).size, png(heat).mode) == ((W, H), "L")


def test_translate_resize_and_errors(
    reg: str, files: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "resized.png"
    assert translate_main(["--model", "ug", "--resize", "24x16", "--registry", reg, files["png"], str(out)]) == 0
    assert png(out).size == (24, 16)
    capsys.readouterr()

    gen_root = str(tmp_path / "genreg")  # a noise -> image model must be refused
    cfg = dcgan.SPEC.make_config("smoke")
    data = DataSpec(layout="single", height=16, width=16, channels=3)
    buf = io.BytesIO()
    torch.save(inference_payload(dcgan.SPEC, cfg, data, dcgan.SPEC.build(cfg, data)), buf)
    register("gen", buf.getvalue(), "test", {}, root=gen_root)

    bad_png = tmp_path / "bad.png"
    bad_png.write_bytes(b"\x89PNG but not really")
    cases = [
        (["--model", "cg1", "--direction", "b2a"], files["png"], "cg1 translates a2b only.*--b2a"),
        (["--model", "cg", "--heatmap", str(tmp_path / "h.png")], files["png"], "no attention heatmap.*drop --heatmap"),
        (["--model", "nope"], files["png"], "no model named 'nope'.*cg, cg1, ug"),
        (["--model", "cg", "--direction", "sideways"], files["png"], "unknown direction 'sideways'"),
        (["--model", "cg"], str(bad_png), "bad.png: not a readable image"),
        (["--model", "cg"], str(tmp_path / "missing.png"), "missing.png: no such file"),
        (["--model", "cg", "--resize", "big"], files["png"], "--resize 'big': write WIDTHxHEIGHT"),
        (["--model", "gen", "--registry", gen_root], files["png"], "gen is a generate model.*gansvc.generate"),
    ]
    for args, src, pattern in cases:
        argv = [*args, *(["--registry", reg] if "--registry" not in args else []), src, str(tmp_path / "x.png")]
        assert translate_main(argv) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("error: "), err
        assert re.search(pattern, err), (pattern, err)
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "h.png").exists()

    # the one-way model still translates a2b
    assert translate_main(["--model", "cg1", "--registry", reg, files["png"], str(out)]) == 0
    assert png(out).size == (W, H)


# ------------------------------------------------------------------------------------------------------ embedded S3


def test_registry_cli_import_and_translate_with_s3(
    stack: object, s3_prefix: str, files: dict[str, str], tmp_path: Path
) -> None:
    root = f"{s3_prefix}/registry"
    ga, gb, img = f"{s3_prefix}/ckpt/latest_net_G_A.pth", f"{s3_prefix}/ckpt/latest_net_G_B.pth", f"{s3_prefix}/in.png"
    for src, dst in ((files["G_A"], ga), (files["G_B"], gb), (files["png"], img)):
        storage.upload_file(src, dst)
    res = run_cli(
        "gansvc.registry",
        "--registry",
        root,
        "import",
        "--format",
        "cyclegan-official",
        ga,
        "--b2a",
        gb,
        "--name",
        "horse2zebra",
    )
    assert res.returncode == 0, res.stderr
    assert "imported" in res.stdout and "horse2zebra v1 (cyclegan)" in res.stdout
    entry = get_entry("horse2zebra", root)
    assert entry["checkpoint"].startswith(f"{root}/models/horse2zebra/v1/")
    assert storage.exists(entry["checkpoint"]) and entry["directions"] == ["a2b", "b2a"]

    out = tmp_path / "zebra.png"  # in-process CLI main: S3 registry, S3 input, local output
    assert translate_main(["--model", "horse2zebra", "--direction", "b2a", "--registry", root, img, str(out)]) == 0
    assert png(out).size == (W, H)


# ------------------------------------------------- discriminators never block a generator (issue 14, part 5)


def _official_ugatit_file(
    path: Path, img_size: int, light: bool, d_layers: tuple[int, int] | None, ndf: int = 4
) -> tuple[str, dict[str, dict[str, torch.Tensor]]]:
    """A UGATIT-pytorch params file in the official key layout (the layouts written out in test_official_compat):
    generators ngf 4, 2 blocks; discriminators of `d_layers` (global, local) or none (a generator-only file)."""
    g = official_ugatit_g(3, 3, 4, 2, img_size, light)
    params = {"genA2B": random_state(g, 1), "genB2A": random_state(g, 2)}
    if d_layers is not None:
        for seed, name in enumerate(("disGA", "disGB", "disLA", "disLB")):
            params[name] = random_state(
                official_ugatit_d(3, ndf, d_layers[0] if name.startswith("disG") else d_layers[1]), 10 + seed
            )
    return save(params, path), params


@pytest.mark.parametrize(
    ("img_size", "light", "d_layers", "config_depths", "noted"),
    [
        (32, False, None, (None, None), ()),  # full generator-only file at 32 px (refused before: default 7-layer D)
        (32, False, (7, 5), (None, 5), ("global",)),  # official depths at 32 px: the 7-layer D cannot run there
        (256, True, (9, 3), (None, 3), ("global",)),  # light: size-free (imported at 256 px); 9 layers needs 384
        (256, True, None, (None, None), ()),  # light generator-only file
    ],
)
def test_ugatit_import_never_refuses_generators_for_a_discriminator_constraint(
    tmp_path: Path,
    img_size: int,
    light: bool,
    d_layers: tuple[int, int] | None,
    config_depths: tuple[int | None, int | None],
    noted: tuple[str, ...],
) -> None:
    file, params = _official_ugatit_file(tmp_path / "params.pt", img_size, light, d_layers)
    imp = importers.read_checkpoint("ugatit-pytorch", file)
    # the file's discriminators are read from their own keys and loaded strictly, whatever the image size
    for name in (n for n in params if n.startswith("dis")):
        assert imp.state.nets[name].n_layers == d_layers[0 if name.startswith("disG") else 1]
        got = imp.state.nets[name].state_dict()
        assert set(got) == set(params[name]) and all(torch.equal(got[k], params[name][k]) for k in got)
    entry = registry.import_checkpoint("ugatit-pytorch", file, "ug", root=str(tmp_path / "reg"))
    assert (entry["config"]["n_dis_global"], entry["config"]["n_dis_local"]) == config_depths
    assert (entry["data_spec"]["height"], entry["config"]["light"]) == (img_size, light)
    if d_layers is None:
        assert "discriminator_layers" not in entry
    else:
        assert entry["discriminator_layers"] == {
            "disGA": d_layers[0],
            "disGB": d_layers[0],
            "disLA": d_layers[1],
            "disLB": d_layers[1],
        }
    notes = entry.get("import_notes", [])
    assert [n.split(" discriminators")[0] for n in notes] == [f"the file's {k}" for k in noted]
    if noted:
        assert f"{d_layers[0]} layers, too deep for {img_size} px images" in notes[0]
        assert "model.n_dis_global is left on auto" in notes[0]
    # the registered model loads (build at its stored size) and translates with the file's generator weights
    _, model = load_model("ug", str(tmp_path / "reg"))
    for name in ("genA2B", "genB2A"):
        loaded = model.nets[name].state_dict()
        assert all(torch.equal(v, params[name][k]) for k, v in loaded.items())
    out = model.spec.translate(model.nets, torch.zeros(1, 3, H, W), "a2b", model.config)
    assert out["image"].shape == (1, 3, H, W)


def test_ugatit_import_still_checks_the_discriminators_it_holds(tmp_path: Path) -> None:
    """Reading depths from the file is no licence to accept a damaged one: its discriminators must be the format."""
    _, params = _official_ugatit_file(tmp_path / "ok.pt", 32, False, (5, 3))
    bad = dict(params)
    bad["disLB"] = {**params["disLB"], "conv1x1.bias": torch.zeros(3)}  # wrong shape
    with pytest.raises(CheckpointError, match=r"the disLB weights do not fit the UGATIT-pytorch layout"):
        importers.read_checkpoint("ugatit-pytorch", save(bad, tmp_path / "bad_shape.pt"))
    bad["disLB"] = {"foo": torch.zeros(1)}
    with pytest.raises(CheckpointError, match=r"its disLB entry: not a UGATIT-pytorch Discriminator state dict"):
        importers.read_checkpoint("ugatit-pytorch", save(bad, tmp_path / "bad_keys.pt"))
    bad["disLB"] = {k: v for k, v in params["disLB"].items() if k != "gap_fc.weight_orig"}
    with pytest.raises(CheckpointError, match=r"disLB weights do not fit"):
        importers.read_checkpoint("ugatit-pytorch", save(bad, tmp_path / "missing_key.pt"))


def test_cyclegan_import_needs_no_discriminator(tmp_path: Path, files: dict[str, str]) -> None:
    """Official CycleGAN generator files hold no discriminator; the model is stored at 256 px, where the family's
    PatchGAN (auto or the 70x70 one) always fits, so the import and the later load never depend on it."""
    entry = registry.import_checkpoint("cyclegan-official", files["G_A"], "cg", root=str(tmp_path))
    assert entry["data_spec"]["height"] == 256
    _, model = load_model("cg", str(tmp_path))
    assert set(model.nets) == {"G_A", "G_B"}
