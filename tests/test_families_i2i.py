"""The image-to-image families `cyclegan` and `ugatit`: configs, shapes, translation in both directions and at any
size, the training step's invariants, losses against hand computations, the image pool, checkpoint exactness, DDP, and
a short learning run on a synthetic unpaired red -> blue-striped set. CPU only, small nets (smoke preset)."""

from __future__ import annotations

import io
import math

import pytest
import torch
import torch.distributed as dist
from pydantic import ValidationError
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from gansvc import losses
from gansvc.data.spec import DataSpec
from gansvc.families import FAMILIES, cyclegan, ugatit
from gansvc.families.base import GanState
from gansvc.nn.i2i_util import LinearDecay
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
    assert (c.lambda_cycle, c.lambda_identity, c.pool_size, c.lr, c.betas, c.ngf, c.ndf, c.n_layers_d, c.loss) == (
        10.0, 0.5, 50, 2e-4, (0.5, 0.999), 64, 64, 3, "mse")
    u = ugatit.SPEC.make_config()
    assert (u.lambda_adv, u.lambda_cycle, u.lambda_identity, u.lambda_cam) == (1.0, 10.0, 10.0, 1000.0)
    assert (u.lr, u.weight_decay, u.betas, u.n_blocks, u.n_dis_global, u.n_dis_local) == (
        1e-4, 1e-4, (0.5, 0.999), 4, 7, 5)
    assert ugatit.SPEC.make_config("report").lambda_cam == 100.0  # report 000 Table 2
    assert default_n_blocks(256, 256) == 9 and default_n_blocks(128, 128) == 6
    # report 000 Table 1: trainable parameters (M) of G and D for CycleGAN and the modified model, at 256 x 256
    with torch.device("meta"):
        n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
        assert round(n(ResnetGenerator(3, 3, c.ngf, default_n_blocks(256, 256))) / 1e6, 3) == 11.378
        assert round(n(NLayerDiscriminator(3, c.ndf, c.n_layers_d)) / 1e6, 3) == 2.765
        assert round(n(UgatitGenerator(3, 3, u.ngf, u.n_blocks, 256, u.light)) / 1e6, 2) == 10.59
        assert round(n(UgatitDiscriminator(3, u.ndf, u.n_dis_global)) / 1e6, 2) == 53.13


def test_cyclegan_picks_residual_blocks_by_image_size() -> None:
    cfg = cyclegan.SPEC.make_config("smoke", {"n_blocks": None})
    state = cyclegan.SPEC.build(cfg, unpaired(32, 32))
    assert sum(isinstance(m, ResnetBlock) for m in state.nets["G_A"].modules()) == 6


@pytest.mark.parametrize("name", SPECS)
def test_too_small_images_for_the_discriminator_fail_with_advice(name: str) -> None:
    spec = SPECS[name]
    with pytest.raises(ValueError, match="too small"):
        spec.build(spec.make_config("report"), unpaired(16, 16))


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
    expected = {"cyclegan": {"G_A", "G_B", "cycle_A", "cycle_B", "idt_A", "idt_B", "D_A", "D_B", "G", "lr"},
                "ugatit": {"D_A", "D_B", "D_cam_A", "D_cam_B", "G_A", "G_B", "G_adv_A", "G_adv_B", "cycle_A",
                           "cycle_B", "idt_A", "idt_B", "cam_A", "cam_B", "lr"}}[name]
    assert set(out) == expected


# --- the training step's invariants ---------------------------------------------------------------------------------

def _g_step(name: str, state: GanState, batch: dict[str, Tensor], cfg) -> tuple[Tensor, Tensor] | None:
    if name == "cyclegan":
        _, fake_b, fake_a = cyclegan.generator_step(state, batch["A"], batch["B"], cfg)
        return fake_b, fake_a
    ugatit.generator_step(state, batch["A"], batch["B"], cfg)
    return None


def _d_step(name: str, state: GanState, batch: dict[str, Tensor], cfg, fakes: tuple[Tensor, Tensor] | None) -> None:
    if name == "cyclegan":
        assert fakes is not None
        cyclegan.discriminator_step(state, batch["A"], batch["B"], *fakes, cfg)
    else:
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
    assert all((a is None and b is None) or (a is not None and b is not None and torch.equal(a, b))
               for a, b in zip(grads, after, strict=True)), "gradient reached a generator in the D step"


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
    want = (math.log1p(math.exp(-2)) + math.log1p(math.exp(1))) / 2 + (math.log1p(math.exp(1)) + math.log1p(
        math.exp(3))) / 2
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
    return {"nets": {k: v.state_dict() for k, v in state.nets.items()},
            "ema": {k: v.state_dict() for k, v in state.ema.items()},
            "optimizers": {k: v.state_dict() for k, v in state.optimizers.items()},
            "schedulers": {k: v.state_dict() for k, v in state.schedulers.items()},
            "extras": {k: v.state_dict() for k, v in state.extras.items()}}


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
    assert same(snapshot(list(state.nets.values()) + list(state.ema.values())),
                snapshot(list(restored.nets.values()) + list(restored.ema.values())))


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
def test_train_step_through_ddp_wrappers(name: str, tmp_path) -> None:
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
