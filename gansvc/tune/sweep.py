"""Running a sweep on Ray Tune: the scheduler, the Tuner (new or restored), the fit with its Ctrl-C handling, and the
results (table, files, exit code, promotion of the best trial).

The sweep folder SWEEP (`--storage`/NAME, default $GANSVC_STORAGE/sweeps/NAME) holds Tune's state in `tune/`, each
trial's run in `trials/TRIAL_ID` and the results table in `results.{csv,json}`.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any

from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining

from gansvc import storage
from gansvc.config import ExperimentConfig
from gansvc.registry import promote as promote_model
from gansvc.strict import ConfigError
from gansvc.train.resolve import check_default_dataset
from gansvc.train.run import preflight, start_ray
from gansvc.tune.results import (
    INTERRUPTED,
    UNFINISHED,
    collect,
    format_table,
    full_configs,
    trial_runs,
    trial_statuses,
    write_results,
)
from gansvc.tune.spec import META_KEY, SweepError, SweepSpec, base_config, metric_mode, resolve_metric, validate
from gansvc.tune.trainable import trial_fn

TRIAL_CPU = 0.1  # the trial's own process only waits for its trainer (whose workers hold the resources)


@dataclass(frozen=True)
class Sweep:
    """A validated sweep: its spec (mode filled in), folder, raw base config, resolved base config and metric."""

    spec: SweepSpec
    name: str
    uri: str
    base: dict[str, Any]
    cfg: ExperimentConfig
    metric: str

    @property
    def mode(self) -> str:
        return self.spec.mode or "min"

    @property
    def total(self) -> int:
        return self.cfg.loop.max_steps or 0


def prepare(spec: SweepSpec, name: str, sweep_uri: str, max_steps: int | None) -> Sweep:
    """Validate the spec against the family, resolve its metric and mode, and preflight the base config."""
    base = base_config(spec, sweep_uri, max_steps)
    cfg = validate(spec, base)
    metric = resolve_metric(spec, cfg)
    if spec.mode is None:
        spec = spec.model_copy(update={"mode": metric_mode(metric)})
    try:
        check_default_dataset(cfg)
        preflight(cfg)
    except (ConfigError, storage.StorageError) as err:
        raise SweepError(str(err)) from None
    if not cfg.loop.max_steps:
        raise SweepError("sweeps need loop.max_steps (in base, or --max-steps)")
    return Sweep(spec, name, sweep_uri, base, cfg, metric)


def make_scheduler(sweep: Sweep) -> tuple[Any, int]:
    """Tune's scheduler and the interval (steps) it acts on: ASHA's grace period, PBT's perturbation interval."""
    sched, eval_every, total = sweep.spec.scheduler, sweep.cfg.loop.eval_every, sweep.total
    interval = sched.grace_period or eval_every
    if sched.type == "asha":
        return ASHAScheduler(
            time_attr="step", max_t=total, grace_period=min(interval, total), reduction_factor=sched.reduction_factor
        ), interval
    if sched.type == "pbt":
        interval = sched.perturbation_interval or eval_every
        mutations = {k: a.to_tune() for k, a in sweep.spec.space.items() if a.grid is None}
        if not mutations:
            raise SweepError("PBT mutates choice/uniform/loguniform/randint axes: give at least one")
        return PopulationBasedTraining(
            time_attr="step", perturbation_interval=interval, hyperparam_mutations=mutations, require_attrs=False
        ), interval
    return FIFOScheduler(), interval


@dataclass(frozen=True)
class TuneState:
    """Where Tune keeps the sweep's state (SWEEP/tune) and the trainable it restores with."""

    path: str
    fs: Any
    trainable: Any


def make_tuner(sweep: Sweep, scheduler: Any, interval: int) -> tuple[Any, TuneState]:
    """A new Tuner, or the saved one of an interrupted sweep of the same folder (its finished trials are kept)."""
    fs, path = storage.arrow_filesystem(sweep.uri)
    state = TuneState(f"{path}/tune", fs, tune.with_resources(trial_fn, {"CPU": TRIAL_CPU}))
    if tune.Tuner.can_restore(state.path, storage_filesystem=fs):
        print(f"resuming sweep {sweep.name} from {sweep.uri}/tune (finished trials are not re-run)", flush=True)
        return tune.Tuner.restore(
            state.path, trainable=state.trainable, resume_unfinished=True, resume_errored=False, storage_filesystem=fs
        ), state
    param_space = {k: a.to_tune() for k, a in sweep.spec.space.items()}
    param_space[META_KEY] = {
        "base": sweep.base,
        "metric": sweep.metric,
        "scheduler": sweep.spec.scheduler.type,
        "interval": interval,
    }
    tuner = tune.Tuner(
        state.trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric=sweep.metric,
            mode=sweep.mode,
            scheduler=scheduler,
            num_samples=sweep.spec.num_samples,
            max_concurrent_trials=sweep.spec.max_concurrent,
        ),
        run_config=tune.RunConfig(
            name="tune",
            storage_path=path,
            storage_filesystem=fs,
            progress_reporter=tune.CLIReporter(
                metric_columns=["step", sweep.metric], parameter_columns=list(sweep.spec.space), max_report_frequency=15
            ),
        ),
    )
    return tuner, state


def fit_tuner(tuner: Any, state: TuneState) -> tuple[Any, bool]:
    """(the result grid or None when nothing was saved yet, whether the sweep was interrupted)."""
    try:
        grid = tuner.fit()
    except tune.TuneError as err:
        raise SweepError(f"the sweep could not run: {str(err).strip().splitlines()[-1]}") from None
    except KeyboardInterrupt:  # a second Ctrl-C: Tune stopped at once; its last saved state tells what finished
        try:
            return tune.Tuner.restore(
                state.path, trainable=state.trainable, storage_filesystem=state.fs
            ).get_results(), True
        except Exception:  # noqa: BLE001 - no state saved yet: nothing finished, nothing to report
            return None, True
    return grid, False


def run_sweep(spec: SweepSpec, name: str, sweep_uri: str, max_steps: int | None, promote: str | None) -> int:
    """Run (or resume) the sweep in `sweep_uri`; the exit code (130: interrupted, 1: every trial failed)."""
    sweep = prepare(spec, name, sweep_uri, max_steps)
    scheduler, interval = make_scheduler(sweep)
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")  # the metric appears from the first eval on
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the classic table shows our step and metric columns
    start_ray()
    tuner, state = make_tuner(sweep, scheduler, interval)
    grid, interrupted = fit_tuner(tuner, state)
    if grid is None:
        print(INTERRUPTED, file=sys.stderr)
        return 130
    # the first Ctrl-C makes Tune stop its trials, save its state and return: the unfinished trials tell
    statuses = trial_statuses(grid, state.path, state.fs)
    interrupted = interrupted or any(s in UNFINISHED for s in statuses.values())
    rows = collect(
        grid,
        sweep.metric,
        sweep.mode,
        sweep.total,
        list(sweep.spec.space),
        trial_runs(grid, sweep.cfg.run.storage_root()),
        statuses,
    )
    write_results(rows, sweep.uri, full_configs(rows))
    print(
        f"\nsweep {name}: {len(rows)} trials, sorted by best {sweep.metric} ({sweep.mode})\n"
        + format_table(rows, sweep.metric)
    )
    print(f"\nresults: {sweep.uri}/results.csv and results.json")
    if interrupted:
        print(INTERRUPTED, file=sys.stderr)
        return 130
    return _finish(rows, sweep.metric, promote)


def _finish(rows: list[dict[str, Any]], metric: str, promote: str | None) -> int:
    """Exit 1 when every trial failed; else promote the best trial's best checkpoint when asked."""
    ok = [r for r in rows if not r["status"].startswith("failed") and r["best"] is not None]
    if not ok:
        print(
            "error: every trial failed:\n" + "\n".join(f"  {r['trial']}: {r['status']}" for r in rows), file=sys.stderr
        )
        return 1
    if promote:
        entry = promote_model(ok[0]["run"], promote, metric=None)
        print(f"promoted trial {ok[0]['trial']} ({metric} {ok[0]['best']:.4g}) as {entry['name']} v{entry['version']}")
    return 0
