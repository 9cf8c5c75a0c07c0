"""gansvc.losses (generation part): each loss against a hand computation, the gradient penalty against finite
differences."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from gansvc import losses

REAL = torch.tensor([0.0, 2.0, -1.0])
FAKE = torch.tensor([1.0, -3.0, 0.5])


def _sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def test_bce_with_one_sided_label_smoothing_matches_hand_computation() -> None:
    s = 0.1
    real = _mean([-((1 - s) * math.log(_sig(x)) + s * math.log(1 - _sig(x))) for x in REAL.tolist()])
    fake = _mean([-math.log(1 - _sig(x)) for x in FAKE.tolist()])
    gen = _mean([-math.log(_sig(x)) for x in FAKE.tolist()])
    assert losses.d_loss_real("bce", REAL, s).item() == pytest.approx(real, rel=1e-5)
    assert losses.d_loss_fake("bce", FAKE).item() == pytest.approx(fake, rel=1e-5)
    assert losses.d_loss("bce", REAL, FAKE, s).item() == pytest.approx(real + fake, rel=1e-5)
    assert losses.g_loss("bce", FAKE).item() == pytest.approx(gen, rel=1e-5)
    # without smoothing the real part is -log sigmoid
    assert losses.d_loss_real("bce", REAL).item() == pytest.approx(
        _mean([-math.log(_sig(x)) for x in REAL.tolist()]), rel=1e-5
    )


def test_mse_hinge_wasserstein_match_hand_computation() -> None:
    r, f = REAL.tolist(), FAKE.tolist()
    # least squares (Mao et al. 2017): (D(x)-1)^2 + D(G(z))^2 ; G: (D(G(z))-1)^2
    assert losses.d_loss("mse", REAL, FAKE).item() == pytest.approx(
        _mean([(x - 1) ** 2 for x in r]) + _mean([x**2 for x in f])
    )
    assert losses.g_loss("mse", FAKE).item() == pytest.approx(_mean([(x - 1) ** 2 for x in f]))
    # hinge: relu(1 - D(x)) + relu(1 + D(G(z))) ; G: -D(G(z))
    assert losses.d_loss("hinge", REAL, FAKE).item() == pytest.approx(
        _mean([max(0, 1 - x) for x in r]) + _mean([max(0, 1 + x) for x in f])
    )
    assert losses.g_loss("hinge", FAKE).item() == pytest.approx(-_mean(f))
    # wasserstein: D(G(z)) - D(x) ; G: -D(G(z))
    assert losses.d_loss("wasserstein", REAL, FAKE).item() == pytest.approx(_mean(f) - _mean(r))
    assert losses.g_loss("wasserstein", FAKE).item() == pytest.approx(-_mean(f))


def test_label_smoothing_only_touches_bce_real_target() -> None:
    for kind in ("mse", "hinge", "wasserstein"):
        assert losses.d_loss_real(kind, REAL, 0.3).item() == pytest.approx(losses.d_loss_real(kind, REAL).item())


def test_unknown_loss_is_rejected_with_the_choices() -> None:
    with pytest.raises(ValueError, match=r"unknown adversarial loss 'l1'.*bce, mse, hinge, wasserstein"):
        losses.d_loss("l1", REAL, FAKE)  # type: ignore[arg-type]


def test_classification_loss_sums_attributes_and_ignores_unknown_labels() -> None:
    a = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])  # attribute 1: 3 values
    b = torch.tensor([[0.5, -0.5], [1.0, 1.0]])  # attribute 2: 2 values
    labels = torch.tensor([[0, 1], [1, -1]])  # second sample's attribute 2 unknown

    def ce(row: list[float], k: int) -> float:
        return -(row[k] - math.log(sum(math.exp(v) for v in row)))

    expected = _mean([ce([2.0, 0.0, -1.0], 0), ce([0.0, 1.0, 0.0], 1)]) + ce([0.5, -0.5], 1)
    assert losses.classification_loss([a, b], labels).item() == pytest.approx(expected, rel=1e-5)
    # an attribute with no known label contributes 0, not NaN
    all_unknown = torch.tensor([[0, -1], [1, -1]])
    got = losses.classification_loss([a, b], all_unknown).item()
    assert got == pytest.approx(_mean([ce([2.0, 0.0, -1.0], 0), ce([0.0, 1.0, 0.0], 1)]), rel=1e-5)
    with pytest.raises(ValueError, match=r"labels must be \(B, 2\)"):
        losses.classification_loss([a, b], torch.tensor([0, 1]))


def test_interpolate_endpoints_and_shape_check() -> None:
    real, fake = torch.ones(2, 1, 2, 2), -torch.ones(2, 1, 2, 2)
    x = losses.interpolate(real, fake, torch.tensor([1.0, 0.0]))
    assert torch.equal(x[0], real[0]) and torch.equal(x[1], fake[1]) and x.requires_grad
    with pytest.raises(ValueError, match="differ in shape"):
        losses.interpolate(real, fake[:1])


def _critic() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 16, 1), nn.Flatten(0)
    ).double()


def test_gradient_penalty_matches_finite_differences() -> None:
    critic = _critic()
    torch.manual_seed(1)
    real, fake = torch.randn(3, 2, 4, 4, dtype=torch.float64), torch.randn(3, 2, 4, 4, dtype=torch.float64)
    eps = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64)
    gp, norm = losses.gradient_penalty(critic, real, fake, eps)

    # independent path: central finite differences of the critic at each interpolate, no autograd
    x_hat = eps.view(-1, 1, 1, 1) * real + (1 - eps.view(-1, 1, 1, 1)) * fake
    h = 1e-6
    norms = []
    with torch.no_grad():
        for i in range(3):
            grad = torch.zeros(x_hat[i].numel(), dtype=torch.float64)
            flat = x_hat[i].flatten()
            for j in range(flat.numel()):
                up, down = flat.clone(), flat.clone()
                up[j] += h
                down[j] -= h
                grad[j] = (critic(up.view(1, 2, 4, 4)) - critic(down.view(1, 2, 4, 4))).item() / (2 * h)
            norms.append(grad.norm().item())
    expected = _mean([(n - 1.0) ** 2 for n in norms])
    assert gp.item() == pytest.approx(expected, rel=1e-6)
    assert norm.item() == pytest.approx(_mean(norms), rel=1e-6)


def test_gradient_penalty_backpropagates_into_the_critic() -> None:
    critic = _critic()
    real, fake = torch.randn(4, 2, 4, 4, dtype=torch.float64), torch.randn(4, 2, 4, 4, dtype=torch.float64)
    gp, _ = losses.gradient_penalty(critic, real, fake)
    gp.backward()
    # every weight the input gradient depends on gets a gradient (the output bias does not enter d D / d x)
    named = dict(critic.named_parameters())
    for name in ("0.weight", "0.bias", "3.weight"):
        assert named[name].grad is not None and named[name].grad.abs().sum() > 0, name
    assert named["3.bias"].grad is None


def test_penalty_on_a_concatenated_batch_equals_the_separate_penalty() -> None:
    """d_step runs D once on cat(real, fake, x_hat); without batch coupling this gives the same penalty."""
    critic = _critic()
    real, fake = torch.randn(3, 2, 4, 4, dtype=torch.float64), torch.randn(3, 2, 4, 4, dtype=torch.float64)
    eps = torch.tensor([0.3, 0.6, 0.1], dtype=torch.float64)
    separate, _ = losses.gradient_penalty(critic, real, fake, eps)
    x_hat = losses.interpolate(real, fake, eps)
    out = critic(torch.cat([real, fake, x_hat]))
    joint, _ = losses.gradient_penalty_from(out[6:], x_hat)
    assert joint.item() == pytest.approx(separate.item(), rel=1e-10)
