"""gansvc.nn blocks of the generation families: layouts, kernels, instance noise, EMA, clipping."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gansvc.families.adversarial import critic_slices
from gansvc.nn.dcgan_blocks import (
    DiscArch,
    Discriminator,
    GenArch,
    Generator,
    clip_weights_,
    kernel_schedule,
    one_hot_labels,
    resolution_steps,
    upsample_layers,
)
from gansvc.nn.ema import ema_copy, ema_update
from gansvc.nn.noise import InstanceNoise, annealed_std, set_instance_noise


def test_resolution_steps_cover_16_to_256_and_reject_others() -> None:
    assert [resolution_steps(s) for s in (16, 32, 64, 128, 256)] == [2, 3, 4, 5, 6]
    for bad in (8, 48, 512, 100):
        with pytest.raises(ValueError, match="power of two from 16 to 256"):
            resolution_steps(bad)


def test_kernel_schedule_constant_and_progressive() -> None:
    assert kernel_schedule(3, 5, False) == (5, 5, 5)
    assert kernel_schedule(5, 5, True) == (3, 5, 7, 7, 7)
    with pytest.raises(ValueError, match="odd"):
        kernel_schedule(3, 4, False)


def _convs(net: nn.Module) -> list[nn.Module]:
    return [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]


def test_baseline_layout_of_the_report_at_64() -> None:
    """Report 002 baseline: G 512 channels at 4x4 halving to 32 at 64x64; D 64..512; kernel 5."""
    g = Generator(GenArch(size=64, channels=3, latent_dim=128, filters=32))
    d = Discriminator(DiscArch(size=64, channels=3, filters=64))
    assert g.c0 == 512
    assert [c.out_channels for c in _convs(g)] == [256, 128, 64, 32, 3]
    assert [c.out_channels for c in _convs(d)] == [64, 128, 256, 512]
    assert {c.kernel_size for c in _convs(g) + _convs(d)} == {(5, 5)}
    assert not any(isinstance(m, nn.BatchNorm2d) for m in d.modules())
    assert sum(isinstance(m, nn.Dropout) and m.p == 0.3 for m in d.modules()) == 4
    out, cls = d(g(torch.randn(2, 128)))
    assert out.shape == (2,) and cls == []


def test_progressive_kernels_grow_by_layer() -> None:
    g = Generator(GenArch(size=32, channels=1, latent_dim=4, filters=4, progressive_kernels=True))
    d = Discriminator(DiscArch(size=32, channels=1, filters=4, progressive_kernels=True))
    assert [c.kernel_size[0] for c in _convs(g)] == [3, 5, 7, 7]
    assert [c.kernel_size[0] for c in _convs(d)] == [3, 5, 7]
    assert g(torch.randn(2, 4)).shape == (2, 1, 32, 32)


def test_d_norms_skip_the_first_layer_and_activations_follow_the_arch() -> None:
    d_bn = Discriminator(DiscArch(size=32, channels=3, filters=4, norm="batch", dropout=0.0))
    d_ln = Discriminator(DiscArch(size=32, channels=3, filters=4, norm="layer", dropout=0.0))
    assert sum(isinstance(m, nn.BatchNorm2d) for m in d_bn.modules()) == 2
    assert sum(isinstance(m, nn.GroupNorm) and m.num_groups == 1 for m in d_ln.modules()) == 2
    assert not any(isinstance(m, nn.Dropout) for m in d_bn.modules())
    g_relu = Generator(GenArch(size=16, channels=3, latent_dim=4, filters=4, activation="relu"))
    g_leaky = Generator(GenArch(size=16, channels=3, latent_dim=4, filters=4, leaky_slope=0.05))
    assert any(isinstance(m, nn.ReLU) for m in g_relu.modules())
    assert not any(isinstance(m, nn.LeakyReLU) for m in g_relu.modules())
    assert {m.negative_slope for m in g_leaky.modules() if isinstance(m, nn.LeakyReLU)} == {0.05}


def test_conditional_generator_and_heads() -> None:
    g = Generator(GenArch(size=16, channels=3, latent_dim=4, filters=4, attr_sizes=(3, 2)))
    d = Discriminator(DiscArch(size=16, channels=3, filters=4, attr_sizes=(3, 2)))
    assert g.fc.in_features == 4 + 5
    out, cls = d(g(torch.randn(2, 4), torch.tensor([[0, 1], [2, 0]])))
    assert out.shape == (2,) and [c.shape for c in cls] == [(2, 3), (2, 2)]
    with pytest.raises(ValueError, match="conditional"):
        g(torch.randn(2, 4))
    assert one_hot_labels(torch.tensor([[2, 0]]), (3, 2)).tolist() == [[0, 0, 1, 1, 0]]
    with pytest.raises(ValueError, match=r"shape \(N, 2\)"):
        one_hot_labels(torch.tensor([1, 0]), (3, 2))


def test_instance_noise_train_only_and_annealing() -> None:
    d = Discriminator(DiscArch(size=16, channels=1, filters=2, noise="every", noise_std=0.5))
    layers = [m for m in d.modules() if isinstance(m, InstanceNoise)]
    assert len(layers) == 2 and all(m.std == 0.5 for m in layers)
    assert set_instance_noise(d, 0.2) == 2 and all(m.std == 0.2 for m in layers)
    first = Discriminator(DiscArch(size=16, channels=1, filters=2, noise="first"))
    assert sum(isinstance(m, InstanceNoise) for m in first.modules()) == 1
    noise = InstanceNoise(1.0)
    x = torch.zeros(2000)
    assert noise(x).std().item() == pytest.approx(1.0, abs=0.1)
    assert torch.equal(noise.eval()(x), x)
    assert [annealed_std(0.1, s, 10) for s in (0, 5, 10, 20)] == pytest.approx([0.1, 0.05, 0.0, 0.0])
    assert annealed_std(0.1, 1000, 0) == 0.1


def test_ema_update_is_a_lerp_and_copies_buffers() -> None:
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ema = ema_copy(net)
    assert all(not p.requires_grad for p in ema.parameters())
    old = [p.detach().clone() for p in ema.parameters()]
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
        net[1].running_mean.fill_(3.0)
    ema_update(ema, net, decay=0.9)
    for p_old, p_ema, p in zip(old, ema.parameters(), net.parameters(), strict=True):
        assert torch.allclose(p_ema, 0.9 * p_old + 0.1 * p)
    assert torch.equal(ema[1].running_mean, net[1].running_mean)


def test_clip_weights_bounds_every_parameter() -> None:
    d = Discriminator(DiscArch(size=16, channels=3, filters=4, norm="batch"))
    clip_weights_(d, 0.01)
    assert max(p.abs().max().item() for p in d.parameters()) <= 0.01


def test_critic_slices_split_reuse_and_tiny_batches() -> None:
    sl = critic_slices(32, 5, "split")
    assert [s.stop - s.start for s in sl] == [6, 7, 6, 7, 6] and sl[0].start == 0 and sl[-1].stop == 32
    assert critic_slices(16, 5, "reuse") == [slice(0, 16)] * 5
    tiny = critic_slices(2, 5, "split")
    assert len(tiny) == 5 and all(s.stop - s.start == 1 for s in tiny)
    assert critic_slices(1, 5, "split") == [slice(0, 1)] * 5
    assert critic_slices(7, 1, "split") == [slice(0, 7)]


# --------------------------------------------------------------------------------------------------------------------
# upsampling: the transposed convolution's checkerboard (Odena et al. 2016) and the resize-convolution without it
# --------------------------------------------------------------------------------------------------------------------


def _interior_spread(kind: str, k: int) -> float:
    """max - min over the interior of one upsampling (all weights 1) applied to a constant map: uneven overlap of a
    transposed conv's kernel shows as a checkerboard, a resize-convolution gives a constant."""
    layers = nn.Sequential(*upsample_layers(kind, 1, 1, k))
    for m in layers.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.ones_(m.weight)
    with torch.no_grad():
        out = layers(torch.ones(1, 1, 12, 12))
    assert out.shape == (1, 1, 24, 24)
    inner = out[..., 6:-6, 6:-6]
    return float(inner.max() - inner.min())


def test_transposed_kernel_5_stride_2_paints_a_checkerboard_and_resize_does_not() -> None:
    assert _interior_spread("transposed", 5) > 0.5, "kernel 5 over stride 2: 3 and 2 taps alternate (Odena et al.)"
    for k in (3, 5, 7):
        assert _interior_spread("resize", k) == 0.0
    with pytest.raises(ValueError, match="upsample"):
        upsample_layers("pixelshuffle", 1, 1, 3)  # type: ignore[arg-type]


def test_resize_generator_doubles_each_layer_and_keeps_the_parameter_count() -> None:
    for size in (16, 32, 64):
        kw = {"size": size, "channels": 3, "latent_dim": 8, "filters": 4}
        resize, transposed = Generator(GenArch(**kw, upsample="resize")), Generator(GenArch(**kw))
        assert resize(torch.randn(2, 8)).shape == (2, 3, size, size)
        assert not any(isinstance(m, nn.ConvTranspose2d) for m in resize.modules())
        assert sum(isinstance(m, nn.Upsample) for m in resize.modules()) == resolution_steps(size)
        count = [sum(p.numel() for p in g.parameters()) for g in (resize, transposed)]
        assert count[0] == count[1]


def test_the_report_generator_keeps_its_transposed_layout() -> None:
    """The report's baseline network (report 002), parameter by parameter, at 16 px: unchanged by the upsample
    option (checkpoints of earlier versions still load)."""
    g = Generator(GenArch(size=16, channels=3, latent_dim=128, filters=32))
    shapes = {k: tuple(v.shape) for k, v in g.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert shapes == {
        "fc.weight": (2048, 128),
        "fc_norm.weight": (128,),
        "fc_norm.bias": (128,),
        "fc_norm.running_mean": (128,),
        "fc_norm.running_var": (128,),
        "blocks.0.weight": (128, 64, 5, 5),
        "blocks.1.weight": (64,),
        "blocks.1.bias": (64,),
        "blocks.1.running_mean": (64,),
        "blocks.1.running_var": (64,),
        "blocks.3.weight": (64, 32, 5, 5),
        "blocks.4.weight": (32,),
        "blocks.4.bias": (32,),
        "blocks.4.running_mean": (32,),
        "blocks.4.running_var": (32,),
        "out.weight": (3, 32, 5, 5),
        "out.bias": (3,),
    }
    assert all(isinstance(g.blocks[i], nn.ConvTranspose2d) for i in (0, 3))


def test_unwrap_has_one_definition() -> None:
    """issue 16 #5: `unwrap` (families) and `plain_module` (nn) were the same function; one is left, in nn."""
    import gansvc.nn.ema as ema
    from gansvc.families import base
    from gansvc.nn.wrappers import unwrap

    assert base.unwrap is unwrap and not hasattr(ema, "plain_module")
    net = nn.Linear(2, 2)
    wrapped = nn.Module()
    wrapped.module = nn.Module()  # type: ignore[assignment]
    wrapped.module._orig_mod = net  # type: ignore[assignment]
    assert unwrap(wrapped) is net and unwrap(net) is net  # nested DDP (.module) / torch.compile (._orig_mod)
