"""The attention model of the CycleGAN optimisation report (000, sec. 3.2 and 4.2), after U-GAT-IT (Kim et al. 2019):
generators with a CAM auxiliary classifier, a heatmap and AdaLIN residual blocks; global (7-layer) and local (5-layer)
discriminators with spectral norm and their own CAM; LSGAN, cycle, identity and CAM losses.

Nets are named as in UGATIT-pytorch (`UGATIT.py`): genA2B, genB2A, disGA / disLA (judge domain A), disGB / disLB
(judge domain B), so its checkpoints load strictly (`gansvc.nn.ugatit.ugatit_arch_from_state_dict` reads the arch).
Per step (official `UGATIT.train`, fakes detached in the D step here):
  D:  w_adv sum over D in {G, L} of [(D(x) - 1)^2 + D(fake)^2 + (eta_D(x) - 1)^2 + eta_D(fake)^2]  (report 3.2.4, 3.2.7)
  G:  w_adv sum (D(fake) - 1)^2 + (eta_D(fake) - 1)^2  + w_cycle |x - G_ts(G_st(x))|_1 + w_identity |x - G_st(x)|_1
      + w_cam [BCE(eta_s(x_s), 1) + BCE(eta_s(x_t), 0)]                                          (report 3.2.5-3.2.7)
  then every AdaLIN / LIN rho is clipped to [0, 1] (report 3.2.2).
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import chain
from typing import Annotated, Any, cast

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from gansvc import losses
from gansvc.data.spec import DataSpec
from gansvc.families.base import (
    Batch,
    Direction,
    FamilyConfig,
    FamilySpec,
    GanState,
    Imported,
    Importer,
    ImportRequest,
    RunPreset,
    finish_step,
)
from gansvc.families.fit import change_note, deepest
from gansvc.families.importing import build_imported, is_state_dict, load_strict, read_torch
from gansvc.families.model_file import CheckpointError
from gansvc.families.training import frozen, linear_decay_scheduler
from gansvc.nn.ema import ema_copy
from gansvc.nn.i2i_util import check_images, crop_to, pad_to_multiple
from gansvc.nn.resnet import strip_instance_norm_stats, strip_module_prefix
from gansvc.nn.ugatit import (
    UgatitDiscriminator,
    UgatitGenerator,
    clip_rho_,
    ugatit_arch_from_state_dict,
    ugatit_d_arch_from_state_dict,
    ugatit_d_fits,
    ugatit_d_min_side,
    ugatit_d_output_size,
)
from gansvc.nn.wrappers import unwrap

Beta = Annotated[float, Field(ge=0.0, lt=1.0)]
Weight = Annotated[float, Field(ge=0.0, le=100_000.0)]

GENERATORS = ("genA2B", "genB2A")
DISCRIMINATORS = ("disGA", "disLA", "disGB", "disLB")


class UgatitConfig(FamilyConfig):
    # --- networks (UGATIT-pytorch main.py / UGATIT.py; report 000 Tables 1-2) ---
    ngf: int = Field(64, ge=1, le=1024)  # --ch 64, G's first layer
    ndf: int = Field(64, ge=1, le=1024)  # --ch 64, D's first layer
    n_blocks: int = Field(4, ge=0, le=64)  # --n_res 4; report Table 2 "RESBLOCK NUMBER 4"
    # light = gamma/beta MLP on pooled features. Report Table 1's 10.59 M parameters per G is the light generator with
    # ngf 64 and 4 blocks (the full one adds a (H/4)(W/4)4ngf x 4ngf layer: ~268 M parameters at 256 px)
    light: bool = True
    # global D (UGATIT.py n_layers=7; report 4.2: 7 layers, RF 190) and local D (n_layers=5; report 4.2: 5 layers,
    # RF 46). None = auto: the report's 7 / 5 where the images allow (the 7-layer D needs >= 96 px), else the deepest
    # global D that fits and a local D kept REPORT_LOCAL_GAP layers shallower (`discriminator_depths`, `fit_to_data`).
    n_dis_global: int | None = Field(None, ge=3, le=10)
    n_dis_local: int | None = Field(None, ge=3, le=10)

    # --- loss weights (UGATIT-pytorch main.py; report Table 2 gives GAN 1, cycle 10, identity 10, CAM 100) ---
    lambda_adv: Weight = 1.0
    lambda_cycle: Weight = 10.0
    lambda_identity: Weight = 10.0
    lambda_cam: Weight = 1000.0

    # --- optimisation (main.py: Adam lr 1e-4, betas (0.5, 0.999), weight decay 1e-4; report 4.3 / Table 2 same) ---
    lr: float = Field(1e-4, gt=0.0, le=1.0)
    betas: tuple[Beta, Beta] = (0.5, 0.999)
    weight_decay: float = Field(1e-4, ge=0.0, le=1.0)
    # official decay_flag: constant for the first half of training, then linear to 0. Report 000 sec. 4.4.1: 200 epochs
    # of 100 iterations = 20 000 steps, so 10 000 + 10 000.
    decay_start: int = Field(10_000, ge=0)
    decay_steps: int = Field(10_000, ge=0)


PRESETS: dict[str, dict[str, object]] = {
    # the official run's schedule: 1M iterations, constant for 500k then linear to 0 (UGATIT-pytorch decay_flag)
    "default": {"decay_start": 500_000, "decay_steps": 500_000},
    # report 000 Table 2 (its cat2dog run weighted CAM with 100); everything else is the default
    "report": {"lambda_cam": 100.0},
    # tiny nets for tests and CPU smoke runs (16-64 px images)
    "smoke": {"ngf": 8, "ndf": 8, "n_blocks": 2, "n_dis_global": 4, "n_dis_local": 3},
}


# report 000 sec. 4.2 / UGATIT.py: global D 7 layers, local D 5. Each stride-2 layer doubles the receptive field (the
# report's 190 vs 46, about 4x), so keeping the local D 2 layers shallower keeps it judging patches about a quarter of
# the global D's field when both must shrink for small images.
REPORT_DIS_GLOBAL, REPORT_DIS_LOCAL = 7, 5
REPORT_LOCAL_GAP = REPORT_DIS_GLOBAL - REPORT_DIS_LOCAL
MIN_DIS = 3  # UgatitDiscriminator needs n_layers >= 3


def discriminator_depths(cfg: UgatitConfig, height: int, width: int) -> tuple[int, int]:
    """(global, local) discriminator depths to build. A set field is used as it is (ValueError with advice when the
    images are too small for it); an auto (None) global depth is the report's 7 or, below the 96 px it needs, the
    deepest that fits; an auto local depth is min(5, global - 2), at least 3."""
    side = min(height, width)
    n_global = cfg.n_dis_global
    if n_global is None:
        n_global = deepest(REPORT_DIS_GLOBAL, MIN_DIS, lambda n: ugatit_d_fits(side, n))
        if n_global is None:
            raise ValueError(
                f"{height}x{width} images are too small for any U-GAT-IT discriminator: the shallowest "
                f"({MIN_DIS} layers) needs >= {ugatit_d_min_side(MIN_DIS)} px; use larger images (--size)"
            )
    else:
        ugatit_d_output_size(side, n_global)
    n_local = cfg.n_dis_local
    if n_local is None:
        n_local = max(MIN_DIS, min(REPORT_DIS_LOCAL, n_global - REPORT_LOCAL_GAP))  # fits: never deeper than global
    else:
        ugatit_d_output_size(side, n_local)
    return n_global, n_local


def fit_to_data(
    cfg: UgatitConfig, data: DataSpec, explicit: frozenset[str] = frozenset()
) -> tuple[UgatitConfig, list[str]]:
    """`FamilySpec.fit_to_data`: the config with the auto discriminator depths resolved for the data, and one note per
    depth that differs from the report's. Set depths are kept (`explicit`, the field names the user set, is accepted
    for the hook's signature: a set depth is never None); when a set depth does not fit, or no depth fits at all,
    the config is returned unchanged and `build` raises the error with advice."""
    try:
        n_global, n_local = discriminator_depths(cfg, data.height, data.width)
    except ValueError:
        return cfg, []
    size = f"{data.height}x{data.width}"
    notes = []
    if cfg.n_dis_global is None and n_global != REPORT_DIS_GLOBAL:
        notes.append(
            change_note(
                "n_dis_global",
                REPORT_DIS_GLOBAL,
                n_global,
                f"a {REPORT_DIS_GLOBAL}-layer global discriminator needs images of at least "
                f"{ugatit_d_min_side(REPORT_DIS_GLOBAL)} px; these are {size}, and {n_global} layers is the deepest "
                "that fits",
            )
        )
    if cfg.n_dis_local is None and n_local != REPORT_DIS_LOCAL:
        why = (
            f"the local discriminator stays {REPORT_LOCAL_GAP} layers shallower than the {n_global}-layer global "
            f"one, as the report's {REPORT_DIS_GLOBAL} and {REPORT_DIS_LOCAL} (each stride-2 layer doubles the "
            "receptive field: the local one judges patches about a quarter of the global one's field)"
        )
        if n_local > n_global - REPORT_LOCAL_GAP:
            why = (
                f"{MIN_DIS} layers is the shallowest U-GAT-IT discriminator; with a {n_global}-layer global one "
                f"these {size} images leave no room for the report's gap of {REPORT_LOCAL_GAP} layers"
            )
        notes.append(change_note("n_dis_local", REPORT_DIS_LOCAL, n_local, why))
    return cfg.model_copy(update={"n_dis_global": n_global, "n_dis_local": n_local}), notes


def build(cfg: UgatitConfig, data: DataSpec) -> GanState:
    if data.layout != "unpaired":
        raise ValueError(f"ugatit trains on unpaired A/B images; the dataset layout is {data.layout!r}")
    h, w, c = data.height, data.width, data.channels
    if h % 4 or w % 4:
        raise ValueError(
            f"ugatit needs image sides that are multiples of 4 (two stride-2 layers), got {h}x{w}: "
            "set data.size accordingly"
        )
    n_global, n_local = discriminator_depths(cfg, h, w)  # raises with advice when the images are too small for D
    nets: dict[str, nn.Module] = {
        name: UgatitGenerator(c, c, cfg.ngf, cfg.n_blocks, (h, w), cfg.light) for name in GENERATORS
    } | {
        name: UgatitDiscriminator(c, cfg.ndf, n_global if name.startswith("disG") else n_local)
        for name in DISCRIMINATORS
    }
    # UGATIT-pytorch keeps PyTorch's default initialisation (no init pass)
    opt: dict[str, torch.optim.Optimizer] = {
        "G": torch.optim.Adam(
            chain(*(nets[k].parameters() for k in GENERATORS)),
            lr=cfg.lr,
            betas=cfg.betas,
            weight_decay=cfg.weight_decay,
        ),
        "D": torch.optim.Adam(
            chain(*(nets[k].parameters() for k in DISCRIMINATORS)),
            lr=cfg.lr,
            betas=cfg.betas,
            weight_decay=cfg.weight_decay,
        ),
    }
    return GanState(
        nets=nets,
        optimizers=opt,
        schedulers={k: linear_decay_scheduler(o, cfg.decay_start, cfg.decay_steps) for k, o in opt.items()},
        ema={k: ema_copy(nets[k]) for k in GENERATORS} if cfg.ema else {},
        inference=GENERATORS,
    )


def _d_terms(state: GanState, name: str, real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
    """LSGAN loss of one discriminator on its patch logits and on its CAM logits (report 3.2.4 and 3.2.7)."""
    logit, cam_logit, _ = state.nets[name](torch.cat([real, fake]))  # one forward: no norm couples samples
    n = real.shape[0]
    return (losses.d_loss("mse", logit[:n], logit[n:]), losses.d_loss("mse", cam_logit[:n], cam_logit[n:]))


def discriminator_step(state: GanState, real_a: Tensor, real_b: Tensor, cfg: UgatitConfig) -> dict[str, float]:
    """One update of the four discriminators on real images and detached translations."""
    with torch.no_grad():
        fake_a2b = state.nets["genA2B"](real_a)[0]
        fake_b2a = state.nets["genB2A"](real_b)[0]
    out: dict[str, Tensor] = {}
    for dom, real, fake in (("A", real_a, fake_b2a), ("B", real_b, fake_a2b)):
        adv_g, cam_g = _d_terms(state, f"disG{dom}", real, fake)
        adv_l, cam_l = _d_terms(state, f"disL{dom}", real, fake)
        out[f"D_cam_{dom}"] = cam_g + cam_l
        out[f"D_{dom}"] = cfg.lambda_adv * (adv_g + cam_g + adv_l + cam_l)
    opt = state.optimizers["D"]
    opt.zero_grad(set_to_none=True)
    (out["D_A"] + out["D_B"]).backward()
    opt.step()
    return {k: float(v.detach()) for k, v in out.items()}


def generator_step(state: GanState, real_a: Tensor, real_b: Tensor, cfg: UgatitConfig) -> dict[str, float]:
    """One update of both generators with all discriminators frozen, then rho clipping."""
    na, nb = real_a.shape[0], real_b.shape[0]
    with frozen(*(state.nets[k] for k in DISCRIMINATORS)):
        # each generator sees its source domain (translation) and its target domain (identity) in one batch
        out_ab, cam_ab, _ = state.nets["genA2B"](torch.cat([real_a, real_b]))
        out_ba, cam_ba, _ = state.nets["genB2A"](torch.cat([real_b, real_a]))
        fake_a2b, fake_b2b = out_ab[:na], out_ab[na:]
        fake_b2a, fake_a2a = out_ba[:nb], out_ba[nb:]
        fake_a2b2a = state.nets["genB2A"](fake_a2b)[0]
        fake_b2a2b = state.nets["genA2B"](fake_b2a)[0]
        terms: dict[str, Tensor] = {}
        # domain A terms (official G_loss_A): D_A on B->A, A->B->A cycle, B2A identity on A, genB2A's CAM
        # domain B terms (G_loss_B): D_B on A->B, B->A->B cycle, A2B identity on B, genA2B's CAM
        for dom, fake, rec, real, same, cam_src, cam_tgt in (
            ("A", fake_b2a, fake_a2b2a, real_a, fake_a2a, cam_ba[:nb], cam_ba[nb:]),
            ("B", fake_a2b, fake_b2a2b, real_b, fake_b2b, cam_ab[:na], cam_ab[na:]),
        ):
            adv = fake.new_zeros(())
            for kind in ("G", "L"):
                logit, cam_logit, _ = state.nets[f"dis{kind}{dom}"](fake)
                adv = adv + losses.g_loss("mse", logit) + losses.g_loss("mse", cam_logit)
            terms[f"G_adv_{dom}"] = adv
            terms[f"cycle_{dom}"] = losses.cycle_loss(rec, real)
            terms[f"idt_{dom}"] = losses.identity_loss(same, real)
            terms[f"cam_{dom}"] = losses.cam_loss(cam_src, cam_tgt)
            terms[f"G_{dom}"] = (
                cfg.lambda_adv * adv
                + cfg.lambda_cycle * terms[f"cycle_{dom}"]
                + cfg.lambda_identity * terms[f"idt_{dom}"]
                + cfg.lambda_cam * terms[f"cam_{dom}"]
            )
        opt = state.optimizers["G"]
        opt.zero_grad(set_to_none=True)
        (terms["G_A"] + terms["G_B"]).backward()
        opt.step()
    for k in GENERATORS:
        clip_rho_(unwrap(state.nets[k]))
    return {k: float(v.detach()) for k, v in terms.items()}


def train_step(state: GanState, batch: Batch, step: int, cfg: UgatitConfig) -> dict[str, float]:
    real_a, real_b = batch["A"], batch["B"]
    d_terms = discriminator_step(state, real_a, real_b, cfg)  # official order: D, then G
    g_terms = generator_step(state, real_a, real_b, cfg)
    lr = finish_step(state, cfg.ema_decay)
    return d_terms | g_terms | {"lr": lr}


def heatmap_to_image(heatmap: Tensor, padded: tuple[int, int], size: tuple[int, int]) -> Tensor:
    """The generator's attention map (N, 1, H/4, W/4 of the padded input) resized to the padded image, cropped to the
    input and scaled per image to [0, 1] (UGATIT-pytorch utils `cam`: x - min, / max, resized to the image).
    A constant map becomes 0."""
    up = crop_to(F.interpolate(heatmap, size=padded, mode="bilinear", align_corners=False), size)
    lo = up.amin(dim=(2, 3), keepdim=True)
    span = up.amax(dim=(2, 3), keepdim=True) - lo
    scaled = (up - lo) / span.clamp_min(torch.finfo(up.dtype).tiny)
    return torch.where(span > 0, scaled, torch.zeros_like(up)).clamp(0.0, 1.0)


@torch.no_grad()
def translate(
    nets: Mapping[str, nn.Module], images: Tensor, direction: Direction, cfg: UgatitConfig
) -> dict[str, Tensor]:
    """a2b with genA2B, b2a with genB2A -> {"image": (N, C, H, W) in [-1, 1], "heatmap": (N, 1, H, W) in [0, 1]}.
    Any H x W: reflection-padded to multiples of 4 and cropped back."""
    if direction not in ("a2b", "b2a"):
        raise ValueError(f"direction must be 'a2b' or 'b2a', got {direction!r}")
    # build makes the generators UgatitGenerators; the hook's Mapping holds any family's nets, as nn.Module
    net = cast(UgatitGenerator, unwrap(nets["genA2B" if direction == "a2b" else "genB2A"]))
    check_images(images, net.in_channels)
    padded, size = pad_to_multiple(images, 4)
    image, _, heatmap = net(padded)
    heat = heatmap_to_image(heatmap, (padded.shape[-2], padded.shape[-1]), size)
    return {"image": crop_to(image, size), "heatmap": heat}


# ------------------------------------------------------------------------------------------------------ import
# `ugatit-pytorch`: znxlwm/UGATIT-pytorch `UGATIT.save` writes `params_%07d.pt` = a dict with the state dicts genA2B,
# genB2A, disGA, disGB, disLA, disLB. Architecture sizes (ngf, residual blocks, channels, light/full, image size,
# discriminator depth) are read from the weights. Inference needs only generators, so no discriminator constraint
# ever refuses one (issue 14): a file without discriminators imports, and the discriminators a file holds are each
# built at the depth and width their own keys give and loaded strictly (the file must be the format it claims),
# whatever the image size. Their depths go into the config only where they fit the model's image size; otherwise
# that depth stays auto and the entry's `import_notes` say so (`discriminator_layers` lists the file's depths).

OFFICIAL_SIZE = 256  # UGATIT-pytorch default --img_size; light weights do not depend on the size
OFFICIAL_WHAT = "a ugatit-pytorch params file (params_XXXXXXX.pt: a dict with genA2B, genB2A, disGA, ... state dicts)"
OFFICIAL_NETS = ("genA2B", "genB2A", "disGA", "disGB", "disLA", "disLB")


def _official_discriminators(params: Mapping[str, Mapping[str, Tensor]], file: str) -> dict[str, UgatitDiscriminator]:
    """Each discriminator the file holds, built at the width and depth its own keys and shapes give and loaded
    strictly: the file must be the format it claims. No image size is involved (inference never runs them), so a
    discriminator too deep for the generator's images is still accepted."""
    out: dict[str, UgatitDiscriminator] = {}
    for name in (n for n in DISCRIMINATORS if n in params):
        try:
            arch = ugatit_d_arch_from_state_dict(params[name])
            net = UgatitDiscriminator(arch.in_channels, arch.ndf, arch.n_layers)
        except ValueError as err:
            raise CheckpointError(f"{file} is not {OFFICIAL_WHAT}: its {name} entry: {err}") from None
        load_strict(net, strip_module_prefix(params[name]), name, file, "the UGATIT-pytorch layout")
        out[name] = net
    return out


def _official_depths(dis: Mapping[str, UgatitDiscriminator], side: int) -> tuple[dict[str, Any], list[str]]:
    """Config fields for the file's discriminators: their width, and each depth that fits the model's image side;
    a depth that does not fit stays auto (inference needs no discriminator), with a note saying so."""
    fields: dict[str, Any] = {}
    notes: list[str] = []
    if dis:
        fields["ndf"] = next(iter(dis.values())).model[1].out_channels
    for key, name, kind in (("n_dis_global", "disGA", "global"), ("n_dis_local", "disLA", "local")):
        net = dis.get(name, dis.get(name[:-1] + "B"))
        if net is None:
            continue
        depth = net.n_layers
        if ugatit_d_fits(side, depth):
            fields[key] = depth
        else:
            notes.append(
                f"the file's {kind} discriminators have {depth} layers, too deep for {side} px images; "
                f"inference needs no discriminator, so model.{key} is left on auto (the deepest that fits)"
            )
    return fields, notes


def import_official(req: ImportRequest) -> Imported:
    """Both generators (and the discriminators the file holds) of a UGATIT-pytorch params file."""
    file = req.file
    obj = read_torch(file, OFFICIAL_WHAT)
    if not isinstance(obj, Mapping) or "genA2B" not in obj or "genB2A" not in obj:
        raise CheckpointError(f"{file} is not {OFFICIAL_WHAT}: found {req.describe(obj)}")
    params = {}
    for k in (n for n in OFFICIAL_NETS if n in obj):
        if not is_state_dict(obj[k]):
            raise CheckpointError(
                f"{file} is not {OFFICIAL_WHAT}: its {k} entry is {req.describe(obj[k])}, not a state dict"
            )
        params[k] = strip_instance_norm_stats({str(n): v for n, v in obj[k].items()})
    gens = {k: params[k] for k in GENERATORS}
    try:
        arch = ugatit_arch_from_state_dict(gens)  # generators only: discriminators are read on their own below
    except (ValueError, KeyError) as err:
        raise CheckpointError(f"{file} is not {OFFICIAL_WHAT}: {err}") from None
    if arch.in_channels != arch.out_channels:
        raise CheckpointError(
            f"{file}: genA2B maps {arch.in_channels} to {arch.out_channels} channels; the ugatit "
            "family translates between domains with the same number of channels"
        )
    dis = _official_discriminators(params, file)
    side = arch.img_size or OFFICIAL_SIZE
    fields, notes = _official_depths(dis, side)
    overrides: dict[str, Any] = {"ngf": arch.ngf, "n_blocks": arch.n_blocks, "light": arch.light, **fields}
    data = DataSpec(layout="unpaired", height=side, width=side, channels=arch.in_channels)
    cfg, state = build_imported(req.spec, overrides, data, file)
    for name, sd in gens.items():
        load_strict(state.nets[name], sd, name, file, "the UGATIT-pytorch layout")
    state.nets.update(dis)  # the file's own discriminators (their depths may differ from what the config builds)
    info: dict[str, Any] = {}
    if dis:
        info["discriminator_layers"] = {k: v.n_layers for k, v in dis.items()}
    if notes:
        info["import_notes"] = notes
    return Imported(req.spec, cfg, data, state, ("a2b", "b2a"), info)


def _looks_official(obj: Any) -> bool:
    return isinstance(obj, Mapping) and "genA2B" in obj


IMPORTERS = {
    "ugatit-pytorch": Importer(load=import_official, what="a ugatit-pytorch params file", looks_like=_looks_official)
}


# Whole-run settings. "default": the official U-GAT-IT (UGATIT-pytorch main.py: batch 1, iteration 1 000 000,
# decay_flag = linear decay over the second half, img_size 256 loaded at 256 + 30 and randomly cropped, flip) on its
# selfie2anime data. "report": report 000 sec. 4.1 / 4.4.1 (minibatch 10, 200 epochs x 100 iterations = 20 000 steps).
CROP_256 = {"size": 256, "load_size": 286, "flip": True}  # official: load 286, random crop 256, random flip
RUNS: dict[str, RunPreset] = {
    "default": RunPreset(
        loop={"batch_size": 1, "max_steps": 1_000_000},
        data=CROP_256,
        note="official U-GAT-IT: batch 1, 1M iterations, lr decays over the second half",
    ),
    "report": RunPreset(
        loop={"batch_size": 10, "max_steps": 20_000},
        data=CROP_256,
        note="report 000: batch 10, 200 epochs x 100 iterations, 256 px crops",
    ),
}


SPEC: FamilySpec[UgatitConfig] = FamilySpec(
    name="ugatit",
    task="translate",
    config=UgatitConfig,
    build=build,
    train_step=train_step,
    translate=translate,
    presets=PRESETS,
    runs=RUNS,
    default_preset="default",
    dataset="selfie2anime",
    fit_to_data=fit_to_data,
    importers=IMPORTERS,
    heatmap=True,
    description="U-GAT-IT-style attention model of the CycleGAN optimisation report: CAM attention and heatmaps, "
    "AdaLIN with clipped rho, global + local spectral-norm discriminators, LSGAN + cycle + identity + CAM "
    "losses; loads UGATIT-pytorch checkpoints",
)
