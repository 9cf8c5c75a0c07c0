"""The image-to-image families `cyclegan` and `ugatit`: configs, shapes, translation in both directions and at any
size, the training step's invariants, losses against hand computations, the image pool, checkpoint exactness, DDP, and
a short learning run on a synthetic unpaired red -> blue-striped set. CPU only, small nets (smoke preset)."""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from pydantic import BaseModel, ConfigDict, ValidationError
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from gansvc import local, losses
from gansvc.data.spec import DataSpec
from gansvc.families import FAMILIES, cycle, cyclegan, fit, semantic_cyclegan, ugatit
from gansvc.families.base import FamilySpec, GanState
from gansvc.families.cyclegan import CycleganConfig
from gansvc.families.training import LinearDecay
from gansvc.families.ugatit import UgatitConfig
from gansvc.nn.patchgan import NLayerDiscriminator
from gansvc.nn.pool import ImagePool
from gansvc.nn.resnet import ResnetBlock, ResnetGenerator, default_n_blocks
from gansvc.nn.ugatit import LIN, AdaLIN, UgatitDiscriminator, UgatitGenerator

SPECS = {"cyclegan": cyclegan.SPEC, "ugatit": ugatit.SPEC}


pytestmark = pytest.mark.usefixtures("one_torch_thread")
DISCRIMINATORS = {"cyclegan": ("D_A", "D_B"), "ugatit": ugatit.DISCRIMINATORS}
GENERATORS = {"cyclegan": ("G_A", "G_B"), "ugatit": ugatit.GENERATORS}


def unpaired(h: int = 16, w: int = 16) -> DataSpec:
    return DataSpec(layout="unpaired", height=h, width=w, channels=3)


def random_batch(n: int = 2, h: int = 16, w: int = 16, seed: int = 0) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"A": torch.rand(n, 3, h, w, generator=g) * 2 - 1, "B": torch.rand(n, 3, h, w, generator=g) * 2 - 1}


def snapshot(nets: list[nn.Module]) -> list[dict[str, Tensor]]:
    return [{k: v.detach().clone() for k, v in net.state_dict().items()} for net in nets]


def same(a: list[dict[str, Tensor]], b: list[dict[str, Tensor]]) -> bool:
    return all(x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x) for x, y in zip(a, b, strict=True))


# --- registry, configs ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SPECS)
def test_registered_strict_configs_and_presets(name: str) -> None:
    spec = FAMILIES[name]
    assert spec is SPECS[name] and spec.task == "translate" and spec.translate is not None
    assert {"report", "smoke"} <= set(spec.presets)
    for preset in spec.presets:
        spec.make_config(preset)
    with pytest.raises(ValidationError):
        spec.make_config(overrides={"no_such_field": 1})
    with pytest.raises(ValidationError):
        spec.make_config(overrides={"lambda_cycle": -1.0})
    with pytest.raises(ValueError, match="unpaired"):
        spec.build(spec.make_config("smoke"), DataSpec("single", 16, 16, 3))


def test_defaults_reproduce_the_reports() -> None:
    c = cyclegan.SPEC.make_config()
    # n_layers_d: 3 (the 70x70 PatchGAN) at the report's 256 px, whether set or auto (gansvc.families.fit)
    assert (c.lambda_cycle, c.lambda_identity, c.pool_size, c.lr, c.betas, c.ngf, c.ndf, c.loss) == (
        10.0,
        0.5,
        50,
        2e-4,
        (0.5, 0.999),
        64,
        64,
        "mse",
    )
    assert fit.patchgan_layers(c.n_layers_d, 256, 256) == 3
    u = ugatit.SPEC.make_config()
    assert (u.lambda_adv, u.lambda_cycle, u.lambda_identity, u.lambda_cam) == (1.0, 10.0, 10.0, 1000.0)
    assert (u.lr, u.weight_decay, u.betas, u.n_blocks) == (1e-4, 1e-4, (0.5, 0.999), 4)
    # discriminator depths are auto (None): at the report's 256 x 256 they are its 7 and 5, and no note is given
    assert (u.n_dis_global, u.n_dis_local) == (None, None)
    assert ugatit.discriminator_depths(u, 256, 256) == (7, 5)
    fitted, notes = ugatit.fit_to_data(u, unpaired(256, 256))
    assert (fitted.n_dis_global, fitted.n_dis_local, notes) == (7, 5, [])
    assert ugatit.SPEC.make_config("report").lambda_cam == 100.0  # report 000 Table 2
    assert default_n_blocks(256, 256) == 9 and default_n_blocks(128, 128) == 6
    # report 000 Table 1: trainable parameters (M) of G and D for CycleGAN and the modified model, at 256 x 256
    with torch.device("meta"):
        n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
        assert round(n(ResnetGenerator(3, 3, c.ngf, default_n_blocks(256, 256))) / 1e6, 3) == 11.378
        assert round(n(NLayerDiscriminator(3, c.ndf, fit.patchgan_layers(c.n_layers_d, 256, 256))) / 1e6, 3) == 2.765
        assert round(n(UgatitGenerator(3, 3, u.ngf, u.n_blocks, 256, u.light)) / 1e6, 2) == 10.59
        assert round(n(UgatitDiscriminator(3, u.ndf, fitted.n_dis_global)) / 1e6, 2) == 53.13


def test_cyclegan_picks_residual_blocks_by_image_size() -> None:
    cfg = cyclegan.SPEC.make_config("smoke", {"n_blocks": None})
    state = cyclegan.SPEC.build(cfg, unpaired(32, 32))
    assert sum(isinstance(m, ResnetBlock) for m in state.nets["G_A"].modules()) == 6


# the report's discriminator depths, set explicitly (the defaults are auto: they fit the images, see below)
REPORT_D = {"cyclegan": {"n_layers_d": 3}, "ugatit": {"n_dis_global": 7, "n_dis_local": 5}}


@pytest.mark.parametrize("name", SPECS)
def test_too_small_images_for_the_discriminator_fail_with_advice(name: str) -> None:
    spec = SPECS[name]
    with pytest.raises(ValueError, match="too small"):
        spec.build(spec.make_config("report", REPORT_D[name]), unpaired(16, 16))


# --- defaults that fit the data (issue 14, part 5) ------------------------------------------------------------------


def _d_depth(net: nn.Module) -> int:
    """Layers of a built U-GAT-IT discriminator, counted from its modules: SN convs in `model` plus the final conv."""
    return sum(isinstance(m, nn.Conv2d) for m in net.model) + 1


UGATIT_AUTO_DEPTHS = [
    ((8, 8), (3, 3)),
    ((16, 16), (4, 3)),
    ((32, 32), (5, 3)),
    ((32, 64), (5, 3)),
    ((64, 64), (6, 4)),
    ((92, 92), (6, 4)),
    ((96, 96), (7, 5)),
    ((256, 256), (7, 5)),
]


@pytest.mark.parametrize(("size", "depths"), UGATIT_AUTO_DEPTHS)
def test_ugatit_auto_discriminator_depths_fit_the_images(size: tuple[int, int], depths: tuple[int, int]) -> None:
    """Auto depths: the report's 7 / 5 from 96 px up (the smallest side a 7-layer D accepts), else the deepest global
    D that gives a patch map and a local D 2 layers shallower (at least 3); each depth really runs at that size."""
    h, w = size
    cfg = ugatit.SPEC.make_config()
    assert ugatit.discriminator_depths(cfg, h, w) == depths
    fitted, notes = ugatit.fit_to_data(cfg, unpaired(h, w))
    assert (fitted.n_dis_global, fitted.n_dis_local) == depths
    assert len(notes) == sum(d != r for d, r in zip(depths, (7, 5), strict=True))
    for n in depths:  # the chosen depths accept the images (and one more global layer would not, below 96 px)
        out, _, _ = UgatitDiscriminator(3, 4, n)(torch.zeros(1, 3, h, w))
        assert out.shape[-1] >= 1
    if depths[0] < 7:
        with pytest.raises(ValueError, match="too small"):
            ugatit.build(ugatit.SPEC.make_config("smoke", {"n_dis_global": depths[0] + 1}), unpaired(h, w))


def test_ugatit_fit_to_data_notes_say_what_changed_and_why() -> None:
    fitted, notes = ugatit.fit_to_data(ugatit.SPEC.make_config(), unpaired(32, 32))
    assert notes == [
        "model.n_dis_global 7 -> 5: a 7-layer global discriminator needs images of at least 96 px; these are 32x32, "
        "and 5 layers is the deepest that fits",
        "model.n_dis_local 5 -> 3: the local discriminator stays 2 layers shallower than the 5-layer global one, as "
        "the report's 7 and 5 (each stride-2 layer doubles the receptive field: the local one judges patches about a "
        "quarter of the global one's field)",
    ]
    # everything but the two depths is the config it was given
    assert fitted.model_dump(exclude={"n_dis_global", "n_dis_local"}) == ugatit.SPEC.make_config().model_dump(
        exclude={"n_dis_global", "n_dis_local"}
    )
    _, small = ugatit.fit_to_data(ugatit.SPEC.make_config(), unpaired(16, 16))
    assert small[1].startswith("model.n_dis_local 5 -> 3: 3 layers is the shallowest U-GAT-IT discriminator")


def test_ugatit_explicit_depths_are_kept() -> None:
    """A depth the user set is never changed: too deep for the images, it keeps the clear error of build."""
    too_deep = ugatit.SPEC.make_config(overrides={"n_dis_global": 7})
    assert ugatit.fit_to_data(too_deep, unpaired(32, 32)) == (too_deep, [])
    with pytest.raises(ValueError, match=r"too small for a 7-layer U-GAT-IT discriminator \(it needs >= 96 px\)"):
        ugatit.build(too_deep, unpaired(32, 32))
    with pytest.raises(ValueError, match="too small for a 4-layer"):
        ugatit.build(ugatit.SPEC.make_config(overrides={"n_dis_local": 4}), unpaired(8, 8))
    # one set, the other auto: only the auto one moves (and gets the note)
    cfg, notes = ugatit.fit_to_data(ugatit.SPEC.make_config(overrides={"n_dis_global": 4}), unpaired(64, 64))
    assert (cfg.n_dis_global, cfg.n_dis_local) == (4, 3) and [n.split(":")[0] for n in notes] == [
        "model.n_dis_local 5 -> 3"
    ]
    cfg, notes = ugatit.fit_to_data(ugatit.SPEC.make_config(overrides={"n_dis_local": 4}), unpaired(32, 32))
    assert (cfg.n_dis_global, cfg.n_dis_local) == (5, 4) and [n.split(":")[0] for n in notes] == [
        "model.n_dis_global 7 -> 5"
    ]
    smoke = ugatit.SPEC.make_config("smoke")  # a preset's depths are set values too
    assert ugatit.fit_to_data(smoke, unpaired(32, 32)) == (smoke, [])
    with pytest.raises(ValueError, match="too small for any U-GAT-IT discriminator"):
        ugatit.build(ugatit.SPEC.make_config(), unpaired(4, 4))


@pytest.mark.timeout(120)
def test_ugatit_default_config_trains_on_32px_images_without_the_hook() -> None:
    """`train ugatit` on 32 px data failed: the report's 7-layer global D cannot run below 96 px. With the default
    config, build alone (tests and workers call it directly) resolves the depths exactly as fit_to_data does, and
    two full training steps of the default-sized nets run."""
    torch.manual_seed(0)
    cfg = ugatit.SPEC.make_config()
    data = unpaired(32, 32)
    state = ugatit.build(cfg, data)
    fitted, _ = ugatit.fit_to_data(cfg, data)
    for name in ugatit.DISCRIMINATORS:
        assert _d_depth(state.nets[name]) == (fitted.n_dis_global if name.startswith("disG") else fitted.n_dis_local)
    from_fitted = ugatit.build(fitted, data)
    assert {k: {n: t.shape for n, t in v.state_dict().items()} for k, v in state.nets.items()} == {
        k: {n: t.shape for n, t in v.state_dict().items()} for k, v in from_fitted.nets.items()
    }
    batch = random_batch(1, 32, 32)
    for step in range(2):
        out = ugatit.train_step(state, batch, step, cfg)
        assert all(math.isfinite(v) for v in out.values())


@pytest.mark.timeout(120)
def test_train_ugatit_dry_run_on_32px_stripes_with_default_flags(
    stack: local.StackState,
    synth_put: Callable[..., str],
    s3_prefix: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`python -m gansvc.train ugatit --dataset <32 px stripes> --max-steps 2 --dry-run`: no other flag. It stopped
    with "too small for a 7-layer U-GAT-IT discriminator"; now the resolved config holds the fitted depths and the
    notes say why."""
    import yaml

    from gansvc.train.__main__ import main as train_main

    uri = synth_put("stripes", f"{s3_prefix}/stripes32", count=8, size=32, seed=0, test_count=2)
    code = train_main(
        ["ugatit", "--dataset", uri, "--storage", s3_prefix, "--name", "u32", "--max-steps", "2", "--dry-run"]
    )
    out, err = capsys.readouterr()
    assert code == 0, err[-2000:]
    resolved = yaml.safe_load(out.split("resolved config:\n", 1)[1].split("\n\n", 1)[0])
    assert (resolved["model"]["n_dis_global"], resolved["model"]["n_dis_local"]) == (5, 3)
    notes = "\n".join(resolved.get("notes") or [])
    assert "model.n_dis_global 7 -> 5: a 7-layer global discriminator needs images of at least 96 px" in notes
    assert "model.n_dis_local 5 -> 3" in notes
    # a depth given on the command line is kept, and the error says what to do
    code = train_main(
        [
            "ugatit",
            "--dataset",
            uri,
            "--storage",
            s3_prefix,
            "--name",
            "u32b",
            "--max-steps",
            "2",
            "--set",
            "model.n_dis_global=7",
            "--dry-run",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "too small for a 7-layer U-GAT-IT discriminator" in err and "Traceback" not in err


# --- PatchGAN depth (cyclegan, semantic-cyclegan): gansvc.families.fit ----------------------------------------------


class _PatchCfg(BaseModel):
    """A config with the PatchGAN depth field of cyclegan / semantic-cyclegan, auto (None) by default."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    n_layers_d: int | None = None
    ndf: int = 64


@pytest.mark.parametrize(("side", "layers"), [(8, 1), (12, 2), (16, 2), (20, 2), (24, 3), (32, 3), (256, 3)])
def test_patchgan_auto_depth_fits_the_images(side: int, layers: int) -> None:
    assert fit.patchgan_layers(None, side, side) == layers
    assert NLayerDiscriminator(3, 4, layers)(torch.zeros(1, 3, side, side)).shape[-1] >= 1
    cfg, notes = fit.fit_patchgan(_PatchCfg(), unpaired(side, side))
    assert cfg.n_layers_d == layers and cfg.ndf == 64
    assert notes == (
        []
        if layers == 3
        else [
            f"model.n_layers_d 3 -> {layers}: the 3-layer PatchGAN needs images of at least 24 px; these are "
            f"{side}x{side}, and {layers} layers is the deepest that still gives a patch map"
        ]
    )


def test_patchgan_set_depth_is_kept_and_checked() -> None:
    cfg = _PatchCfg(n_layers_d=3)
    assert fit.fit_patchgan(cfg, unpaired(16, 16)) == (cfg, [])
    with pytest.raises(
        ValueError,
        match=r"16x16 images are too small for a PatchGAN with n_layers_d=3 \(it needs "
        r">= 24 px\)",
    ):
        fit.patchgan_layers(3, 16, 16)
    assert fit.patchgan_layers(4, 64, 48) == 4
    with pytest.raises(ValueError, match="too small for any PatchGAN"):
        fit.patchgan_layers(None, 4, 4)
    assert fit.fit_patchgan(_PatchCfg(), unpaired(4, 4)) == (_PatchCfg(), [])  # build says why
    assert fit.min_side(lambda s: s >= 37) == 37 and fit.deepest(7, 3, lambda n: n <= 5) == 5
    assert fit.deepest(7, 3, lambda n: False) is None


# --- translation: shapes, both directions, any size -----------------------------------------------------------------

BUILD_SIZE = {("cyclegan", "smoke"): 16, ("cyclegan", "report"): 32, ("ugatit", "smoke"): 16, ("ugatit", "report"): 128}


@pytest.mark.parametrize(("name", "preset"), list(BUILD_SIZE))
def test_translate_both_directions_any_size(name: str, preset: str) -> None:
    torch.manual_seed(0)
    spec = SPECS[name]
    cfg = spec.make_config(preset)
    side = BUILD_SIZE[(name, preset)]
    state = spec.build(cfg, unpaired(side, side))
    nets = state.inference_nets()
    sizes = ((16, 16), (32, 48), (36, 20), (18, 30)) if preset == "smoke" else ((32, 48), (18, 30))
    for h, w in sizes:  # 18 x 30 is not a multiple of 4: padded and cropped back
        x = torch.rand(2, 3, h, w) * 2 - 1
        for direction in ("a2b", "b2a"):
            out = spec.translate(nets, x, direction, cfg)
            assert out["image"].shape == (2, 3, h, w)
            assert out["image"].abs().max() <= 1.0
            if name == "ugatit":
                heat = out["heatmap"]
                assert heat.shape == (2, 1, h, w)
                assert heat.min() >= 0.0 and heat.max() <= 1.0 and heat.amax(dim=(1, 2, 3)).eq(1.0).all()
    a2b = spec.translate(nets, x, "a2b", cfg)["image"]
    b2a = spec.translate(nets, x, "b2a", cfg)["image"]
    assert not torch.allclose(a2b, b2a)  # two different generators
    with pytest.raises(ValueError, match="direction"):
        spec.translate(nets, x, "sideways", cfg)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        spec.translate(nets, torch.zeros(1, 1, 16, 16), "a2b", cfg)


def test_ugatit_full_variant_translates_at_other_sizes() -> None:
    cfg = ugatit.SPEC.make_config("smoke", {"light": False})
    state = ugatit.SPEC.build(cfg, unpaired(16, 16))
    out = ugatit.SPEC.translate(state.inference_nets(), torch.rand(1, 3, 32, 48) * 2 - 1, "b2a", cfg)
    assert out["image"].shape == (1, 3, 32, 48) and out["heatmap"].shape == (1, 1, 32, 48)


@pytest.mark.parametrize("name", SPECS)
def test_train_step_on_non_square_images(name: str) -> None:
    torch.manual_seed(0)
    spec = SPECS[name]
    cfg = spec.make_config("smoke")
    state = spec.build(cfg, unpaired(16, 24))
    out = spec.train_step(state, random_batch(2, 16, 24), 0, cfg)
    assert all(isinstance(v, float) and math.isfinite(v) for v in out.values())
    expected = {
        "cyclegan": {"G_A", "G_B", "cycle_A", "cycle_B", "idt_A", "idt_B", "D_A", "D_B", "G", "lr"},
        "ugatit": {
            "D_A",
            "D_B",
            "D_cam_A",
            "D_cam_B",
            "G_A",
            "G_B",
            "G_adv_A",
            "G_adv_B",
            "cycle_A",
            "cycle_B",
            "idt_A",
            "idt_B",
            "cam_A",
            "cam_B",
            "lr",
        },
    }[name]
    assert set(out) == expected


# --- the training step's invariants ---------------------------------------------------------------------------------


def _g_step(
    name: str, state: GanState, batch: dict[str, Tensor], cfg: CycleganConfig | UgatitConfig
) -> tuple[Tensor, Tensor] | None:
    if name == "cyclegan":
        assert isinstance(cfg, CycleganConfig)
        _, fake_b, fake_a = cycle.generator_step(state, batch["A"], batch["B"], cfg)
        return fake_b, fake_a
    assert isinstance(cfg, UgatitConfig)
    ugatit.generator_step(state, batch["A"], batch["B"], cfg)
    return None


def _d_step(
    name: str,
    state: GanState,
    batch: dict[str, Tensor],
    cfg: CycleganConfig | UgatitConfig,
    fakes: tuple[Tensor, Tensor] | None,
) -> None:
    if name == "cyclegan":
        assert fakes is not None and isinstance(cfg, CycleganConfig)
        cycle.discriminator_step(state, batch["A"], batch["B"], *fakes, cfg)
    else:
        assert isinstance(cfg, UgatitConfig)
        ugatit.discriminator_step(state, batch["A"], batch["B"], cfg)


@pytest.mark.parametrize("name", SPECS)
def test_generator_step_leaves_d_untouched_and_d_step_leaves_g_untouched(name: str) -> None:
    torch.manual_seed(0)
    spec = SPECS[name]
    cfg = spec.make_config("smoke")
    state = spec.build(cfg, unpaired())
    batch = random_batch()
    gs = [state.nets[k] for k in GENERATORS[name]]
    ds = [state.nets[k] for k in DISCRIMINATORS[name]]

    g0, d0 = snapshot(gs), snapshot(ds)
    fakes = _g_step(name, state, batch, cfg)
    assert same(snapshot(ds), d0), "the generator step changed a discriminator (parameters or buffers)"
    assert not same(snapshot(gs), g0)
    assert all(p.requires_grad for d in ds for p in d.parameters()) and all(d.training for d in ds)

    g1, d1 = snapshot(gs), snapshot(ds)
    grads = [None if p.grad is None else p.grad.clone() for g in gs for p in g.parameters()]
    _d_step(name, state, batch, cfg, fakes)
    assert same(snapshot(gs), g1), "the discriminator step changed a generator"
    assert not same(snapshot(ds), d1)
    after = [p.grad for g in gs for p in g.parameters()]
    assert all(
        (a is None and b is None) or (a is not None and b is not None and torch.equal(a, b))
        for a, b in zip(grads, after, strict=True)
    ), "gradient reached a generator in the D step"


def test_ugatit_rho_stays_in_unit_interval() -> None:
    torch.manual_seed(0)
    # a huge learning rate pushes rho far outside [0, 1] in one Adam step; clipping must bring it back
    cfg = ugatit.SPEC.make_config("smoke", {"lr": 0.5, "weight_decay": 0.0})
    state = ugatit.SPEC.build(cfg, unpaired())
    rhos = [m.rho for k in ugatit.GENERATORS for m in state.nets[k].modules() if isinstance(m, (AdaLIN, LIN))]
    assert len(rhos) == 2 * (2 * 2 + 2)  # 2 generators x (2 blocks x 2 AdaLIN + 2 LIN)
    for step in range(3):
        ugatit.SPEC.train_step(state, random_batch(seed=step), step, cfg)
        values = torch.cat([r.detach().flatten() for r in rhos])
        assert values.min() >= 0.0 and values.max() <= 1.0
    assert ((values == 0.0) | (values == 1.0)).any(), "clipping was never exercised"


@pytest.mark.parametrize("name", SPECS)
def test_schedule_constant_then_linear_to_zero(name: str) -> None:
    torch.manual_seed(0)
    spec = SPECS[name]
    cfg = spec.make_config("smoke", {"decay_start": 2, "decay_steps": 4})
    state = spec.build(cfg, unpaired())
    lrs = [spec.train_step(state, random_batch(seed=s), s, cfg)["lr"] for s in range(6)]
    assert lrs == pytest.approx([cfg.lr * f for f in (1, 1, 1, 0.75, 0.5, 0.25)])
    assert all(o.param_groups[0]["lr"] == 0.0 for o in state.optimizers.values())


def test_linear_decay_factor() -> None:
    f = LinearDecay(decay_start=100, decay_steps=50)
    assert [f(s) for s in (0, 100, 125, 150, 1000)] == [1.0, 1.0, 0.5, 0.0, 0.0]


# --- losses against hand computations -------------------------------------------------------------------------------


def test_losses_by_hand() -> None:
    x = torch.tensor([[1.0, -1.0], [0.5, 0.0]])
    y = torch.zeros(2, 2)
    assert losses.cycle_loss(x, y).item() == pytest.approx((1 + 1 + 0.5 + 0) / 4)
    assert losses.identity_loss(y, x).item() == pytest.approx(0.625)
    # CAM: BCE(x, 1) = log(1 + e^-x), BCE(x, 0) = log(1 + e^x), means over the (N, 2) logits
    src, tgt = torch.tensor([[2.0, -1.0]]), torch.tensor([[1.0, 3.0]])
    want = (math.log1p(math.exp(-2)) + math.log1p(math.exp(1))) / 2 + (
        math.log1p(math.exp(1)) + math.log1p(math.exp(3))
    ) / 2
    assert losses.cam_loss(src, tgt).item() == pytest.approx(want, rel=1e-6)
    assert losses.cam_loss(torch.zeros(3, 2), torch.zeros(3, 2)).item() == pytest.approx(2 * math.log(2))
    # LSGAN on patch maps: D: mean (D(x) - 1)^2 + mean D(G(z))^2, G: mean (D(G(z)) - 1)^2
    real, fake = torch.tensor([0.5, 1.5]).view(1, 1, 1, 2), torch.tensor([0.2, -0.4]).view(1, 1, 1, 2)
    assert losses.d_loss("mse", real, fake).item() == pytest.approx((0.25 + 0.25) / 2 + (0.04 + 0.16) / 2)
    assert losses.g_loss("mse", fake).item() == pytest.approx((0.64 + 1.96) / 2)


# --- image pool ------------------------------------------------------------------------------------------------------


def test_image_pool_fills_then_returns_history_half_the_time() -> None:
    pool = ImagePool(size=10, seed=0)
    first = torch.arange(10.0).view(10, 1, 1, 1).expand(10, 1, 2, 2)
    assert torch.equal(pool.query(first), first) and len(pool) == 10  # filling: everything passes through
    stored_values = set(range(10))
    returned_old, n = 0, 2000
    for i in range(n):
        new = torch.full((1, 1, 2, 2), 100.0 + i)
        out = pool.query(new)
        v = out[0, 0, 0, 0].item()
        if v != 100.0 + i:  # an image from the history came back, and the new one took its place
            assert v in stored_values
            stored_values.remove(v)
            stored_values.add(100.0 + i)
            returned_old += 1
        assert {t[0, 0, 0].item() for t in pool.images} == stored_values
    # Binomial(2000, 0.5): sd 0.011; 0.05 is a 4.5 sigma margin
    assert abs(returned_old / n - 0.5) < 0.05
    assert torch.equal(ImagePool(size=0).query(first), first)


def test_image_pool_state_dict_restores_draws_exactly() -> None:
    pool = ImagePool(size=4, seed=1)
    for i in range(6):
        pool.query(torch.full((2, 1, 2, 2), float(i)))
    buf = io.BytesIO()
    torch.save(pool.state_dict(), buf)
    buf.seek(0)
    clone = ImagePool(size=4, seed=999)
    clone.load_state_dict(torch.load(buf, weights_only=True))
    for i in range(20):
        x = torch.full((3, 1, 2, 2), 10.0 + i)
        assert torch.equal(pool.query(x), clone.query(x))


# --- checkpoints, EMA, DDP ------------------------------------------------------------------------------------------


def _full_state(state: GanState) -> dict:
    return {
        "nets": {k: v.state_dict() for k, v in state.nets.items()},
        "ema": {k: v.state_dict() for k, v in state.ema.items()},
        "optimizers": {k: v.state_dict() for k, v in state.optimizers.items()},
        "schedulers": {k: v.state_dict() for k, v in state.schedulers.items()},
        "extras": {k: v.state_dict() for k, v in state.extras.items()},
    }


def _load_full_state(state: GanState, saved: dict) -> None:
    for group in ("nets", "ema", "optimizers", "schedulers", "extras"):
        for k, obj in getattr(state, group).items():
            obj.load_state_dict(saved[group][k])


@pytest.mark.parametrize("name", SPECS)
def test_checkpoint_round_trip_continues_exactly(name: str) -> None:
    spec = SPECS[name]
    cfg = spec.make_config("smoke", {"ema": True, "decay_start": 1, "decay_steps": 10})
    torch.manual_seed(0)
    state = spec.build(cfg, unpaired())
    for s in range(3):  # smoke pool (8 images) is full after two batches of 4: later draws are random
        spec.train_step(state, random_batch(4, seed=s), s, cfg)
    buf = io.BytesIO()
    torch.save(_full_state(state), buf)
    buf.seek(0)
    torch.manual_seed(123)  # a different init: everything must come from the checkpoint
    restored = spec.build(cfg, unpaired())
    _load_full_state(restored, torch.load(buf, weights_only=True))
    for s in range(3, 5):
        batch = random_batch(4, seed=s)
        assert spec.train_step(state, batch, s, cfg) == spec.train_step(restored, batch, s, cfg)
    assert same(
        snapshot(list(state.nets.values()) + list(state.ema.values())),
        snapshot(list(restored.nets.values()) + list(restored.ema.values())),
    )


@pytest.mark.parametrize("name", SPECS)
def test_ema_generators_are_used_for_inference(name: str) -> None:
    torch.manual_seed(0)
    spec = SPECS[name]
    cfg = spec.make_config("smoke", {"ema": True, "ema_decay": 0.5})
    state = spec.build(cfg, unpaired())
    assert set(state.ema) == set(GENERATORS[name]) == set(state.inference)
    spec.train_step(state, random_batch(), 0, cfg)
    for k in GENERATORS[name]:
        assert state.inference_nets()[k] is state.ema[k]
        live, avg = dict(state.nets[k].named_parameters()), dict(state.ema[k].named_parameters())
        assert any(not torch.equal(live[p], avg[p]) for p in live)


@pytest.mark.parametrize("name", SPECS)
def test_train_step_through_ddp_wrappers(name: str, tmp_path: Path) -> None:
    if dist.is_initialized():
        pytest.skip("a process group is already initialised in this process")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/pg", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        spec = SPECS[name]
        cfg = spec.make_config("smoke")
        state = spec.build(cfg, unpaired())
        state.nets = {k: DistributedDataParallel(v) for k, v in state.nets.items()}
        for s in range(3):
            out = spec.train_step(state, random_batch(seed=s), s, cfg)
            assert all(math.isfinite(v) for v in out.values())
        x = torch.rand(1, 3, 20, 28) * 2 - 1
        assert spec.translate(state.inference_nets(), x, "a2b", cfg)["image"].shape == (1, 3, 20, 28)
    finally:
        dist.destroy_process_group()


# --- learning ------------------------------------------------------------------------------------------------------


def red_and_striped_blue(n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """A: red-ish 16x16 images with noise. B: blue-ish images with vertical stripes and noise."""
    a = torch.tensor([0.6, -0.5, -0.6]).view(1, 3, 1, 1) + 0.15 * torch.randn(n, 3, 16, 16, generator=g)
    stripes = ((torch.arange(16) // 2) % 2).float().view(1, 1, 1, 16) * 0.6 - 0.3
    b = torch.tensor([-0.6, -0.3, 0.6]).view(1, 3, 1, 1) + stripes + 0.1 * torch.randn(n, 3, 16, 16, generator=g)
    return a.clamp(-1, 1), b.clamp(-1, 1)


@pytest.mark.parametrize(("name", "steps"), [("cyclegan", 60), ("ugatit", 60)])
def test_short_run_learns_the_colour_mapping(name: str, steps: int) -> None:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    train_a, train_b = red_and_striped_blue(64, g)
    test_a, test_b = red_and_striped_blue(16, g)
    spec = SPECS[name]
    cfg = spec.make_config("smoke", {"lr": 1e-3})  # tiny nets, few steps: a larger step size than the papers'
    state = spec.build(cfg, unpaired())

    def colour_gap(direction: str, source: Tensor, target: Tensor) -> float:
        out = spec.translate(state.inference_nets(), source, direction, cfg)["image"]
        return (out.mean(dim=(0, 2, 3)) - target.mean(dim=(0, 2, 3))).norm().item()

    before = colour_gap("a2b", test_a, test_b), colour_gap("b2a", test_b, test_a)
    cycle = []
    for s in range(steps):
        ia, ib = torch.randint(0, 64, (4,), generator=g), torch.randint(0, 64, (4,), generator=g)
        out = spec.train_step(state, {"A": train_a[ia], "B": train_b[ib]}, s, cfg)
        cycle.append(out["cycle_A"] + out["cycle_B"])
    after = colour_gap("a2b", test_a, test_b), colour_gap("b2a", test_b, test_a)

    assert sum(cycle[-10:]) / 10 < 0.6 * sum(cycle[:10]) / 10, cycle
    for b, a in zip(before, after, strict=True):
        # mean colour of the translations moves most of the way to the target domain's (A and B are ~2 apart)
        assert a < 0.5 * b and a < 0.3, (before, after)


@pytest.mark.parametrize("spec", [cyclegan.SPEC, semantic_cyclegan.SPEC], ids=lambda s: s.name)
def test_patchgan_families_fit_16px(spec: FamilySpec) -> None:
    """n_layers_d auto: the 70x70 PatchGAN needs >= 24 px; at 16 px the deepest that fits (2), with a note; a depth
    the user set is kept and refused with advice (gansvc.families.fit)."""
    extra = {"segmenter": "random", "segmenter_arch": "tiny"} if spec.name == "semantic-cyclegan" else {}
    data = DataSpec("unpaired", 16, 16, 3)
    cfg = spec.make_config(overrides={"ngf": 4, "ndf": 4, **extra})
    fitted, notes = spec.fit_to_data(cfg, data, frozenset())
    assert fitted.n_layers_d == 2 and notes and notes[0].startswith("model.n_layers_d 3 -> 2:"), notes
    spec.build(cfg, data)  # build alone resolves auto the same way
    with pytest.raises(ValueError, match="too small"):
        spec.build(spec.make_config(overrides={"n_layers_d": 3, "ngf": 4, "ndf": 4, **extra}), data)


@pytest.mark.parametrize("spec", [s for s in FAMILIES.values() if s.translate is not None], ids=lambda s: s.name)
def test_heatmap_declaration_matches_what_translate_returns(spec: FamilySpec) -> None:
    """issue 16 #3: Serve reads `FamilySpec.heatmap` (it used to probe with a warm-up pass): the declaration must say
    exactly whether the family's translate returns a heatmap."""
    torch.manual_seed(0)
    cfg = spec.make_config("smoke" if "smoke" in spec.presets else None)
    data = DataSpec("unpaired", 16, 16, 3, num_classes=3)
    nets = spec.build(cfg, data).inference_nets()
    for net in nets.values():
        net.eval()
    out = spec.translate(nets, torch.zeros(1, 3, 16, 16), "a2b", cfg)
    assert ("heatmap" in out) == spec.heatmap
    assert spec.heatmap == (spec.name == "ugatit")  # the one attention family (the served contract's heatmap flag)
