"""The family contract: what every GAN family module exports, and the small helpers all families share.

A family module defines a strict pydantic config (subclass of `FamilyConfig`) and exports `SPEC = FamilySpec(...)`.
The training loop, Tune and Serve only ever talk to a `FamilySpec`; they never name a family.

- `build(cfg, data) -> GanState`: networks, optimizers, schedulers, EMA copies and extras (image pools).
  No device placement, no DDP, no I/O: the loop moves `state.nets` / `state.ema` to the device and may replace entries
  of `state.nets` by DDP wrappers. Optimizers must therefore be built over the parameters of the nets in `state.nets`
  (the wrapper shares those parameters). Use `unwrap(net)` to reach the plain module (e.g. for EMA updates).
- `train_step(state, batch, step, cfg) -> dict[str, float]`: one step of D (n_critic times where due) and G on one
  batch. Tensors in `batch` are already on the device; create new tensors (noise, labels) on `batch[...].device`.
  Returns detached Python floats (loss terms, etc.). Never logs, reports or checkpoints.
- `generate(nets, z, labels, cfg) -> images` (task "generate"): `nets` are the inference nets (EMA weights when the
  family keeps EMA), `z` is (N, cfg.latent_dim), `labels` (N, n_attributes) int64 or None. Output in [-1, 1].
- `translate(nets, images, direction, cfg) -> {"image": ..., optional "heatmap": ...}` (tasks "translate"/"segment";
  a "segment" family returns {"image": the predicted mask coloured with the fixed palette of
  `gansvc.metrics.segmentation`, in [-1, 1], "mask": (N, H, W) int64 classes}).
- optional `evaluate(state, batches, cfg) -> dict[str, float]`: held-out metrics beyond image quality (e.g. mIoU), see
  `FamilySpec.evaluate`; the metrics it returns beyond `gansvc.metrics.METRICS` are declared in `extra_metrics`.
- optional `importers`: import format name -> `Importer` (`python -m gansvc.registry import --format NAME`).
- `heatmap`: whether `translate` returns {"heatmap": ...} (Serve's `heatmap` flag).
Nothing outside `gansvc/families/` names a family: what the loop, Tune, Serve, the registry and the importers need to
know of one is a FamilySpec field.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, Protocol, TypeVar

import torch
from pydantic import ConfigDict, Field, ValidationError
from torch import Tensor, nn

from gansvc.data.spec import DataSpec
from gansvc.nn.ema import ema_update
from gansvc.nn.wrappers import unwrap  # re-exported: the one definition lives in gansvc.nn
from gansvc.strict import FrozenStrict

Task = Literal["generate", "translate", "segment"]
Direction = Literal["a2b", "b2a"]
Batch = Mapping[str, Tensor]


class FamilyConfig(FrozenStrict):
    """Base of every family config: strict (unknown keys are errors) and immutable; defaults are validated too."""

    model_config = ConfigDict(validate_default=True)

    # Exponential moving average of generator weights, used for sampling when on (Karras et al. 2018 / Yazici et al.
    # 2019).
    ema: bool = False
    ema_decay: float = Field(0.999, gt=0.0, lt=1.0)


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> Any: ...


@dataclass
class GanState:
    """Everything a family trains and everything a checkpoint must hold to continue exactly."""

    nets: dict[str, nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]
    schedulers: dict[str, torch.optim.lr_scheduler.LRScheduler] = field(default_factory=dict)
    # EMA copies keyed like `nets` (ema["G"] tracks nets["G"]); never wrapped in DDP, never trained by an optimizer.
    ema: dict[str, nn.Module] = field(default_factory=dict)
    # other state with state_dict()/load_state_dict(), e.g. image pools
    extras: dict[str, Stateful] = field(default_factory=dict)
    # names of the nets inference needs (e.g. ("G",) or ("G_A", "G_B")); `inference_nets()` prefers EMA copies
    inference: tuple[str, ...] = ("G",)

    def inference_nets(self) -> dict[str, nn.Module]:
        return {k: unwrap(self.ema.get(k, self.nets[k])) for k in self.inference}


C = TypeVar("C", bound=FamilyConfig)


@dataclass(frozen=True)
class ExtraMetric:
    """A metric a family's `evaluate` returns beyond the shared ones (`gansvc.metrics.METRICS`)."""

    mode: Literal["min", "max"]  # "max": higher is better (Ray Tune's `mode`; best-checkpoint selection)
    description: str
    # True: an evaluation score, drawn with fid/kid/swd in curves.png's quality panel and kept in a rolled-back best's
    # metrics; False: drawn with the train_step terms
    quality: bool = False


@dataclass(frozen=True)
class Imported:
    """What an importer produces: the family, its config and data spec, the built state and the directions."""

    spec: FamilySpec[Any]
    config: FamilyConfig
    data: DataSpec
    state: GanState
    directions: tuple[str, ...]
    # facts for the registry entry beyond the config (e.g. the file's discriminator depths, notes on what was adapted)
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ImportRequest:
    """What an importer gets: the spec that declares it, the file (local path or s3:// URI), the optional second file
    (`--b2a`; only for importers that declare `b2a`), and `describe(obj)`: what a loaded object looks like in words,
    naming the declared format it resembles (for "X is not Y: found Z" messages)."""

    spec: FamilySpec[Any]
    file: str
    b2a: str | None
    describe: Callable[[Any], str]


@dataclass(frozen=True)
class Importer:
    """One import format of a family: `python -m gansvc.registry import FILE --format NAME`."""

    load: Callable[[ImportRequest], Imported]  # reads, checks strictly, builds and loads; CheckpointError if not
    what: str  # what a file of this format is, e.g. "a ugatit-pytorch params file" (messages name it)
    looks_like: Callable[[Any], bool]  # True for a loaded object of this format (messages then suggest --format NAME)
    b2a: str | None = None  # help of --b2a for this format (a second file it reads); None: it refuses --b2a


@dataclass(frozen=True)
class RunPreset:
    """What a preset sets beyond the model (`FamilySpec.presets` holds its model fields): the whole run.

    Everything here is a default under what the user gives (flags, --set, --config always win), resolved by
    `gansvc.train.resolve` once the dataset is known:
    - `loop`: LoopConfig fields (batch_size, epochs or max_steps, cadences);
    - `data`: DataConfig fields (flip, crop); `size` / `load_size` apply when the images are at least `size` (a preset
      never upsamples small images: it trains at their size and says so);
    - `epoch_fields`: model fields counted in optimisation steps that the report gives in epochs (e.g. CycleGAN's lr
      decay: 100 epochs constant + 100 decaying), turned into steps with the dataset's steps per epoch;
    - `note`: where the setting comes from (printed by --dry-run).
    """

    loop: Mapping[str, Any] = field(default_factory=dict)
    data: Mapping[str, Any] = field(default_factory=dict)
    epoch_fields: Mapping[str, float] = field(default_factory=dict)
    note: str = ""


@dataclass(frozen=True)
class FamilySpec(Generic[C]):
    name: str
    task: Task
    config: type[C]
    build: Callable[[C, DataSpec], GanState]
    train_step: Callable[[GanState, Batch, int, C], dict[str, float]]
    description: str = ""
    generate: Callable[[Mapping[str, nn.Module], Tensor, Tensor | None, C], Tensor] | None = None
    translate: Callable[[Mapping[str, nn.Module], Tensor, Direction, C], dict[str, Tensor]] | None = None
    # preset name -> overrides of the config defaults; "report" (the founding report's setting), "smoke" (tiny, tests)
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # True when the family needs `labels` in its batches (label-conditioned)
    conditional: bool = False
    # Optional held-out evaluation beyond image quality, called by the training evaluator (rank 0) at each evaluation:
    # (state, batches, cfg) -> metrics. `batches` iterates batches of the test split (the train split when there is
    # none, or when only it has masks) in a fixed order without augmentation, on the device, masks included
    # ("mask" / "A_mask" / "B_mask"); inference nets are in eval mode and gradients are off. Return {} when the data
    # lacks what the metric needs. A "segment" family returns "miou" (higher is better): it picks the best checkpoint.
    evaluate: Callable[[GanState, Iterable[Batch], C], dict[str, float]] | None = None
    # preset name -> the run settings of that preset (loop, data, schedule in epochs); see RunPreset
    runs: Mapping[str, RunPreset] = field(default_factory=dict)
    # the preset `python -m gansvc.train FAMILY` uses when none is named (the report's setting or the better one its
    # own ablations found); None: the config defaults, and the user must say how long to train
    default_preset: str | None = None
    # the `python -m gansvc.data get` catalog name of the family's report dataset: the default of --dataset is
    # $GANSVC_STORAGE/datasets/<dataset>
    dataset: str | None = None
    # optional: adapt config fields the user did not set to the data (e.g. a discriminator too deep for small images):
    # (cfg, data, explicitly set field names) -> (cfg, one note per changed field). Called once the dataset is known.
    fit_to_data: Callable[[C, DataSpec, frozenset[str]], tuple[C, list[str]]] | None = None
    # optional: the nets loop.compile must leave eager in this config: those a train step differentiates twice (a
    # gradient penalty's create_graph=True backward), which torch.compile's aot_autograd (torch 2.x) refuses
    uncompilable: Callable[[C], tuple[str, ...]] | None = None
    # metrics `evaluate` returns beyond gansvc.metrics.METRICS: name -> direction, description (see ExtraMetric)
    extra_metrics: Mapping[str, ExtraMetric] = field(default_factory=dict)
    # import format name -> Importer: official checkpoints of the family's reference code (gansvc.importers)
    importers: Mapping[str, Importer] = field(default_factory=dict)
    # True when `translate` returns an attention heatmap beside the image ({"heatmap": (N, 1, H, W) in [0, 1]})
    heatmap: bool = False

    def selection_metric(self) -> str | None:
        """The metric that picks the best checkpoint (and Tune's `metric: auto`) when the family decides it: a
        "segment" family's outputs are masks, not images, so its held-out mIoU (higher is better); None: the image
        quality metric the run configures (kid / swd / fid)."""
        return "miou" if self.task == "segment" else None

    def make_config(self, preset: str | None = None, overrides: Mapping[str, Any] | None = None) -> C:
        """Config from defaults, then a preset, then explicit overrides (validated; errors name the field)."""
        values: dict[str, Any] = {}
        if preset is not None and preset not in self.presets and preset in self.runs:
            preset = None  # a run-only preset (loop/data settings, the model's defaults)
        if preset is not None:
            if preset not in self.presets:
                known = ", ".join(sorted(set(self.presets) | set(self.runs))) or "none"
                raise ValueError(f"family {self.name!r} has no preset {preset!r}; presets: {known}")
            values.update(self.presets[preset])
        values.update(overrides or {})
        return self.config.model_validate(values)


def finish_step(state: GanState, ema_decay: float, optimizer: str = "G") -> float:
    """The end of a train_step with per-step schedulers and EMA: step every scheduler, update every EMA copy from its
    net, and return the learning rate `optimizer` used in this step (read before the schedulers move it)."""
    lr = float(state.optimizers[optimizer].param_groups[0]["lr"])
    for sched in state.schedulers.values():
        sched.step()
    for name, ema in state.ema.items():
        ema_update(ema, state.nets[name], ema_decay)
    return lr


def config_error_message(err: ValidationError) -> str:
    """One line per invalid field: `field.path: message`."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(config)"
        lines.append(f"{loc}: {e['msg']}")
    return "; ".join(lines)
