"""The training and inference steps shared by the DCGAN-style families (dcgan, wgan, wgan-gp, acgan, wacgan).

A family module declares its config (`ConvGanFields` [+ `ConditionalFields`] with its own defaults) and one
`DcganStyle(name, conditional)`; the style's `build` / `train_step` / `generate` go into its FamilySpec. What differs
between the five is data (the config's fields and whether labels condition the nets), never a branch on a name.

One `train_step` = `n_critic` D updates, then one G update (Arjovsky et al. 2017 Algorithm 1; n_critic = 1 is the
plain alternating GAN step of Goodfellow et al. 2014):
- D step (`d_step`): fakes are generated without a graph (G is not trained by this step); one D forward on
  cat(real, fake) (plus one on the interpolates for the gradient penalty) and one backward, unless D has batch
  norm: then real and fake go through D in two forward+backward passes (BN statistics stay per-domain, as in the
  DCGAN reference code) whose gradients add up to the same loss. After the optimizer step the critic weights are
  clipped when clip_value > 0.
- G step (`g_step`): D is frozen (`requires_grad=False`, train mode kept, DDP `no_sync`): the G loss backward flows
  through D to G without computing D's weight gradients (as the WGAN reference code does; computing and then
  discarding them cost 2-22% of the whole step on CPU, most for dcgan / acgan: bench/before_after.py), so D's
  gradients stay those of D's last update. Only G's optimizer steps; the EMA copy of G is updated afterwards.
Nets are always called through `state.nets[...]` (they may be DDP wrappers); `unwrap` is used only to reach
weights (clipping, noise std, EMA). Each forward of a wrapped net is followed by exactly one backward, except the
gradient-penalty critic step: its real/fake forward runs under DDP's no_sync() and one backward covers both forwards.

How the n_critic D steps use the batch is `cfg.critic_batches`: "split" (default) gives each critic step its own
slice of the batch (torch.tensor_split into n_critic parts; when the batch is smaller than n_critic the parts cycle),
"reuse" gives every critic step the whole batch (with fresh noise each time). The G step generates as many images as
the batch has.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, TypeVar, cast

import torch
from pydantic import BaseModel
from torch import Tensor, nn

from gansvc import losses
from gansvc.data.spec import DataSpec
from gansvc.families.base import Batch, FamilyConfig, FamilySpec, GanState, RunPreset
from gansvc.families.gan_fields import ConditionalFields, ConvGanFields, make_optimizer
from gansvc.families.training import frozen
from gansvc.nn.dcgan_blocks import DiscArch, Discriminator, DNorm, GenArch, Generator, clip_weights_, resolution_steps
from gansvc.nn.ema import ema_copy, ema_update
from gansvc.nn.noise import annealed_std, set_instance_noise
from gansvc.nn.wrappers import unwrap

# --------------------------------------------------------------------------------------------------------------------
# build
# --------------------------------------------------------------------------------------------------------------------


def attribute_sizes(data: DataSpec) -> tuple[int, ...]:
    """Number of values of each attribute, in label-column order."""
    return tuple(len(v) for v in data.attributes.values())


def check_data(data: DataSpec, family: str, conditional: bool) -> None:
    """Fail early, with what to change, when a dataset cannot feed this family (`family`: its name, for the message)."""
    if data.layout != "single":
        raise ValueError(f"{family} trains on single-image datasets, the data has layout {data.layout!r}")
    resolution_steps(data.image_size)  # square, power of two, 16..256
    if data.channels < 1:
        raise ValueError(f"data.channels must be >= 1, got {data.channels}")
    if conditional:
        if not data.attributes:
            raise ValueError(f"{family} is label-conditioned: the dataset needs attributes (a labels CSV)")
        empty = [k for k, v in data.attributes.items() if len(v) < 1]
        if empty:
            raise ValueError(f"attributes without values: {', '.join(empty)}")


def build_parts(
    cfg: ConvGanFields, data: DataSpec, conditional: bool
) -> tuple[dict[str, nn.Module], dict[str, torch.optim.Optimizer], dict[str, nn.Module]]:
    """(nets {"G", "D"}, optimizers {"G", "D"}, ema {"G"} or {}) for a DCGAN-style family on data `check_data` passed.
    `conditional`: one-hot labels into G and one classifier head per attribute in D."""
    sizes = attribute_sizes(data) if conditional else ()
    g = Generator(
        GenArch(
            size=data.image_size,
            channels=data.channels,
            latent_dim=cfg.latent_dim,
            filters=cfg.g_filters,
            max_filters=cfg.max_filters,
            kernel_size=cfg.kernel_size,
            progressive_kernels=cfg.progressive_kernels,
            activation=cfg.activation,
            leaky_slope=cfg.leaky_slope,
            attr_sizes=sizes,
            upsample=cfg.upsample,
        )
    )
    norm: DNorm = "batch" if cfg.d_batchnorm else "layer" if cfg.d_layernorm else "none"
    d = Discriminator(
        DiscArch(
            size=data.image_size,
            channels=data.channels,
            filters=cfg.d_filters,
            max_filters=cfg.max_filters,
            kernel_size=cfg.kernel_size,
            progressive_kernels=cfg.progressive_kernels,
            leaky_slope=cfg.d_leaky_slope,
            norm=norm,
            dropout=cfg.d_dropout,
            noise=cfg.noise,
            noise_std=cfg.noise_std,
            attr_sizes=sizes,
        )
    )
    opts = {
        "G": make_optimizer(cfg.optimizer, g.parameters(), cfg.lr_g, cfg.betas, cfg.momentum),
        "D": make_optimizer(cfg.optimizer, d.parameters(), cfg.lr_d, cfg.betas, cfg.momentum),
    }
    ema = {"G": ema_copy(g)} if getattr(cfg, "ema", False) else {}
    return {"G": g, "D": d}, opts, ema


# --------------------------------------------------------------------------------------------------------------------
# steps
# --------------------------------------------------------------------------------------------------------------------


def _conditional(state: GanState) -> bool:
    return len(getattr(unwrap(state.nets["D"]), "heads", ())) > 0


def _attr_sizes(state: GanState) -> tuple[int, ...]:
    # build_parts makes G a Generator; GanState holds any family's nets, as nn.Module
    return tuple(cast(Generator, unwrap(state.nets["G"])).attr_sizes)


def fake_labels(labels: Tensor, attr_sizes: tuple[int, ...], mode: str) -> Tensor:
    """Labels for generated images: the data's own (unknown values, -1, drawn uniformly) or uniform draws."""
    draws = torch.stack([torch.randint(0, k, (labels.shape[0],), device=labels.device) for k in attr_sizes], 1)
    return draws if mode == "uniform" else torch.where(labels >= 0, labels, draws)


def _class_settings(cfg: BaseModel) -> tuple[float, bool, str]:
    """(class_weight, d_class_on_fake, fake_labels) of a config with ConditionalFields; no class loss without."""
    # typed BaseModel, not ConvGanFields: mypy deems a subclass of both field groups impossible (their pydantic
    # __init__ signatures differ), and the check below would look unreachable to it
    if isinstance(cfg, ConditionalFields):
        return cfg.class_weight, cfg.d_class_on_fake, cfg.fake_labels
    return 0.0, False, "data"


def _real_accuracy(logits: list[Tensor], labels: Tensor) -> Tensor:
    """Mean over attributes of the classifier's accuracy on real images with known labels (for logging)."""
    known = (labels >= 0).float()
    hits = [
        ((lg.argmax(1) == labels[:, j]).float() * known[:, j]).sum() / known[:, j].sum().clamp(min=1)
        for j, lg in enumerate(logits)
    ]
    return torch.stack(hits).mean().detach()


def _touch(outputs: list[Tensor], zero: Tensor) -> Tensor:
    """0 * sum(outputs): keeps unused heads in the graph, since a DDP-wrapped D needs every parameter in each
    backward."""
    return sum((o.sum() for o in outputs), zero) * 0.0


def d_step(state: GanState, real: Tensor, labels: Tensor | None, step: int, cfg: ConvGanFields) -> dict[str, Tensor]:
    """One update of D on `real` (and as many fakes). Returns detached 0-dim tensors."""
    G, D, opt = state.nets["G"], state.nets["D"], state.optimizers["D"]
    cond = _conditional(state)
    if cond and labels is None:
        raise ValueError("this family is label-conditioned: the batch needs 'labels'")
    y_real = labels if cond else None  # not None exactly when cond
    w_cls, cls_on_fake, label_mode = _class_settings(cfg)
    n = real.shape[0]
    zero = real.new_zeros(())
    z = torch.randn(n, cfg.latent_dim, device=real.device, dtype=real.dtype)
    y_fake = fake_labels(y_real, _attr_sizes(state), label_mode) if y_real is not None else None
    with torch.no_grad():  # G is not trained here: its output enters D detached
        fake = G(z, y_fake) if cond else G(z)
    opt.zero_grad(set_to_none=True)
    stats: dict[str, Tensor] = {}

    if cfg.d_batchnorm:
        # batch norm: real and fake in separate forward+backward passes (per-domain batch statistics, as in the DCGAN
        # reference code); the gradients add up to those of the summed loss
        out_r, cls_r = D(real)
        c_r = losses.classification_loss(cls_r, y_real) if y_real is not None else zero
        loss_r = losses.d_loss_real(cfg.loss, out_r, cfg.label_smoothing) + w_cls * c_r
        loss_r.backward()
        out_f, cls_f = D(fake)
        c_f = losses.classification_loss(cls_f, y_fake) if y_fake is not None and cls_on_fake else _touch(cls_f, zero)
        loss_f = losses.d_loss_fake(cfg.loss, out_f) + w_cls * c_f
        loss_f.backward()
        loss = loss_r.detach() + loss_f.detach()
    else:
        # one forward on cat(real, fake): samples do not interact without batch norm. The gradient penalty gets its
        # own forward on the interpolates: inside the concatenated batch, its double backward would run through D
        # for all 3n samples (the critic step measured 1.45x slower that way on CPU). A DDP-wrapped D takes the first
        # forward under no_sync(), so the one backward below (which covers both graphs) is reduced exactly once.
        x_hat = losses.interpolate(real, fake) if cfg.gp_lambda > 0 else None
        no_sync = getattr(D, "no_sync", None)
        with no_sync() if x_hat is not None and callable(no_sync) else contextlib.nullcontext():
            out, cls = D(torch.cat([real, fake]))
        outs = out.split(n)
        out_r, out_f = outs[0], outs[1]
        cls_r = [c[:n] for c in cls]
        c_r = losses.classification_loss(cls_r, y_real) if y_real is not None else zero
        c_f = (
            losses.classification_loss([c[n : 2 * n] for c in cls], y_fake)
            if y_fake is not None and cls_on_fake
            else zero
        )
        loss = losses.d_loss(cfg.loss, out_r, out_f, cfg.label_smoothing) + w_cls * (c_r + c_f)
        if x_hat is not None:
            gp, grad_norm = losses.gradient_penalty_from(D(x_hat)[0], x_hat)
            loss = loss + cfg.gp_lambda * gp
            stats["gp"], stats["grad_norm"] = gp.detach(), grad_norm
        loss.backward()
        loss = loss.detach()
    opt.step()
    if cfg.clip_value > 0:
        clip_weights_(unwrap(D), cfg.clip_value)  # after every critic update (Arjovsky et al. Algorithm 1)

    stats["loss_d"] = loss
    stats["d_real"], stats["d_fake"] = out_r.detach().mean(), out_f.detach().mean()
    if cfg.loss == "wasserstein":
        stats["wdist"] = stats["d_real"] - stats["d_fake"]  # critic's estimate of W(P_data, P_G)
    if y_real is not None:
        stats["cls_real"], stats["acc_real"] = c_r.detach(), _real_accuracy(cls_r, y_real)
        stats["cls_fake"] = c_f.detach() if cls_on_fake else zero
    return stats


def g_step(state: GanState, real: Tensor, labels: Tensor | None, step: int, cfg: ConvGanFields) -> dict[str, Tensor]:
    """One update of G with as many samples as `real` has (`real` gives size, device and dtype; its pixels are unused).
    D is frozen for it (see the module docstring), so its gradients stay those of its last update, which gradient
    monitoring reports. Returns detached 0-dim tensors."""
    G, D = state.nets["G"], state.nets["D"]
    cond = _conditional(state)
    w_cls, _, label_mode = _class_settings(cfg)
    n = real.shape[0]
    state.optimizers["G"].zero_grad(set_to_none=True)
    z = torch.randn(n, cfg.latent_dim, device=real.device, dtype=real.dtype)
    stats: dict[str, Tensor] = {}
    with frozen(D, eval_mode=False):
        if cond:
            if labels is None:
                raise ValueError("this family is label-conditioned: the batch needs 'labels'")
            y = fake_labels(labels, _attr_sizes(state), label_mode)
            out, cls = D(G(z, y))
            c = losses.classification_loss(cls, y)
            stats["cls_g"] = c.detach()
        else:
            out, _ = D(G(z))
            c = real.new_zeros(())
        loss = losses.g_loss(cfg.loss, out) + w_cls * c
        loss.backward()
    state.optimizers["G"].step()
    if "G" in state.ema:
        ema_update(state.ema["G"], G, getattr(cfg, "ema_decay", 0.999))
    stats["loss_g"] = loss.detach()
    return stats


def critic_slices(n: int, n_critic: int, mode: str) -> list[slice]:
    """Which samples of a batch of `n` each of the n_critic D steps sees (see module docstring)."""
    if mode == "reuse" or n_critic == 1:
        return [slice(0, n)] * n_critic
    bounds = [round(i * n / n_critic) for i in range(n_critic + 1)]
    parts = [slice(a, b) for a, b in pairwise(bounds) if b > a]
    return [parts[i % len(parts)] for i in range(n_critic)]


def train_step(state: GanState, batch: Batch, step: int, cfg: ConvGanFields, conditional: bool) -> dict[str, float]:
    """n_critic D steps then one G step on one batch; returns detached floats (means over the critic steps)."""
    real = batch["image"]
    labels = batch.get("labels") if conditional else None
    if conditional and labels is None:
        raise ValueError("this family is label-conditioned: batches need 'labels' (B, n_attributes) int64")
    if real.shape[0] < 1:
        raise ValueError("empty batch")
    extra: dict[str, Tensor] = {}
    if cfg.noise != "off":
        std = annealed_std(cfg.noise_std, step, cfg.noise_anneal_steps)
        set_instance_noise(unwrap(state.nets["D"]), std)
        extra["noise_std"] = real.new_tensor(std)
    d_stats = [
        d_step(state, real[s], labels[s] if labels is not None else None, step, cfg)
        for s in critic_slices(real.shape[0], cfg.n_critic, cfg.critic_batches)
    ]
    stats = {k: torch.stack([s[k] for s in d_stats]).mean() for k in d_stats[0]}
    stats.update(g_step(state, real, labels, step, cfg))
    stats.update(extra)
    keys = list(stats)
    values = torch.stack([stats[k].float() for k in keys]).tolist()  # one device sync for all scalars
    return dict(zip(keys, values, strict=True))


# --------------------------------------------------------------------------------------------------------------------
# inference
# --------------------------------------------------------------------------------------------------------------------


def generate(
    nets: Mapping[str, nn.Module], z: Tensor, labels: Tensor | None, cfg: ConvGanFields, conditional: bool
) -> Tensor:
    """Images in [-1, 1] from latents `z` (N, latent_dim) [and labels (N, n_attributes) int64]; no gradients.
    The caller puts the nets in eval mode (batch norm then uses running statistics)."""
    if z.dim() != 2 or z.shape[1] != cfg.latent_dim:
        raise ValueError(f"z must have shape (N, {cfg.latent_dim}), got {tuple(z.shape)}")
    G = nets["G"]
    images: Tensor
    with torch.no_grad():
        if conditional:
            if labels is None:
                raise ValueError("this family is label-conditioned: pass labels (see sampling.encode_labels)")
            if labels.shape[0] != z.shape[0]:
                raise ValueError(f"{labels.shape[0]} labels for {z.shape[0]} latents")
            images = G(z, labels.to(z.device))
            return images.clamp(-1.0, 1.0)
        images = G(z)
        return images.clamp(-1.0, 1.0)


def penalised_nets(cfg: Any) -> tuple[str, ...]:
    """The nets a gradient penalty differentiates twice (D, when gp_lambda > 0): FamilySpec.uncompilable."""
    return ("D",) if getattr(cfg, "gp_lambda", 0.0) > 0 else ()


# --------------------------------------------------------------------------------------------------------------------
# the family's config base and spec
# --------------------------------------------------------------------------------------------------------------------


class DcganStyleConfig(FamilyConfig, ConvGanFields):
    """Base of a DCGAN-style family's config: the shared fields (`gansvc.families.gan_fields`); a family overrides the
    defaults its report sets."""


S = TypeVar("S", bound=DcganStyleConfig)


@dataclass(frozen=True)
class DcganStyle:
    """What one DCGAN-style family passes to the shared steps: its name (only for error messages) and whether it is
    label-conditioned. Its methods are the family's `FamilySpec.build` / `train_step` / `generate`."""

    name: str
    conditional: bool

    def build(self, cfg: ConvGanFields, data: DataSpec) -> GanState:
        check_data(data, self.name, self.conditional)
        nets, opts, ema = build_parts(cfg, data, self.conditional)
        return GanState(nets=nets, optimizers=opts, ema=ema, inference=("G",))

    def train_step(self, state: GanState, batch: Batch, step: int, cfg: ConvGanFields) -> dict[str, float]:
        return train_step(state, batch, step, cfg, self.conditional)

    def generate(self, nets: Mapping[str, nn.Module], z: Tensor, labels: Tensor | None, cfg: ConvGanFields) -> Tensor:
        return generate(nets, z, labels, cfg, self.conditional)

    def spec(
        self,
        config: type[S],
        *,
        presets: Mapping[str, Mapping[str, Any]],
        runs: Mapping[str, RunPreset],
        default_preset: str,
        dataset: str,
        description: str,
    ) -> FamilySpec[S]:
        """The family's FamilySpec: these shared steps (noise -> image), plus what the family declares. Under
        loop.compile the critic of a gradient penalty stays eager (`penalised_nets`)."""
        return FamilySpec(
            name=self.name,
            task="generate",
            config=config,
            build=self.build,
            train_step=self.train_step,
            generate=self.generate,
            presets=presets,
            runs=runs,
            default_preset=default_preset,
            dataset=dataset,
            conditional=self.conditional,
            description=description,
            uncompilable=penalised_nets,
        )
