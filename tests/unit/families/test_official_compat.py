"""Official checkpoints load into our networks and compute the same function.

The expected state-dict layouts below are written out in this file from a reading of the official code
(junyanz/pytorch-CycleGAN-and-pix2pix models/networks.py: ResnetGenerator, ResnetBlock, NLayerDiscriminator with
norm='instance'; znxlwm/UGATIT-pytorch networks.py: ResnetGenerator, ResnetAdaILNBlock, adaILN, ILN, Discriminator),
independently of gansvc.nn. Random tensors of those shapes are loaded with strict=True, and small functional
re-implementations of the official forward passes check that the loaded modules compute the same outputs.
"""

from __future__ import annotations

import math
from dataclasses import asdict

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from gansvc.data.spec import DataSpec
from gansvc.families import ugatit as ugatit_family
from gansvc.nn.patchgan import NLayerDiscriminator, patchgan_arch_from_state_dict
from gansvc.nn.resnet import ResnetGenerator, resnet_arch_from_state_dict, strip_instance_norm_stats
from gansvc.nn.ugatit import (
    UgatitDiscriminator,
    UgatitGenerator,
    ugatit_arch_from_state_dict,
    ugatit_d_arch_from_state_dict,
    ugatit_d_fits,
    ugatit_d_min_side,
    ugatit_d_output_size,
)

Shapes = dict[str, tuple[int, ...]]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- expected layouts, from the official code -------------------------------------------------------------------------


def official_cyclegan_g(in_nc: int, out_nc: int, ngf: int, n_blocks: int) -> Shapes:
    """pytorch-CycleGAN-and-pix2pix ResnetGenerator(norm='instance', use_dropout=False): Sequential `model` =
    [pad, conv7, IN, relu] + 2 x [conv3/2, IN, relu] + n x ResnetBlock + 2 x [convT3/2, IN, relu] + [pad, conv7, tanh];
    convs have biases (use_bias because norm is InstanceNorm); IN has no parameters."""
    s: Shapes = {
        "model.1.weight": (ngf, in_nc, 7, 7),
        "model.1.bias": (ngf,),
        "model.4.weight": (2 * ngf, ngf, 3, 3),
        "model.4.bias": (2 * ngf,),
        "model.7.weight": (4 * ngf, 2 * ngf, 3, 3),
        "model.7.bias": (4 * ngf,),
    }
    for i in range(n_blocks):  # ResnetBlock.conv_block = [pad, conv, IN, relu, pad, conv, IN]
        for j in (1, 5):
            s[f"model.{10 + i}.conv_block.{j}.weight"] = (4 * ngf, 4 * ngf, 3, 3)
            s[f"model.{10 + i}.conv_block.{j}.bias"] = (4 * ngf,)
    u = 10 + n_blocks
    s[f"model.{u}.weight"] = (4 * ngf, 2 * ngf, 3, 3)  # ConvTranspose2d weight is (in, out, kH, kW)
    s[f"model.{u}.bias"] = (2 * ngf,)
    s[f"model.{u + 3}.weight"] = (2 * ngf, ngf, 3, 3)
    s[f"model.{u + 3}.bias"] = (ngf,)
    s[f"model.{u + 7}.weight"] = (out_nc, ngf, 7, 7)  # after ReflectionPad2d(3) at u + 6
    s[f"model.{u + 7}.bias"] = (out_nc,)
    return s


def cyclegan_g_norm_layers(ngf: int, n_blocks: int) -> dict[str, int]:
    """Prefix -> channels of each InstanceNorm2d in the official generator (where old files keep running stats)."""
    norms = {"model.2": ngf, "model.5": 2 * ngf, "model.8": 4 * ngf}
    for i in range(n_blocks):
        norms[f"model.{10 + i}.conv_block.2"] = 4 * ngf
        norms[f"model.{10 + i}.conv_block.6"] = 4 * ngf
    norms[f"model.{11 + n_blocks}"] = 2 * ngf
    norms[f"model.{14 + n_blocks}"] = ngf
    return norms


# NLayerDiscriminator(3, ndf=8, n_layers=3, norm=instance), written out: convs at 0, 2, 5, 8, 11
PATCHGAN_3_NDF8: Shapes = {
    "model.0.weight": (8, 3, 4, 4),
    "model.0.bias": (8,),
    "model.2.weight": (16, 8, 4, 4),
    "model.2.bias": (16,),
    "model.5.weight": (32, 16, 4, 4),
    "model.5.bias": (32,),
    "model.8.weight": (64, 32, 4, 4),
    "model.8.bias": (64,),
    "model.11.weight": (1, 64, 4, 4),
    "model.11.bias": (1,),
}


def official_ugatit_g(in_nc: int, out_nc: int, ngf: int, n_blocks: int, img_size: int, light: bool) -> Shapes:
    """UGATIT-pytorch ResnetGenerator: DownBlock = [pad, conv7, IN, relu] + 2 x [pad, conv3/2, IN, relu] + n ResnetBlock
    (bias-free convs); gap_fc, gmp_fc, conv1x1 (bias), FC (2 Linear), gamma, beta; UpBlock1_i (adaILN rho);
    UpBlock2 = 2 x [up, pad, conv3, ILN, relu] + [pad, conv7, tanh]."""
    d = 4 * ngf
    s: Shapes = {
        "DownBlock.1.weight": (ngf, in_nc, 7, 7),
        "DownBlock.5.weight": (2 * ngf, ngf, 3, 3),
        "DownBlock.9.weight": (d, 2 * ngf, 3, 3),
        "gap_fc.weight": (1, d),
        "gmp_fc.weight": (1, d),
        "conv1x1.weight": (d, 2 * d, 1, 1),
        "conv1x1.bias": (d,),
        "FC.0.weight": (d, d if light else (img_size // 4) ** 2 * d),
        "FC.2.weight": (d, d),
        "gamma.weight": (d, d),
        "beta.weight": (d, d),
        "UpBlock2.2.weight": (2 * ngf, d, 3, 3),
        "UpBlock2.3.rho": (1, 2 * ngf, 1, 1),
        "UpBlock2.3.gamma": (1, 2 * ngf, 1, 1),
        "UpBlock2.3.beta": (1, 2 * ngf, 1, 1),
        "UpBlock2.7.weight": (ngf, 2 * ngf, 3, 3),
        "UpBlock2.8.rho": (1, ngf, 1, 1),
        "UpBlock2.8.gamma": (1, ngf, 1, 1),
        "UpBlock2.8.beta": (1, ngf, 1, 1),
        "UpBlock2.11.weight": (out_nc, ngf, 7, 7),
    }
    for i in range(n_blocks):
        s[f"DownBlock.{12 + i}.conv_block.1.weight"] = (d, d, 3, 3)
        s[f"DownBlock.{12 + i}.conv_block.5.weight"] = (d, d, 3, 3)
        s[f"UpBlock1_{i + 1}.conv1.weight"] = (d, d, 3, 3)
        s[f"UpBlock1_{i + 1}.norm1.rho"] = (1, d, 1, 1)
        s[f"UpBlock1_{i + 1}.conv2.weight"] = (d, d, 3, 3)
        s[f"UpBlock1_{i + 1}.norm2.rho"] = (1, d, 1, 1)
    return s


def _sn(s: Shapes, name: str, weight: tuple[int, ...], bias: bool) -> None:
    """nn.utils.spectral_norm keys: weight_orig, weight_u (rows), weight_v (columns of the flattened weight)."""
    s[f"{name}.weight_orig"] = weight
    s[f"{name}.weight_u"] = (weight[0],)
    s[f"{name}.weight_v"] = (math.prod(weight[1:]),)
    if bias:
        s[f"{name}.bias"] = (weight[0],)


def official_ugatit_d(in_nc: int, ndf: int, n_layers: int) -> Shapes:
    """UGATIT-pytorch Discriminator: model = [pad, SNconv4/2, lrelu] + (n_layers - 3) x same + [pad, SNconv4/1, lrelu];
    CAM with SN gap_fc / gmp_fc, conv1x1; final SN conv without bias."""
    s: Shapes = {}
    _sn(s, "model.1", (ndf, in_nc, 4, 4), True)
    for i in range(1, n_layers - 2):
        c = ndf * 2 ** (i - 1)
        _sn(s, f"model.{3 * i + 1}", (2 * c, c, 4, 4), True)
    c = ndf * 2 ** (n_layers - 3)
    _sn(s, f"model.{3 * (n_layers - 2) + 1}", (2 * c, c, 4, 4), True)
    d = 2 * c
    _sn(s, "gap_fc", (1, d), False)
    _sn(s, "gmp_fc", (1, d), False)
    s["conv1x1.weight"], s["conv1x1.bias"] = (d, 2 * d, 1, 1), (d,)
    _sn(s, "conv", (1, d, 4, 4), False)
    return s


def random_state(shapes: Shapes, seed: int = 0) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, shp in shapes.items():
        t = torch.randn(shp, generator=g) * 0.2
        if k.endswith(".rho"):
            t = torch.rand(shp, generator=g)
        if k.endswith((".weight_u", ".weight_v")):
            t = F.normalize(t, dim=0)
        out[k] = t
    return out


def layout(module: torch.nn.Module) -> Shapes:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


# --- functional versions of the official forward passes ---------------------------------------------------------------


def _rpad(x: Tensor, p: int) -> Tensor:
    return F.pad(x, (p, p, p, p), mode="reflect")


def ref_cyclegan_g(sd: dict[str, Tensor], x: Tensor, n_blocks: int) -> Tensor:
    IN = F.instance_norm
    h = F.relu(IN(F.conv2d(_rpad(x, 3), sd["model.1.weight"], sd["model.1.bias"])))
    for i in (4, 7):
        h = F.relu(IN(F.conv2d(h, sd[f"model.{i}.weight"], sd[f"model.{i}.bias"], stride=2, padding=1)))
    for i in range(n_blocks):
        p = f"model.{10 + i}.conv_block."
        r = F.relu(IN(F.conv2d(_rpad(h, 1), sd[p + "1.weight"], sd[p + "1.bias"])))
        h = h + IN(F.conv2d(_rpad(r, 1), sd[p + "5.weight"], sd[p + "5.bias"]))
    for i in (10 + n_blocks, 13 + n_blocks):
        h = F.relu(
            IN(
                F.conv_transpose2d(
                    h, sd[f"model.{i}.weight"], sd[f"model.{i}.bias"], stride=2, padding=1, output_padding=1
                )
            )
        )
    return torch.tanh(F.conv2d(_rpad(h, 3), sd[f"model.{17 + n_blocks}.weight"], sd[f"model.{17 + n_blocks}.bias"]))


def ref_patchgan(sd: dict[str, Tensor], x: Tensor) -> Tensor:
    h = F.leaky_relu(F.conv2d(x, sd["model.0.weight"], sd["model.0.bias"], stride=2, padding=1), 0.2)
    for i, stride in ((2, 2), (5, 2), (8, 1)):
        h = F.leaky_relu(
            F.instance_norm(F.conv2d(h, sd[f"model.{i}.weight"], sd[f"model.{i}.bias"], stride=stride, padding=1)), 0.2
        )
    return F.conv2d(h, sd["model.11.weight"], sd["model.11.bias"], padding=1)


def ref_iln(x: Tensor, rho: Tensor, eps: float = 1e-5) -> Tensor:
    """rho * IN(x) + (1 - rho) * LN(x) with torch.var (unbiased), as adaILN / ILN of UGATIT-pytorch."""
    a_i = (x - x.mean(dim=[2, 3], keepdim=True)) / torch.sqrt(x.var(dim=[2, 3], keepdim=True) + eps)
    a_l = (x - x.mean(dim=[1, 2, 3], keepdim=True)) / torch.sqrt(x.var(dim=[1, 2, 3], keepdim=True) + eps)
    return rho * a_i + (1 - rho) * a_l


def ref_ugatit_g_light(sd: dict[str, Tensor], x: Tensor, n_blocks: int) -> tuple[Tensor, Tensor, Tensor]:
    IN = F.instance_norm
    h = F.relu(IN(F.conv2d(_rpad(x, 3), sd["DownBlock.1.weight"])))
    for i in (5, 9):
        h = F.relu(IN(F.conv2d(_rpad(h, 1), sd[f"DownBlock.{i}.weight"], stride=2)))
    for i in range(n_blocks):
        p = f"DownBlock.{12 + i}.conv_block."
        r = F.relu(IN(F.conv2d(_rpad(h, 1), sd[p + "1.weight"])))
        h = h + IN(F.conv2d(_rpad(r, 1), sd[p + "5.weight"]))
    w_gap, w_gmp = sd["gap_fc.weight"], sd["gmp_fc.weight"]
    gap_logit = h.mean(dim=(2, 3)) @ w_gap.t()
    gmp_logit = h.amax(dim=(2, 3)) @ w_gmp.t()
    att = torch.cat([h * w_gap.view(1, -1, 1, 1), h * w_gmp.view(1, -1, 1, 1)], 1)
    h = F.relu(F.conv2d(att, sd["conv1x1.weight"], sd["conv1x1.bias"]))
    heat = h.sum(1, keepdim=True)
    style = F.relu(F.relu(h.mean(dim=(2, 3)) @ sd["FC.0.weight"].t()) @ sd["FC.2.weight"].t())
    gamma, beta = style @ sd["gamma.weight"].t(), style @ sd["beta.weight"].t()
    g4, b4 = gamma[:, :, None, None], beta[:, :, None, None]
    for i in range(n_blocks):
        p = f"UpBlock1_{i + 1}."
        r = F.relu(ref_iln(F.conv2d(_rpad(h, 1), sd[p + "conv1.weight"]), sd[p + "norm1.rho"]) * g4 + b4)
        h = h + ref_iln(F.conv2d(_rpad(r, 1), sd[p + "conv2.weight"]), sd[p + "norm2.rho"]) * g4 + b4
    for conv, norm in ((2, 3), (7, 8)):
        h = F.conv2d(_rpad(F.interpolate(h, scale_factor=2, mode="nearest"), 1), sd[f"UpBlock2.{conv}.weight"])
        h = F.relu(ref_iln(h, sd[f"UpBlock2.{norm}.rho"]) * sd[f"UpBlock2.{norm}.gamma"] + sd[f"UpBlock2.{norm}.beta"])
    out = torch.tanh(F.conv2d(_rpad(h, 3), sd["UpBlock2.11.weight"]))
    return out, torch.cat([gap_logit, gmp_logit], 1), heat


def _sn_weight(sd: dict[str, Tensor], name: str) -> Tensor:
    """Spectral-norm weight without a power-iteration step (eval mode): W / (u^T W v)."""
    w = sd[f"{name}.weight_orig"]
    sigma = torch.dot(sd[f"{name}.weight_u"], w.flatten(1) @ sd[f"{name}.weight_v"])
    return w / sigma


def ref_ugatit_d(sd: dict[str, Tensor], x: Tensor, n_layers: int) -> tuple[Tensor, Tensor]:
    h = x
    for j in range(n_layers - 1):
        name = f"model.{3 * j + 1}"
        stride = 2 if j < n_layers - 2 else 1
        h = F.leaky_relu(F.conv2d(_rpad(h, 1), _sn_weight(sd, name), sd[f"{name}.bias"], stride=stride), 0.2)
    # the official CAM re-weights channels with the raw `weight_orig` (list(gap_fc.parameters())[0])
    gap_logit = h.mean(dim=(2, 3)) @ _sn_weight(sd, "gap_fc").t()
    gmp_logit = h.amax(dim=(2, 3)) @ _sn_weight(sd, "gmp_fc").t()
    att = torch.cat([h * sd["gap_fc.weight_orig"].view(1, -1, 1, 1), h * sd["gmp_fc.weight_orig"].view(1, -1, 1, 1)], 1)
    h = F.leaky_relu(F.conv2d(att, sd["conv1x1.weight"], sd["conv1x1.bias"]), 0.2)
    return F.conv2d(_rpad(h, 1), _sn_weight(sd, "conv")), torch.cat([gap_logit, gmp_logit], 1)


# --- CycleGAN ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("ngf", "n_blocks"), [(8, 2), (4, 9)])
def test_cyclegan_generator_layout_load_and_forward(ngf: int, n_blocks: int) -> None:
    expected = official_cyclegan_g(3, 3, ngf, n_blocks)
    net = ResnetGenerator(3, 3, ngf, n_blocks)
    assert layout(net) == expected
    if n_blocks == 9:  # the key names of the published 9-block checkpoints (e.g. horse2zebra latest_net_G_A.pth)
        assert {
            "model.10.conv_block.1.weight",
            "model.18.conv_block.5.bias",
            "model.19.weight",
            "model.22.weight",
            "model.26.weight",
            "model.26.bias",
        } <= set(expected)
    sd = random_state(expected, seed=n_blocks)
    net.load_state_dict(sd, strict=True)
    x = torch.rand(2, 3, 20, 28) * 2 - 1
    torch.testing.assert_close(net(x), ref_cyclegan_g(sd, x, n_blocks), atol=1e-5, rtol=1e-4)

    arch = resnet_arch_from_state_dict(sd)
    assert asdict(arch) == {"in_channels": 3, "out_channels": 3, "ngf": ngf, "n_blocks": n_blocks, "dropout": False}
    ResnetGenerator(**asdict(arch)).load_state_dict(sd, strict=True)


def test_old_checkpoints_with_instance_norm_running_stats_load_after_stripping() -> None:
    ngf, n_blocks = 8, 2
    sd = random_state(official_cyclegan_g(3, 3, ngf, n_blocks))
    old = dict(sd)
    for prefix, c in cyclegan_g_norm_layers(ngf, n_blocks).items():
        old[f"{prefix}.running_mean"] = torch.zeros(c)
        old[f"{prefix}.running_var"] = torch.ones(c)
        old[f"{prefix}.num_batches_tracked"] = torch.tensor(0)
    net = ResnetGenerator(3, 3, ngf, n_blocks)
    with pytest.raises(RuntimeError, match="Unexpected key"):
        net.load_state_dict(old, strict=True)
    stripped = strip_instance_norm_stats(old)
    assert stripped.keys() == sd.keys()
    net.load_state_dict(stripped, strict=True)
    # a DataParallel-saved file (keys prefixed with "module.") is handled too
    net.load_state_dict(strip_instance_norm_stats({f"module.{k}": v for k, v in old.items()}), strict=True)
    assert resnet_arch_from_state_dict(old).n_blocks == n_blocks


def test_patchgan_layout_load_and_forward() -> None:
    net = NLayerDiscriminator(3, 8, 3)
    assert layout(net) == PATCHGAN_3_NDF8
    sd = random_state(PATCHGAN_3_NDF8)
    old = dict(sd) | {f"model.{i}.running_mean": torch.zeros(c) for i, c in ((3, 16), (6, 32), (9, 64))}
    net.load_state_dict(strip_instance_norm_stats(old), strict=True)
    x = torch.rand(2, 3, 32, 40) * 2 - 1
    out = net(x)
    assert out.shape == (2, 1, 2, 3)  # 32 -> 16 -> 8 -> 4 -> 3 -> 2 (and 40 -> 3)
    torch.testing.assert_close(out, ref_patchgan(sd, x), atol=1e-5, rtol=1e-4)
    assert asdict(patchgan_arch_from_state_dict(sd)) == {"in_channels": 3, "ndf": 8, "n_layers": 3}


# --- U-GAT-IT ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("light", [True, False])
def test_ugatit_generator_layout_and_load(light: bool) -> None:
    expected = official_ugatit_g(3, 3, 4, 2, 16, light)
    net = UgatitGenerator(3, 3, ngf=4, n_blocks=2, img_size=16, light=light)
    assert layout(net) == expected
    net.load_state_dict(random_state(expected), strict=True)


def test_ugatit_generator_forward_matches_official() -> None:
    sd = random_state(official_ugatit_g(3, 3, 4, 2, 16, True), seed=3)
    net = UgatitGenerator(3, 3, ngf=4, n_blocks=2, img_size=16, light=True)
    net.load_state_dict(sd, strict=True)
    x = torch.rand(2, 3, 16, 24) * 2 - 1
    for got, want in zip(net(x), ref_ugatit_g_light(sd, x, 2), strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("n_layers", [5, 7])
def test_ugatit_discriminator_layout_load_and_forward(n_layers: int) -> None:
    expected = official_ugatit_d(3, 4, n_layers)
    net = UgatitDiscriminator(3, ndf=4, n_layers=n_layers)
    assert layout(net) == expected
    sd = random_state(expected, seed=n_layers)
    net.load_state_dict(sd, strict=True)
    net.eval()  # no power iteration: the weights are exactly W / (u^T W v) of the loaded tensors
    x = torch.rand(2, 3, 128, 128) * 2 - 1
    out, cam, _ = net(x)
    want_out, want_cam = ref_ugatit_d(sd, x, n_layers)
    torch.testing.assert_close(out, want_out, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(cam, want_cam, atol=1e-5, rtol=1e-4)


def test_ugatit_checkpoint_arch_inference_and_loading_into_the_family() -> None:
    """A whole UGATIT-pytorch `params` dict (as UGATIT.save writes it) -> arch -> family nets, loaded strictly."""
    g = official_ugatit_g(3, 3, 4, 3, 16, light=False)
    d_global, d_local = official_ugatit_d(3, 4, 4), official_ugatit_d(3, 4, 3)
    params = {
        "genA2B": random_state(g, 1),
        "genB2A": random_state(g, 2),
        "disGA": random_state(d_global, 3),
        "disGB": random_state(d_global, 4),
        "disLA": random_state(d_local, 5),
        "disLB": random_state(d_local, 6),
    }
    arch = ugatit_arch_from_state_dict(params)
    assert asdict(arch) == {
        "in_channels": 3,
        "out_channels": 3,
        "ngf": 4,
        "n_blocks": 3,
        "light": False,
        "img_size": 16,
        "n_dis_global": 4,
        "n_dis_local": 3,
    }
    light = ugatit_arch_from_state_dict(random_state(official_ugatit_g(3, 3, 8, 4, 256, light=True)))
    assert (light.light, light.ngf, light.n_blocks, light.img_size) == (True, 8, 4, None)

    cfg = ugatit_family.SPEC.make_config(
        overrides={
            "ngf": arch.ngf,
            "ndf": 4,
            "n_blocks": arch.n_blocks,
            "light": arch.light,
            "n_dis_global": arch.n_dis_global,
            "n_dis_local": arch.n_dis_local,
        }
    )
    state = ugatit_family.SPEC.build(cfg, DataSpec("unpaired", arch.img_size, arch.img_size, 3))
    for name, sd in params.items():
        state.nets[name].load_state_dict(sd, strict=True)
    out = ugatit_family.SPEC.translate(state.inference_nets(), torch.zeros(1, 3, 16, 16), "a2b", cfg)
    assert out["image"].shape == (1, 3, 16, 16)


@pytest.mark.parametrize("n_layers", [3, 4, 5, 6, 7, 8])
def test_ugatit_discriminator_depth_from_keys_and_smallest_image(n_layers: int) -> None:
    """Depth and width of an official Discriminator come from its keys and shapes alone, and the smallest image side
    the fit-to-data rule assumes (`ugatit_d_min_side`: 96 px for the report's 7 layers) is where the real network
    starts to run: one pixel less and its reflection padding fails."""
    sd = random_state(official_ugatit_d(3, 2, n_layers), seed=n_layers)
    arch = ugatit_d_arch_from_state_dict({f"module.{k}": v for k, v in sd.items()})  # DataParallel prefix too
    assert (arch.in_channels, arch.ndf, arch.n_layers) == (3, 2, n_layers)
    net = UgatitDiscriminator(3, 2, n_layers)
    net.load_state_dict(sd, strict=True)
    side = ugatit_d_min_side(n_layers)
    assert side == 6 * 2 ** (n_layers - 3)
    assert ugatit_d_fits(side, n_layers) and not ugatit_d_fits(side - 1, n_layers)
    with torch.no_grad():
        assert net(torch.zeros(1, 3, side, side))[0].shape[-1] == ugatit_d_output_size(side, n_layers) == 1
        with pytest.raises(RuntimeError):
            net(torch.zeros(1, 3, side - 1, side - 1))
    with pytest.raises(ValueError, match="not a UGATIT-pytorch Discriminator"):
        ugatit_d_arch_from_state_dict({"gap_fc.weight_orig": sd["gap_fc.weight_orig"]})
