"""The sweep spec (tune/SWEEP.yaml): its strict models, `--set` overrides, and its validation against the family.

Every value of the space is validated against the family's config before anything starts: the base config and each
axis's probe values (every grid/choice value, the bounds of a range) must build a valid experiment config.

pydantic, yaml and gansvc.strict only at import: the experiment config and the families import torch, so they are
imported inside the functions that build configs (`python -m gansvc.tune --help` answers at once).
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from gansvc import storage
from gansvc.strict import ConfigError, FrozenStrict, format_validation, parse_set, set_path

if TYPE_CHECKING:
    from gansvc.config import ExperimentConfig


class Axis(FrozenStrict):
    """One search axis: exactly one of grid / choice / uniform / loguniform / randint."""

    grid: list[Any] | None = None
    choice: list[Any] | None = None
    uniform: tuple[float, float] | None = None
    loguniform: tuple[float, float] | None = None
    randint: tuple[int, int] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Axis:
        given = [k for k in ("grid", "choice", "uniform", "loguniform", "randint") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"an axis takes exactly one of grid, choice, uniform, loguniform, randint (got {given})")
        values = self.grid if self.grid is not None else self.choice
        if values is not None and not values:
            raise ValueError("grid/choice needs at least one value")
        bounds = self.uniform or self.loguniform or self.randint
        if bounds is not None and not bounds[0] < bounds[1]:
            raise ValueError(f"bounds {list(bounds)} must be increasing")
        if self.loguniform is not None and self.loguniform[0] <= 0:
            raise ValueError("loguniform bounds must be positive")
        return self

    def probe_values(self) -> list[Any]:
        """Values that validation tries: every grid/choice value, the bounds of a range."""
        for values in (self.grid, self.choice):
            if values is not None:
                return list(values)
        bounds = self.uniform or self.loguniform or self.randint
        if bounds is None:  # the model validator requires exactly one kind of axis
            raise ValueError("an axis needs one of grid, choice, uniform, loguniform, randint")
        lo, hi = bounds
        return [lo, hi - 1 if self.randint else hi]

    def to_tune(self) -> Any:
        from ray import tune  # Ray: only when a sweep starts

        if self.grid is not None:
            return tune.grid_search(list(self.grid))
        if self.choice is not None:
            return tune.choice(list(self.choice))
        if self.uniform is not None:
            return tune.uniform(*self.uniform)
        if self.loguniform is not None:
            return tune.loguniform(*self.loguniform)
        if self.randint is None:  # the model validator requires exactly one kind of axis
            raise ValueError("an axis needs one of grid, choice, uniform, loguniform, randint")
        return tune.randint(*self.randint)


class SchedulerSpec(FrozenStrict):
    type: Literal["asha", "none", "pbt"] = "asha"
    grace_period: int | None = Field(
        None, ge=1, description="ASHA: steps before a trial can be stopped (default: loop.eval_every)"
    )
    reduction_factor: float = Field(2.0, gt=1)
    perturbation_interval: int | None = Field(
        None, ge=1, description="PBT: steps between exploit/explore (default: loop.eval_every)"
    )


class Resources(FrozenStrict):
    num_workers: int = Field(1, ge=1)
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float = Field(0.0, ge=0)


class SweepSpec(FrozenStrict):
    family: str
    dataset: str | None = None
    description: str = ""
    base: dict[str, Any] = Field(default_factory=dict, description="experiment config overrides (as --config)")
    space: dict[str, Axis]
    metric: str = Field("auto", description="auto = kid with Inception weights, else swd")
    mode: Literal["min", "max"] | None = Field(None, description="default: the metric's (max for miou/is, else min)")
    scheduler: SchedulerSpec = SchedulerSpec()
    num_samples: int = Field(1, ge=1, description="samples of the space (grid axes multiply)")
    max_concurrent: int = Field(2, ge=1)
    resources: Resources = Resources()


META_KEY = "__gansvc__"  # the param_space entry holding what every trial needs besides its sampled values


class SweepError(ValueError):
    """An invalid sweep spec or a sweep that cannot run; the message names the field."""


def load_spec(path: str, sets: list[str] | None = None) -> SweepSpec:
    try:
        raw = yaml.safe_load(storage.read_bytes(storage.parse_uri(path).uri()).decode()) or {}
    except (yaml.YAMLError, storage.StorageError) as err:
        raise SweepError(f"{path}: {err}") from None
    for item in sets or []:
        key, value = parse_set(item)
        if key.startswith("space."):  # axis names hold dots: space.model.lr_g.grid=[...]
            axis, _, kind = key[len("space.") :].rpartition(".")
            if not axis:
                raise SweepError(f"--set {item!r}: write space.AXIS.KIND=VALUE, e.g. space.model.lr_g.grid=[1e-4]")
            raw.setdefault("space", {})[axis] = {kind: value}
        else:
            set_path(raw, key, value)
    try:
        return SweepSpec.model_validate(raw)
    except ValidationError as err:
        raise SweepError(f"invalid sweep spec {path}:\n" + format_validation(err)) from None


def base_config(spec: SweepSpec, sweep_uri: str, max_steps: int | None) -> dict[str, Any]:
    """The raw experiment config every trial starts from: the spec's base, its family and dataset, trial runs in
    SWEEP/trials, the spec's resources."""
    raw = copy.deepcopy(spec.base)
    raw["family"] = spec.family
    if spec.dataset:
        set_path(raw, "data.uri", spec.dataset)
    elif not raw.get("data", {}).get("uri"):  # as `python -m gansvc.train FAMILY`: the family's report dataset
        from gansvc.families import get_family  # torch: only once a spec is being resolved
        from gansvc.train.resolve import default_dataset_uri

        try:
            set_path(raw, "data.uri", default_dataset_uri(get_family(spec.family)))
        except ValueError as err:
            raise SweepError(f"{err} (or dataset: in the spec, or --dataset)") from None
    if max_steps is not None:
        set_path(raw, "loop.max_steps", max_steps)
    set_path(raw, "run.storage", storage.parse_uri(sweep_uri).join("trials").uri())
    set_path(raw, "run.name", "base")
    r = spec.resources
    for key, value in (
        ("num_workers", r.num_workers),
        ("cpus_per_worker", r.cpus_per_worker),
        ("gpus_per_worker", r.gpus_per_worker or 1.0),
        ("use_gpu", r.gpus_per_worker > 0),
    ):
        set_path(raw, f"scaling.{key}", value)
    return raw


def validate(spec: SweepSpec, base: dict[str, Any]) -> ExperimentConfig:
    """The base config and every probe value of every axis must build a valid experiment config."""
    from gansvc.config import build_config  # torch (families): only once a spec is being resolved

    try:
        cfg = build_config(base)
    except ConfigError as err:
        raise SweepError(f"base config: {err}") from None
    for key, axis in spec.space.items():
        if not key.replace("_", "").replace(".", "").replace("-", "").isalnum() or "." not in key:
            raise SweepError(f"space.{key}: axes are dotted config paths such as model.lr_g or loop.batch_size")
        for value in axis.probe_values():
            raw = copy.deepcopy(base)
            set_path(raw, key, value)
            try:
                build_config(raw)
            except ConfigError as err:
                raise SweepError(f"space.{key} = {value!r} is not valid: {err}") from None
    return cfg


def task_metric(cfg: ExperimentConfig) -> str | None:
    """The metric `metric: auto` picks when the family's task has its own (None: an image-quality metric).

    The family declares it (`FamilySpec.selection_metric`: a segmenter is judged by its mIoU)."""
    return cfg.spec().selection_metric()


def resolve_metric(spec: SweepSpec, cfg: ExperimentConfig) -> str:
    """The metric the sweep optimises: the spec's, or for `auto` the task's own metric, else kid with Inception
    weights, else swd."""
    own = task_metric(cfg) if spec.metric == "auto" else None
    if own is not None:
        return own
    if spec.metric != "auto":
        if spec.metric in ("fid", "kid") and not _have_inception(cfg):
            raise SweepError(
                f"metric {spec.metric} needs Inception weights (metrics.inception in base, or "
                "the torch hub cache, fetched when online); use metric: swd (no weights needed) or auto"
            )
        return spec.metric
    return "kid" if _have_inception(cfg) else "swd"


def metric_mode(metric: str) -> str:
    """The metric's own direction: the shared metrics' and the families' declared extras (max for miou/is, else min)."""
    from gansvc.families import metric_mode as declared_mode  # torch: deferred for the CLI's start-up time

    return declared_mode(metric)


def _have_inception(cfg: ExperimentConfig) -> bool:
    from gansvc.metrics import load_inception  # torch

    return load_inception(cfg.metrics.inception, "cpu", cfg.metrics.extractor)[0] is not None


def expand_trials(spec: SweepSpec) -> list[dict[str, Any]]:
    """What --dry-run prints: the grid product, with random axes shown as their distribution, x num_samples."""
    grids = {k: a.grid for k, a in spec.space.items() if a.grid is not None}
    rows: list[dict[str, Any]] = [{}]
    for key, values in grids.items():
        rows = [{**r, key: v} for r in rows for v in values]
    others = {k: a for k, a in spec.space.items() if a.grid is None}
    described = {
        k: next(
            f"{name}{list(v) if isinstance(v, tuple | list) else v}"
            for name, v in a.model_dump().items()
            if v is not None
        )
        for k, a in others.items()
    }
    return [{**r, **described} for _ in range(spec.num_samples) for r in rows]
