"""`python -m gansvc.tune tune/SWEEP.yaml`: hyperparameter sweeps on Ray Tune, every trial a gansvc training run.

A sweep spec (see tune/README.md) names the family, the dataset, a base experiment config, a search space over any
config field (`model.lr_g`, `loop.batch_size`, ...), the metric and mode, the scheduler (ASHA by default, `none`,
or PBT), samples, concurrency and resources per trial. Every value of the space is validated against the family's
config before anything starts.

Each trial is a Tune function trainable that runs a `TorchTrainer` (Ray Train V2 cannot be a Tune trainable itself,
see RAY_NOTES.md) whose reports reach Tune through `TuneReportCallback`. Trial runs live in
`STORAGE/sweeps/NAME/trials/TRIAL_ID` (checkpoints, grids, best model), Tune's state in `STORAGE/sweeps/NAME/tune`,
and the results table in `STORAGE/sweeps/NAME/results.{csv,json}`. PBT runs a trial in segments of
`perturbation_interval` steps; each segment resumes the previous one's checkpoint (or, after an exploit, the donor
trial's) with the trial's current hyperparameters.
"""

from __future__ import annotations

import argparse
import copy
import csv
import io
import json
import os
import sys
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from gansvc import storage
from gansvc.config import ConfigError, ExperimentConfig, build_config, format_validation, parse_set, set_path


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Axis(Strict):
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
        lo, hi = self.uniform or self.loguniform or self.randint  # type: ignore[misc]
        return [lo, hi - 1 if self.randint else hi]

    def to_tune(self) -> Any:
        from ray import tune

        if self.grid is not None:
            return tune.grid_search(list(self.grid))
        if self.choice is not None:
            return tune.choice(list(self.choice))
        if self.uniform is not None:
            return tune.uniform(*self.uniform)
        if self.loguniform is not None:
            return tune.loguniform(*self.loguniform)
        return tune.randint(*self.randint)  # type: ignore[misc]


class SchedulerSpec(Strict):
    type: Literal["asha", "none", "pbt"] = "asha"
    grace_period: int | None = Field(None, ge=1, description="ASHA: steps before a trial can be stopped "
                                                            "(default: loop.eval_every)")
    reduction_factor: float = Field(2.0, gt=1)
    perturbation_interval: int | None = Field(None, ge=1, description="PBT: steps between exploit/explore "
                                                                     "(default: loop.eval_every)")


class Resources(Strict):
    num_workers: int = Field(1, ge=1)
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float = Field(0.0, ge=0)


class SweepSpec(Strict):
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


class SweepError(ValueError):
    """An invalid sweep spec or a sweep that cannot run; the message names the field."""


# ------------------------------------------------------------------------------------------------------ validation

def load_spec(path: str, sets: list[str] | None = None) -> SweepSpec:
    try:
        raw = yaml.safe_load(storage.read_bytes(storage.parse_uri(path).uri()).decode()) or {}
    except (yaml.YAMLError, storage.StorageError) as err:
        raise SweepError(f"{path}: {err}") from None
    for item in sets or []:
        key, value = parse_set(item)
        if key.startswith("space."):  # axis names hold dots: space.model.lr_g.grid=[...]
            axis, _, kind = key[len("space."):].rpartition(".")
            if not axis:
                raise SweepError(f"--set {item!r}: write space.AXIS.KIND=VALUE, e.g. space.model.lr_g.grid=[1e-4]")
            raw.setdefault("space", {})[axis] = {kind: value}
        else:
            set_path(raw, key, value)
    try:
        return SweepSpec.model_validate(raw)
    except ValidationError as err:
        raise SweepError(f"invalid sweep spec {path}:\n" + format_validation(err)) from None


def base_config(spec: SweepSpec, name: str, storage_root: str, max_steps: int | None) -> dict[str, Any]:
    raw = copy.deepcopy(spec.base)
    raw["family"] = spec.family
    if spec.dataset:
        set_path(raw, "data.uri", spec.dataset)
    elif not raw.get("data", {}).get("uri"):  # as `python -m gansvc.train FAMILY`: the family's report dataset
        from gansvc.families import get_family
        from gansvc.train.resolve import default_dataset_uri

        try:
            set_path(raw, "data.uri", default_dataset_uri(get_family(spec.family)))
        except ValueError as err:
            raise SweepError(f"{err} (or dataset: in the spec, or --dataset)") from None
    if max_steps is not None:
        set_path(raw, "loop.max_steps", max_steps)
    set_path(raw, "run.storage", storage.parse_uri(storage_root).join("sweeps", name, "trials").uri())
    set_path(raw, "run.name", "base")
    r = spec.resources
    for key, value in (("num_workers", r.num_workers), ("cpus_per_worker", r.cpus_per_worker),
                       ("gpus_per_worker", r.gpus_per_worker or 1.0), ("use_gpu", r.gpus_per_worker > 0)):
        set_path(raw, f"scaling.{key}", value)
    return raw


def validate(spec: SweepSpec, base: dict[str, Any]) -> ExperimentConfig:
    """The base config and every probe value of every axis must build a valid experiment config."""
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


def resolve_metric(spec: SweepSpec, cfg: ExperimentConfig) -> str:
    if spec.metric == "auto" and cfg.spec().task == "segment":
        return "miou"
    if spec.metric != "auto":
        if spec.metric in ("fid", "kid") and not _have_inception(cfg):
            raise SweepError(f"metric {spec.metric} needs Inception weights (metrics.inception in base, or "
                             "the torch hub cache, fetched when online); use metric: swd (no weights needed) or auto")
        return spec.metric
    return "kid" if _have_inception(cfg) else "swd"


def _have_inception(cfg: ExperimentConfig) -> bool:
    from gansvc.metrics import load_inception

    return load_inception(cfg.metrics.inception, "cpu", cfg.metrics.extractor)[0] is not None


def expand_trials(spec: SweepSpec) -> list[dict[str, Any]]:
    """What --dry-run prints: the grid product, with random axes shown as their distribution, x num_samples."""
    grids = {k: a.grid for k, a in spec.space.items() if a.grid is not None}
    rows: list[dict[str, Any]] = [{}]
    for key, values in grids.items():
        rows = [{**r, key: v} for r in rows for v in values]
    others = {k: a for k, a in spec.space.items() if a.grid is None}
    described = {k: next(f"{name}{list(v) if isinstance(v, tuple | list) else v}"
                         for name, v in a.model_dump().items() if v is not None) for k, a in others.items()}
    return [{**r, **described} for _ in range(spec.num_samples) for r in rows]


# ---------------------------------------------------------------------------------------------------------- trials

def _trial_config(base: dict[str, Any], sampled: dict[str, Any], trial_id: str, metric: str) -> ExperimentConfig:
    raw = copy.deepcopy(base)
    for key, value in sampled.items():
        set_path(raw, key, value)
    set_path(raw, "run.name", trial_id)
    if metric in ("fid", "kid", "swd"):
        set_path(raw, "metrics.metric", metric)
    return build_config(raw)


def _fit(cfg: ExperimentConfig, init_from: str | None = None, forward_reports: bool = True) -> Any:
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from gansvc.train.__main__ import keep_checkpoints, run_uri, train_env_defaults
    from gansvc.train.failures import fit_stopping_on_deterministic_errors
    from gansvc.train.loop import train_loop

    fs, path = storage.arrow_filesystem(cfg.run.storage_root())
    resources = {"CPU": cfg.scaling.cpus_per_worker}
    if cfg.scaling.use_gpu:
        resources["GPU"] = cfg.scaling.gpus_per_worker
    storage.write_json(storage.parse_uri(run_uri(cfg)).join("gansvc-config.json").uri(),
                       cfg.resolved().model_dump(mode="json"))
    train_env_defaults()
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"experiment": cfg.model_dump(mode="json"), "run_uri": run_uri(cfg), "init_from": init_from},
        scaling_config=ScalingConfig(num_workers=cfg.scaling.num_workers, use_gpu=cfg.scaling.use_gpu,
                                     resources_per_worker=resources),
        run_config=RunConfig(name=cfg.run.name, storage_path=path, storage_filesystem=fs,
                             callbacks=[TuneReportCallback()] if forward_reports else [],
                             # at least 2: a damaged newest checkpoint has a previous one to fall back to
                             checkpoint_config=CheckpointConfig(num_to_keep=keep_checkpoints(cfg)),
                             failure_config=FailureConfig(max_failures=cfg.scaling.max_failures)),
    )
    # config, data and code errors repeat on every restart: stop the trial at once instead of retrying them
    result = fit_stopping_on_deterministic_errors(trainer)
    from gansvc.train.loop import DIVERGED_FILE

    diverged = storage.parse_uri(run_uri(cfg)).join(DIVERGED_FILE).uri()
    if storage.exists(diverged):
        raise RuntimeError(storage.read_json(diverged)["error"])
    if result.error is not None:
        raise RuntimeError(f"training failed: {result.error}")
    return result


def trial_fn(config: dict[str, Any]) -> None:
    """The Tune function trainable: one gansvc training run (PBT: one segment per perturbation interval)."""
    from ray import tune

    meta = config["__gansvc__"]
    sampled = {k: v for k, v in config.items() if k != "__gansvc__"}
    trial_id = tune.get_context().get_trial_id()
    cfg = _trial_config(meta["base"], sampled, trial_id, meta["metric"])
    if meta["scheduler"] != "pbt":
        _fit(cfg)
        return
    # PBT: segments; a Tune checkpoint records where the trial's weights are, so an exploit can start from them
    interval, total = meta["interval"], cfg.loop.max_steps or 0
    start, init_from = 0, None
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d, open(os.path.join(d, "gansvc.json")) as f:
            pointer = json.load(f)
        start, init_from = pointer["step"], pointer["checkpoint"]
    segment = 0
    while start < total:
        end = min(total, start + interval)
        seg_cfg = cfg.model_copy(update={
            "run": cfg.run.model_copy(update={"name": f"{trial_id}-from{start:08d}-s{segment}"}),
            "loop": cfg.loop.model_copy(update={"max_steps": end, "checkpoint_every": end})})
        result = _fit(seg_cfg, init_from, forward_reports=False)  # Tune sees one result (+ checkpoint) a segment
        init_from = storage.parse_uri(seg_cfg.run.storage_root()).join(
            seg_cfg.run.name, f"checkpoint-{end:08d}").uri()
        segment += 1
        start = end
        import tempfile

        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "gansvc.json"), "w") as f:
                json.dump({"step": end, "checkpoint": init_from}, f)
            metrics = {k: v for k, v in (result.metrics or {}).items() if isinstance(v, int | float)}
            tune.report({**metrics, "step": end, "checkpoint_path": init_from},
                        checkpoint=tune.Checkpoint.from_directory(d))


# --------------------------------------------------------------------------------------------------------- results

UNFINISHED = ("PENDING", "RUNNING", "PAUSED")  # Tune trial states a re-run of the sweep resumes


def trial_statuses(grid: Any, tune_path: str, fs: Any) -> dict[str, str]:
    """Tune's state of each trial: TERMINATED or ERROR (kept by a re-run), or one of UNFINISHED (resumed by one).

    After the first Ctrl-C, `Tuner.fit()` stops the running trials and returns them all TERMINATED, so its result
    cannot tell an interrupted trial from a finished one (checked with Ray 2.60). The state Tune saved to storage
    just before that stop can: it is read back here, and wins over the in-memory one."""
    import logging

    from ray import tune

    states: dict[str, str] = {}
    try:
        states.update({str(t.trial_id): str(t.status) for t in grid._experiment_analysis.trials})
    except AttributeError:  # a ResultGrid without its analysis
        pass
    quiet = logging.getLogger("ray.tune.analysis.experiment_analysis")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # it warns about trials that never reported (not started)
    try:
        saved = tune.ExperimentAnalysis(tune_path, storage_filesystem=fs)
        states.update({str(t.trial_id): str(t.status) for t in saved.trials})
    except Exception as err:  # noqa: BLE001 - no saved state: keep what fit() said, and say so
        print(f"warning: could not read the sweep's saved state ({type(err).__name__}: {err}); trial states "
              "come from this run only", file=sys.stderr)
    finally:
        quiet.setLevel(level)
    return states


def collect(grid: Any, metric: str, mode: str, max_steps: int, axes: list[str],
            statuses: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """One row per trial, sorted by best metric (failed trials last). `statuses`: Tune's trial states; a trial
    Tune had not finished when the sweep was interrupted is "interrupted" whatever step it reached."""
    rows = []
    for result in grid:
        config = {k: v for k, v in (result.config or {}).items() if k != "__gansvc__"}
        df = result.metrics_dataframe
        last = result.metrics or {}
        values = df[metric].dropna().tolist() if df is not None and metric in df else []
        best = (min(values) if mode == "min" else max(values)) if values else None
        step = int(last.get("step", 0) or 0)
        if result.error is not None:
            status = "failed: " + str(result.error).strip().splitlines()[-1][:300]
        elif (statuses or {}).get(_trial_id(result)) in UNFINISHED:
            status = "interrupted"
        elif step < max_steps:
            status = "stopped early"
        else:
            status = "completed"
        run = result.path and _trial_run(result)
        rows.append({"trial": _trial_id(result), "status": status, "step": step,
                     "final": values[-1] if values else None, "best": best,
                     "checkpoint": _checkpoint_uri(run) if run else None, "run": run,
                     **{f"config.{k}": config.get(k) for k in axes}})
    rows.sort(key=lambda r: (r["best"] is None, (r["best"] if mode == "min" else -r["best"])
                             if r["best"] is not None else 0))
    return rows


def _trial_id(result: Any) -> str:
    """Tune's trial id ("ab12c_00003"), from the result or its directory name (failed trials may have no result)."""
    import re

    if (result.metrics or {}).get("trial_id"):
        return str(result.metrics["trial_id"])
    found = re.search(r"(?:^|_)([0-9a-f]{5}_\d{5})(?:_|$)", os.path.basename(str(result.path).rstrip("/")))
    return found.group(1) if found else ""


_TRIAL_RUNS: dict[str, str] = {}


def _trial_run(result: Any) -> str | None:
    return _TRIAL_RUNS.get(_trial_id(result)) or None


def _checkpoint_uri(run: str) -> str | None:
    """The trial's committed best (best/, whatever its model file is called), else its newest checkpoint."""
    from gansvc.checkpoint import BEST_DIR, read_best

    loc = storage.parse_uri(run)
    if read_best(run) is not None:
        return loc.join(BEST_DIR).uri()
    ckpts = sorted({o.rel.split("/")[0] for o in storage.list_objects(run) if o.rel.startswith("checkpoint-")})
    return loc.join(ckpts[-1]).uri() if ckpts else None


def write_results(rows: list[dict[str, Any]], sweep_uri: str, full_configs: dict[str, Any]) -> None:
    loc = storage.parse_uri(sweep_uri)
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    storage.write_bytes(loc.join("results.csv").uri(), buf.getvalue().encode(), "text/csv")
    storage.write_json(loc.join("results.json").uri(),
                       [{**r, "full_config": full_configs.get(r["trial"])} for r in rows])


def format_table(rows: list[dict[str, Any]], metric: str) -> str:
    if not rows:
        return "(no trials)"
    cols = ["trial", "status", "step", "best", "final"] + [k for k in rows[0] if k.startswith("config.")]
    table = [[c.replace("config.", "") if c.startswith("config.") else (f"best {metric}" if c == "best" else c)
              for c in cols]]
    for r in rows:
        table.append([f"{r[c]:.4g}" if isinstance(r[c], float) else str(r[c]) for c in cols])
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in table)


# -------------------------------------------------------------------------------------------------------------- run

# Tune's own message suggests a Python call (Tuner.restore); with this CLI the same command resumes (same --name)
INTERRUPTED = ("interrupted: re-run the same command to resume (finished trials are kept and not run again; "
               "interrupted ones continue from their last checkpoint)")


def run_sweep(spec: SweepSpec, name: str, storage_root: str, max_steps: int | None, promote: str | None) -> int:
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining

    base = base_config(spec, name, storage_root, max_steps)
    cfg = validate(spec, base)
    metric = resolve_metric(spec, cfg)
    if spec.mode is None:
        from gansvc.metrics import METRICS

        spec = spec.model_copy(update={"mode": METRICS[metric].mode if metric in METRICS else "min"})
    from gansvc.train.__main__ import preflight
    from gansvc.train.resolve import check_default_dataset

    try:
        check_default_dataset(cfg)
        preflight(cfg)
    except (ConfigError, storage.StorageError) as err:
        raise SweepError(str(err)) from None
    total = cfg.loop.max_steps or 0
    if not total:
        raise SweepError("sweeps need loop.max_steps (in base, or --max-steps)")
    interval = spec.scheduler.grace_period or cfg.loop.eval_every
    if spec.scheduler.type == "asha":
        scheduler: Any = ASHAScheduler(time_attr="step", max_t=total, grace_period=min(interval, total),
                                       reduction_factor=spec.scheduler.reduction_factor)
    elif spec.scheduler.type == "pbt":
        interval = spec.scheduler.perturbation_interval or cfg.loop.eval_every
        mutations = {k: a.to_tune() for k, a in spec.space.items() if a.grid is None}
        if not mutations:
            raise SweepError("PBT mutates choice/uniform/loguniform/randint axes: give at least one")
        scheduler = PopulationBasedTraining(time_attr="step", perturbation_interval=interval,
                                            hyperparam_mutations=mutations, require_attrs=False)
    else:
        scheduler = FIFOScheduler()
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")  # the metric appears from the first eval on
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the classic table shows our step and metric columns
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS") or None)
    sweep_uri = storage.parse_uri(storage_root).join("sweeps", name).uri()
    fs, path = storage.arrow_filesystem(sweep_uri)
    meta = {"base": base, "metric": metric, "scheduler": spec.scheduler.type, "interval": interval}
    trainable = tune.with_resources(trial_fn, {"CPU": 0.1})  # the trial's own process only waits for its trainer
    tune_path = f"{path}/tune"
    if tune.Tuner.can_restore(tune_path, storage_filesystem=fs):
        print(f"resuming sweep {name} from {sweep_uri}/tune (finished trials are not re-run)", flush=True)
        tuner = tune.Tuner.restore(tune_path, trainable=trainable, resume_unfinished=True, resume_errored=False,
                                   storage_filesystem=fs)
    else:
        param_space = {k: a.to_tune() for k, a in spec.space.items()}
        param_space["__gansvc__"] = meta
        tuner = tune.Tuner(
            trainable, param_space=param_space,
            tune_config=tune.TuneConfig(metric=metric, mode=spec.mode, scheduler=scheduler,
                                        num_samples=spec.num_samples, max_concurrent_trials=spec.max_concurrent),
            run_config=tune.RunConfig(name="tune", storage_path=path, storage_filesystem=fs,
                                      progress_reporter=tune.CLIReporter(
                                          metric_columns=["step", metric], parameter_columns=list(spec.space),
                                          max_report_frequency=15)),
        )
    interrupted = False
    try:
        grid = tuner.fit()
    except tune.TuneError as err:
        raise SweepError(f"the sweep could not run: {str(err).strip().splitlines()[-1]}") from None
    except KeyboardInterrupt:  # a second Ctrl-C: Tune stopped at once; its last saved state tells what finished
        interrupted = True
        try:
            grid = tune.Tuner.restore(tune_path, trainable=trainable, storage_filesystem=fs).get_results()
        except Exception:  # noqa: BLE001 - no state saved yet: nothing finished, nothing to report
            print(INTERRUPTED, file=sys.stderr)
            return 130
    # the first Ctrl-C makes Tune stop its trials, save its state and return: the unfinished trials tell
    statuses = trial_statuses(grid, tune_path, fs)
    interrupted = interrupted or any(s in UNFINISHED for s in statuses.values())
    trials_root = storage.parse_uri(cfg.run.storage_root())
    for result in grid:
        tid = _trial_id(result)
        # the trial's run (PBT: its segment runs) that got furthest; ties go to the latest written
        reached: dict[str, tuple[int, str]] = {}
        for o in storage.list_objects(trials_root.uri()):
            parts = o.rel.split("/")
            if parts[0].startswith(tid) and len(parts) == 3 and parts[1].startswith("checkpoint-") \
                    and parts[2] == "meta.json":
                meta = storage.read_json(trials_root.join(o.rel).uri())
                reached[parts[0]] = max(reached.get(parts[0], (-1, "")), (int(meta["step"]), meta["created"]))
        if reached:
            _TRIAL_RUNS[tid] = trials_root.join(max(reached, key=lambda r: reached[r])).uri()
    rows = collect(grid, metric, spec.mode, total, list(spec.space), statuses)
    configs = {}
    for r in rows:
        if r["run"] and storage.exists(storage.parse_uri(r["run"]).join("gansvc-config.json").uri()):
            configs[r["trial"]] = storage.read_json(storage.parse_uri(r["run"]).join("gansvc-config.json").uri())
    write_results(rows, sweep_uri, configs)
    print(f"\nsweep {name}: {len(rows)} trials, sorted by best {metric} ({spec.mode})\n" + format_table(rows, metric))
    print(f"\nresults: {sweep_uri}/results.csv and results.json")
    if interrupted:
        print(INTERRUPTED, file=sys.stderr)
        return 130
    ok = [r for r in rows if not r["status"].startswith("failed") and r["best"] is not None]
    if not ok:
        print("error: every trial failed:\n" + "\n".join(f"  {r['trial']}: {r['status']}" for r in rows),
              file=sys.stderr)
        return 1
    if promote:
        from gansvc.registry import promote as do_promote

        entry = do_promote(ok[0]["run"], promote, metric=None)
        print(f"promoted trial {ok[0]['trial']} ({metric} {ok[0]['best']:.4g}) as {entry['name']} "
              f"v{entry['version']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gansvc.tune", description=__doc__.strip().splitlines()[0])
    p.add_argument("spec", help="sweep spec YAML (e.g. tune/dcgan-ablation.yaml)")
    p.add_argument("--dataset", help="override the spec's dataset")
    p.add_argument("--num-samples", type=int)
    p.add_argument("--max-concurrent", type=int)
    p.add_argument("--max-steps", type=int, help="steps per trial (overrides base loop.max_steps)")
    p.add_argument("--storage", help="where sweeps go (default $GANSVC_STORAGE)")
    p.add_argument("--name", help="sweep name; the same name resumes (default: the spec's file name)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any spec field, e.g. --set base.loop.batch_size=16 --set scheduler.type=none")
    p.add_argument("--dry-run", action="store_true", help="validate and print the expanded trials; start nothing")
    p.add_argument("--promote", metavar="NAME", help="register the best trial's best checkpoint under NAME")
    args = p.parse_args(argv)
    sets = list(args.set)
    for flag, key in (("dataset", "dataset"), ("num_samples", "num_samples"), ("max_concurrent", "max_concurrent")):
        if getattr(args, flag) is not None:
            sets.append(f"{key}={getattr(args, flag)}")
    name = args.name or os.path.splitext(os.path.basename(args.spec))[0]
    root = args.storage or os.environ.get("GANSVC_STORAGE") or os.path.expanduser("~/gansvc-runs")
    try:
        spec = load_spec(args.spec, sets)
        if args.dry_run:
            base = base_config(spec, name, root, args.max_steps)
            cfg = validate(spec, base)
            trials = expand_trials(spec)
            print(f"sweep {name}: family {spec.family}, dataset {cfg.data.uri}, scheduler {spec.scheduler.type}, "
                  f"metric {spec.metric} ({spec.mode or 'its own direction'}), {len(trials)} trial(s), {spec.max_concurrent} at a time")
            for i, t in enumerate(trials):
                print(f"  trial {i:3d}: " + ", ".join(f"{k}={v}" for k, v in t.items()))
            return 0
        return run_sweep(spec, name, root, args.max_steps, args.promote)
    except (SweepError, ConfigError, storage.StorageError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C before Tune ran (start-up) or while the results were written
        print(INTERRUPTED, file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - Tune/Train internals: one readable line, not a traceback
        print(f"error: the sweep failed: {type(err).__name__}: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
