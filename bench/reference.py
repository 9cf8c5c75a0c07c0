"""Plain eager PyTorch reference training steps: the baseline gansvc's step is measured against (bench/train_bench.py).

Each reference runs the *same networks* (built by the family, so the architecture is identical) with the step
written the way the public reference implementations write it: fp32, no Ray, no DDP, no EMA, no logging, no
gradient bookkeeping. What each one follows:

- n_critic = 1 (dcgan, acgan): the PyTorch DCGAN example (pytorch/examples dcgan/main.py) — ONE generator forward per
  step whose output is scored by D detached (D update) and again with the graph (G update); D sees real and fake in
  two forwards. AC-GAN adds the auxiliary cross-entropy on both (eriklindernoren/PyTorch-GAN acgan.py).
- n_critic > 1 (wgan, wgan-gp, wacgan): the WGAN / WGAN-GP references (martinarjovsky/WassersteinGAN,
  igul222/improved_wgan_training): n_critic critic updates, each on its own real batch with fresh detached fakes,
  weight clipping or the gradient penalty on interpolates; then D's parameters get requires_grad=False and G steps.
- cyclegan: junyanz/pytorch-CycleGAN-and-pix2pix `CycleGANModel.optimize_parameters` — forward (fake_B, rec_A,
  fake_A, rec_B), identity forwards G_A(real_B) / G_B(real_A) as separate calls, D frozen by requires_grad for the
  G update, then D_A and D_B on real and pooled fake in separate forwards, each loss halved.
- ugatit: znxlwm/UGATIT-pytorch `UGATIT.train` — D update on real and (not detached) fakes in separate forwards,
  then the G update with every generator and discriminator forward run again, then rho clipping.

The sample counts match gansvc's config (the n_critic critic updates split the batch as `critic_batches="split"`
does), so both sides do the same amount of model work and differ only in how the step is organised.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

RefStep = Callable[[Any, Mapping[str, Tensor], Any], None]


def _requires_grad(nets: list[nn.Module], flag: bool) -> None:
    for net in nets:
        for p in net.parameters():
            p.requires_grad_(flag)


def _adv_real(kind: str, out: Tensor, smooth: float) -> Tensor:
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(out, torch.full_like(out, 1.0 - smooth))
    if kind == "mse":
        return ((out - 1) ** 2).mean()
    return F.relu(1 - out).mean() if kind == "hinge" else -out.mean()


def _adv_fake(kind: str, out: Tensor) -> Tensor:
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(out, torch.zeros_like(out))
    if kind == "mse":
        return (out**2).mean()
    return F.relu(1 + out).mean() if kind == "hinge" else out.mean()


def _adv_g(kind: str, out: Tensor) -> Tensor:
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(out, torch.ones_like(out))
    if kind == "mse":
        return ((out - 1) ** 2).mean()
    return -out.mean()


def _cls(logits: list[Tensor], labels: Tensor) -> Tensor:
    return sum(F.cross_entropy(lg, labels[:, j]) for j, lg in enumerate(logits))  # type: ignore[return-value]


def adversarial_step(state: Any, batch: Mapping[str, Tensor], cfg: Any) -> None:
    """dcgan / wgan / wgan-gp / acgan / wacgan (see the module docstring)."""
    G, D = state.nets["G"], state.nets["D"]
    opt_g, opt_d = state.optimizers["G"], state.optimizers["D"]
    real_all, labels_all = batch["image"], batch.get("labels")
    cond = labels_all is not None and len(getattr(D, "heads", ())) > 0
    w_cls = getattr(cfg, "class_weight", 0.0)
    sizes = tuple(G.attr_sizes) if cond else ()

    def sample(n: int, device: torch.device) -> tuple[Tensor, Tensor | None]:
        z = torch.randn(n, cfg.latent_dim, device=device)
        y = torch.stack([torch.randint(0, k, (n,), device=device) for k in sizes], 1) if cond else None
        return z, y

    def g_forward(z: Tensor, y: Tensor | None) -> Tensor:
        return G(z, y) if cond else G(z)

    if cfg.n_critic == 1:  # pytorch/examples dcgan: one G forward serves both updates
        n = real_all.shape[0]
        z, y = sample(n, real_all.device)
        fake = g_forward(z, y)
        opt_d.zero_grad()
        out_r, cls_r = D(real_all)
        loss_r = _adv_real(cfg.loss, out_r, cfg.label_smoothing)
        if cond:
            loss_r = loss_r + w_cls * _cls(cls_r, labels_all)
        loss_r.backward()
        out_f, cls_f = D(fake.detach())
        loss_f = _adv_fake(cfg.loss, out_f)
        if cond and cfg.d_class_on_fake:
            loss_f = loss_f + w_cls * _cls(cls_f, y)
        loss_f.backward()
        opt_d.step()
        opt_g.zero_grad()
        out, cls = D(fake)
        loss_g = _adv_g(cfg.loss, out) + (w_cls * _cls(cls, y) if cond else 0.0)
        loss_g.backward()
        opt_g.step()
        return
    # WGAN / WGAN-GP references: n_critic critic updates on their own real batches, then one G update
    _requires_grad([D], True)
    for part in torch.tensor_split(torch.arange(real_all.shape[0]), cfg.n_critic):
        real = real_all[part]
        opt_d.zero_grad()
        z, y = sample(real.shape[0], real.device)
        with torch.no_grad():
            fake = g_forward(z, y)
        out_r, cls_r = D(real)
        out_f, cls_f = D(fake)
        loss = _adv_real(cfg.loss, out_r, cfg.label_smoothing) + _adv_fake(cfg.loss, out_f)
        if cond:
            loss = loss + w_cls * (_cls(cls_r, labels_all[part]) + (_cls(cls_f, y) if cfg.d_class_on_fake else 0.0))
        if cfg.gp_lambda > 0:
            eps = torch.rand(real.shape[0], 1, 1, 1, device=real.device)
            x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
            (grad,) = torch.autograd.grad(D(x_hat)[0].sum(), x_hat, create_graph=True)
            loss = loss + cfg.gp_lambda * ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()
        loss.backward()
        opt_d.step()
        if cfg.clip_value > 0:
            for p in D.parameters():
                p.data.clamp_(-cfg.clip_value, cfg.clip_value)
    _requires_grad([D], False)
    opt_g.zero_grad()
    z, y = sample(real_all.shape[0], real_all.device)
    out, cls = D(g_forward(z, y))
    loss_g = _adv_g(cfg.loss, out) + (w_cls * _cls(cls, y) if cond else 0.0)
    loss_g.backward()
    opt_g.step()
    _requires_grad([D], True)


def cyclegan_step(state: Any, batch: Mapping[str, Tensor], cfg: Any) -> None:
    """pytorch-CycleGAN-and-pix2pix CycleGANModel.optimize_parameters (lsgan, lambda_A = lambda_B)."""
    g_a, g_b, d_a, d_b = (state.nets[k] for k in ("G_A", "G_B", "D_A", "D_B"))
    real_a, real_b = batch["A"], batch["B"]
    fake_b = g_a(real_a)
    rec_a = g_b(fake_b)
    fake_a = g_b(real_b)
    rec_b = g_a(fake_a)
    _requires_grad([d_a, d_b], False)
    state.optimizers["G"].zero_grad()
    lam, lam_idt = cfg.lambda_cycle, cfg.lambda_identity
    loss = torch.zeros((), device=real_a.device)
    if lam_idt > 0:
        loss = loss + (F.l1_loss(g_a(real_b), real_b) + F.l1_loss(g_b(real_a), real_a)) * lam * lam_idt
    loss = loss + _adv_g("mse", d_a(fake_b)) + _adv_g("mse", d_b(fake_a))
    loss = loss + (F.l1_loss(rec_a, real_a) + F.l1_loss(rec_b, real_b)) * lam
    loss.backward()
    state.optimizers["G"].step()
    _requires_grad([d_a, d_b], True)
    state.optimizers["D"].zero_grad()
    for d, real, fake in (
        (d_a, real_b, state.extras["fake_B_pool"].query(fake_b)),
        (d_b, real_a, state.extras["fake_A_pool"].query(fake_a)),
    ):
        ((_adv_real("mse", d(real), 0.0) + _adv_fake("mse", d(fake.detach()))) * 0.5).backward()
    state.optimizers["D"].step()
    for sched in state.schedulers.values():
        sched.step()


def ugatit_step(state: Any, batch: Mapping[str, Tensor], cfg: Any) -> None:
    """UGATIT-pytorch UGATIT.train, one iteration (adv / cycle / identity / cam weights from cfg)."""
    n = state.nets
    real_a, real_b = batch["A"], batch["B"]
    mse, bce, l1 = nn.MSELoss(), nn.BCEWithLogitsLoss(), nn.L1Loss()
    ones, zeros = torch.ones_like, torch.zeros_like
    # --- D update (the reference does not detach the fakes) ---
    state.optimizers["D"].zero_grad()
    fake_a2b, _, _ = n["genA2B"](real_a)
    fake_b2a, _, _ = n["genB2A"](real_b)
    d_loss = torch.zeros((), device=real_a.device)
    for dom, real, fake in (("A", real_a, fake_b2a), ("B", real_b, fake_a2b)):
        for kind in ("G", "L"):
            r_logit, r_cam, _ = n[f"dis{kind}{dom}"](real)
            f_logit, f_cam, _ = n[f"dis{kind}{dom}"](fake)
            d_loss = d_loss + cfg.lambda_adv * (
                mse(r_logit, ones(r_logit))
                + mse(f_logit, zeros(f_logit))
                + mse(r_cam, ones(r_cam))
                + mse(f_cam, zeros(f_cam))
            )
    d_loss.backward()
    state.optimizers["D"].step()
    # --- G update ---
    state.optimizers["G"].zero_grad()
    fake_a2b, fake_a2b_cam, _ = n["genA2B"](real_a)
    fake_b2a, fake_b2a_cam, _ = n["genB2A"](real_b)
    fake_a2b2a, _, _ = n["genB2A"](fake_a2b)
    fake_b2a2b, _, _ = n["genA2B"](fake_b2a)
    fake_a2a, fake_a2a_cam, _ = n["genB2A"](real_a)
    fake_b2b, fake_b2b_cam, _ = n["genA2B"](real_b)
    g_loss = torch.zeros((), device=real_a.device)
    for dom, fake, rec, real, same, cam_src, cam_tgt in (
        ("A", fake_b2a, fake_a2b2a, real_a, fake_a2a, fake_b2a_cam, fake_a2a_cam),
        ("B", fake_a2b, fake_b2a2b, real_b, fake_b2b, fake_a2b_cam, fake_b2b_cam),
    ):
        adv = torch.zeros((), device=real_a.device)
        for kind in ("G", "L"):
            logit, cam, _ = n[f"dis{kind}{dom}"](fake)
            adv = adv + mse(logit, ones(logit)) + mse(cam, ones(cam))
        g_loss = g_loss + (
            cfg.lambda_adv * adv
            + cfg.lambda_cycle * l1(rec, real)
            + cfg.lambda_identity * l1(same, real)
            + cfg.lambda_cam * (bce(cam_src, ones(cam_src)) + bce(cam_tgt, zeros(cam_tgt)))
        )
    g_loss.backward()
    state.optimizers["G"].step()
    for k in ("genA2B", "genB2A"):  # RhoClipper(0, 1)
        for name, p in n[k].named_parameters():
            if name.endswith("rho"):
                p.data.clamp_(0.0, 1.0)
    for sched in state.schedulers.values():
        sched.step()


# family -> reference step; families without a public reference step to follow are measured without a baseline
REFERENCES: dict[str, RefStep] = {
    "dcgan": adversarial_step,
    "wgan": adversarial_step,
    "wgan-gp": adversarial_step,
    "acgan": adversarial_step,
    "wacgan": adversarial_step,
    "cyclegan": cyclegan_step,
    "ugatit": ugatit_step,
}
