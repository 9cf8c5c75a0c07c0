"""Latent walks (issue 17 #2): the math of `sampling.walk_inputs` (slerp / lerp ends are exactly the seeds' latents,
slerp keeps the latents' norm, labels switch at the midpoint), the encoded files, and the offline CLI
`python -m gansvc.generate --interpolate` on every generation family of the registry. No Ray.
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from gansvc.checkpoint import inference_payload
from gansvc.data.spec import DataSpec
from gansvc.families import FAMILIES
from gansvc.families.sampling import encode_labels, lerp, sample_latents, slerp, walk_inputs
from gansvc.generate import interpolate_images
from gansvc.imaging import WALK_FORMATS, walk_bytes
from gansvc.registry import register

ATTRS = DataSpec("single", 16, 16, 3, {"hair_color": ("blue", "red", "green"), "eye_color": ("brown", "blue")})
PLAIN = DataSpec("single", 16, 16, 3)
GENERATORS = sorted(n for n, s in FAMILIES.items() if s.task == "generate")


def _register(family: str, root: Path) -> tuple[str, DataSpec]:
    spec = FAMILIES[family]
    data = ATTRS if spec.conditional else PLAIN
    cfg = spec.make_config("smoke")
    torch.manual_seed(0)
    buf = io.BytesIO()
    torch.save(inference_payload(spec, cfg, data, spec.build(cfg, data)), buf)
    name = f"walk-{family}"
    register(name, buf.getvalue(), "test", {}, root=str(root))
    return name, data


@pytest.mark.timeout(30)
@pytest.mark.parametrize("method", ["slerp", "lerp"])
def test_walk_ends_are_the_seeds_latents(method: str) -> None:
    z, y = walk_inputs(64, (3, 11), 7, method)
    assert z.shape == (7, 64) and z.dtype == torch.float32 and y is None
    assert torch.equal(z[0], sample_latents(64, 1, 3)[0]), "first frame: generate's latent for seed A, n=1"
    assert torch.equal(z[-1], sample_latents(64, 1, 11)[0]), "last frame: seed B's"
    again, _ = walk_inputs(64, (3, 11), 7, method)
    assert torch.equal(z, again), "a pure function of its arguments"
    assert not torch.equal(z[3], walk_inputs(64, (3, 11), 7, "lerp" if method == "slerp" else "slerp")[0][3])


@pytest.mark.timeout(30)
def test_slerp_keeps_the_norm_lerp_does_not() -> None:
    a, b = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    t = torch.linspace(0, 1, 5)
    s = slerp(a, b, t)
    assert torch.allclose(s.norm(dim=1), torch.ones(5), atol=1e-6), "unit vectors stay on the unit sphere"
    assert torch.allclose(s[2], torch.tensor([0.5**0.5, 0.5**0.5, 0.0]), atol=1e-6), "the midpoint bisects the angle"
    assert torch.allclose(lerp(a, b, t)[2].norm(), torch.tensor(0.5**0.5), atol=1e-6), "lerp cuts the corner"
    # Gaussian latents in 512 dims are nearly orthogonal with norm ~sqrt(512): slerp's frames keep that norm
    z, _ = walk_inputs(512, (0, 1), 9, "slerp")
    zl, _ = walk_inputs(512, (0, 1), 9, "lerp")
    ends = z[[0, -1]].norm(dim=1)
    assert z.norm(dim=1).min() >= ends.min() * 0.99 and z.norm(dim=1).max() <= ends.max() * 1.01
    assert zl[4].norm() < 0.8 * ends.min(), "lerp's middle latent is off the prior's shell"
    parallel = slerp(a, 2 * a, t)  # sin(angle) = 0: falls back to lerp instead of dividing by zero
    assert torch.isfinite(parallel).all() and torch.allclose(parallel[2], 1.5 * a)


@pytest.mark.timeout(30)
def test_walk_labels_switch_at_the_midpoint() -> None:
    ends = [{"hair_color": "red", "eye_color": "blue"}, {"hair_color": "green"}]
    _, y = walk_inputs(8, (4, 9), 5, "slerp", ATTRS, ends)
    assert y is not None and y.shape == (5, 2) and y.dtype == torch.long
    a = encode_labels(ATTRS, [ends[0]], seed=4)[0]
    b = encode_labels(ATTRS, [ends[1]], seed=9)[0]  # eye_color left out: drawn from seed B, as generate does
    assert [r.tolist() for r in y] == [a.tolist()] * 2 + [b.tolist()] * 3, "t < 0.5 takes A's, t >= 0.5 B's"
    _, drawn = walk_inputs(8, (4, 9), 4, "slerp", ATTRS, None)
    assert drawn is not None and torch.equal(drawn[0], encode_labels(ATTRS, [{}], seed=4)[0])


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"seeds": (1,)}, "two seeds"),
        ({"steps": 1}, "at least 2"),
        ({"method": "cubic"}, "slerp, lerp"),
        ({"data": ATTRS, "labels": [{"hair_color": "pink"}, {}]}, "allowed: blue, red, green"),
        ({"data": ATTRS, "labels": [{}]}, "two mappings"),
        ({"labels": [{"hair_color": "red"}, {}]}, "not label-conditioned"),
    ],
)
def test_walk_bad_input_is_named(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {"cfg": 8, "seeds": (1, 2), "steps": 4, "method": "slerp", **kwargs}
    with pytest.raises(ValueError, match=match):
        walk_inputs(**args)  # type: ignore[arg-type]


@pytest.mark.timeout(30)
def test_walk_files_are_deterministic_animations() -> None:
    frames = torch.linspace(-1, 1, 6).reshape(6, 1, 1, 1).expand(6, 3, 8, 8).contiguous()
    for fmt in WALK_FORMATS:
        data = walk_bytes(frames, fmt)
        assert data == walk_bytes(frames, fmt), f"{fmt}: same frames, same bytes"
        img = Image.open(io.BytesIO(data))
        assert img.format == {"grid": "PNG", "webp": "WEBP", "gif": "GIF"}[fmt]
        if fmt != "grid":
            assert getattr(img, "n_frames", 1) == 6 and img.size == (8, 8), fmt
            img.seek(5)
            assert img.convert("RGB").getpixel((0, 0)) == (255, 255, 255), f"{fmt}: the last frame is the last image"
    with pytest.raises(ValueError, match="grid, webp, gif"):
        walk_bytes(frames, "mp4")


def _clis(*commands: tuple[str, ...]) -> list[subprocess.CompletedProcess[str]]:
    """`python -m gansvc.generate *command` for each command, run at the same time (most of each is its imports)."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "gansvc.generate", *cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for cmd in commands
    ]
    results = []
    for cmd, proc in zip(commands, procs, strict=True):
        try:
            out, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        results.append(subprocess.CompletedProcess(list(cmd), proc.returncode, out, err))
    return results


@pytest.mark.timeout(60)
@pytest.mark.parametrize("family", GENERATORS)
def test_offline_walk_matches_generate(family: str, tmp_path: Path) -> None:
    """Every generation family: the walk's end frames are generate's images for n=1 and each seed (same latents,
    same labels, same nets); frames between differ from both."""
    from gansvc.generate import generate_images

    name, data = _register(family, tmp_path / "reg")
    labels = [{"hair_color": "red"}, {"hair_color": "blue"}] if data.attributes else None
    frames = interpolate_images(name, (5, 6), 4, "slerp", labels, str(tmp_path / "reg"))
    assert frames.shape == (4, 3, 16, 16)
    for end, seed in ((0, 5), (-1, 6)):
        one = generate_images(name, 1, seed, labels[end] if labels else {}, str(tmp_path / "reg"))
        assert torch.allclose(frames[end], one[0], atol=1e-5), (family, end)
    assert not torch.equal(frames[1], frames[0]) and not torch.equal(frames[1], frames[-1]), "the frames move"


@pytest.mark.timeout(120)
def test_cli_interpolate(tmp_path: Path) -> None:
    name, _ = _register("acgan", tmp_path / "reg")
    reg = ("--model", name, "--registry", str(tmp_path / "reg"))
    walk = (*reg, "--interpolate", "3", "4", "--steps", "5", "--labels", "hair_color=red", "--labels", "eye_color=blue")
    x = str(tmp_path / "x.png")
    *runs, mp4, one_step, one_seed, no_out, pink, cubic = _clis(
        *[(*walk, "--out", str(tmp_path / f"w{i}.{ext}")) for i, ext in enumerate(["gif", "gif", "png"])],
        (*walk, "--out", str(tmp_path / "x.mp4")),
        (*reg, "--interpolate", "3", "4", "--steps", "1", "--out", x),
        (*reg, "--interpolate", "3", "--out", x),
        (*reg, "--interpolate", "3", "4"),
        (*reg, "--interpolate", "3", "4", "--labels", "hair_color=pink", "--out", x),
        (*reg, "--interpolate", "3", "4", "--method", "cubic", "--out", x),
    )
    for r in runs:
        assert r.returncode == 0, r.stderr
    assert (tmp_path / "w0.gif").read_bytes() == (tmp_path / "w1.gif").read_bytes(), "same arguments, same bytes"
    assert getattr(Image.open(tmp_path / "w0.gif"), "n_frames", 1) == 5
    labels = [{"hair_color": "red"}, {"eye_color": "blue"}]
    frames = interpolate_images(name, (3, 4), 5, "slerp", labels, str(tmp_path / "reg"))
    assert (tmp_path / "w2.png").read_bytes() == walk_bytes(frames, "grid"), "the CLI writes interpolate_images' frames"
    bad = [
        (mp4, ".png, .webp, .gif"),
        (one_step, "2 to 4096"),
        (one_seed, "expected 2 arguments"),
        (no_out, "needs --out"),
        (pink, "pink"),
        (cubic, "cubic"),
    ]
    for r, text in bad:
        assert r.returncode == 2 and "error:" in r.stderr and text in r.stderr, r.stderr
        assert "Traceback" not in r.stderr
