"""A training run: where it lives, what is checked before it starts, and the Ray Train trainer that runs it.

One module for what the train CLI (gansvc.train.__main__) and every Tune trial (gansvc.tune.trainable) share:

- the run folder: `RUN = run.storage_root()/run.name` (`run_uri`), its files (names in gansvc.paths, which the
  registry reads too), the run config `gansvc-config.json` with its `history` of starts, the divergence record;
- `preflight`: every check that can fail before a worker starts (dataset layout and fit, network build, storage,
  whether a run of the same name may be resumed with this config);
- `make_trainer`: the one TorchTrainer construction (scaling, storage, checkpoint and failure settings, the Ray Train
  environment defaults), and `start_ray`.

Ray is imported inside the functions that start it: a `--dry-run` checks everything without starting Ray.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import sys
from pathlib import PurePosixPath
from typing import Any

from pydantic import ValidationError

from gansvc import storage
from gansvc.checkpoint import CheckpointError, checkpoint_step
from gansvc.config import ConfigError, ExperimentConfig, format_validation
from gansvc.data.manifest import Manifest
from gansvc.data.pipeline import ImageDataset
from gansvc.paths import DIVERGED_FILE, RUN_CONFIG_FILE
from gansvc.train.evaluation import eval_dataset
from gansvc.train.resolve import Fitted, check_default_dataset, fit_to_dataset

# ------------------------------------------------------------------------------------------------------ run folder


def run_uri(cfg: ExperimentConfig) -> str:
    """The run folder: the run storage (`--storage`, default $GANSVC_STORAGE/runs) joined with the run name."""
    return storage.parse_uri(cfg.run.storage_root()).join(cfg.run.name).uri()


def run_file(run: str, name: str) -> str:
    """The URI of the file `name` (one of gansvc.paths' run-folder names) in the run folder `run`."""
    return storage.parse_uri(run).join(name).uri()


def checkpoint_uri(run: storage.Location, arrow_path: str) -> str:
    """The URI (s3://... or a local path) of a checkpoint Ray reports by its pyarrow path (`bucket/prefix/...`, no
    scheme): Ray Train writes each checkpoint folder directly in the run folder."""
    return run.join(PurePosixPath(arrow_path).name).uri()


def diverged_error(run: str) -> str | None:
    """The error the loop recorded when the run's losses went non-finite, or None."""
    uri = run_file(run, DIVERGED_FILE)
    return str(storage.read_json(uri)["error"]) if storage.exists(uri) else None


def clear_diverged(run: str) -> None:
    """Forget a previous attempt's divergence: a new attempt (e.g. with a lower learning rate) starts clean."""
    storage.delete(run_file(run, DIVERGED_FILE))


HISTORY_KEY = "history"  # in gansvc-config.json: one segment per start of the run


def write_run_config(cfg: ExperimentConfig) -> None:
    """The run's gansvc-config.json without a history (a Tune trial: its runs are never resumed by the CLI)."""
    storage.write_json(run_file(run_uri(cfg), RUN_CONFIG_FILE), cfg.resolved().model_dump(mode="json"))


def read_run_config(run: str) -> tuple[ExperimentConfig, list[dict[str, Any]]] | None:
    """(config, history) from a run's gansvc-config.json, or None for a new run."""
    uri = run_file(run, RUN_CONFIG_FILE)
    if not storage.exists(uri):
        return None
    raw = dict(storage.read_json(uri))
    history = raw.pop(HISTORY_KEY, [])
    try:
        return ExperimentConfig.model_validate(raw), list(history)
    except ValidationError as err:
        raise ConfigError(
            f"{uri} is not a valid run config (written by another version?):\n"
            + format_validation(err)
            + "\nuse another --name for a new run"
        ) from None


def _latest_step(run: storage.Location) -> int:
    steps = [
        checkpoint_step(o.rel.split("/", 1)[0]) for o in storage.list_objects(run.uri()) if o.rel.endswith("/meta.json")
    ]
    return max((s for s in steps if s is not None), default=0)


def record_segment(cfg: ExperimentConfig, allow_config_change: bool) -> dict[str, Any]:
    """Write the run's gansvc-config.json: this (resolved) config plus its history with one more segment."""
    run = storage.parse_uri(run_uri(cfg))
    found = read_run_config(run.uri())
    history = found[1] if found else []
    changes = config_changes(found[0], cfg) if found else {}
    segment = {
        "segment": len(history),
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "resume_step": _latest_step(run) if found else 0,
        "changed": {k: [a, b] for k, (a, b) in changes.items()},
        "allowed_by_flag": bool(allow_config_change and guarded(changes)),
    }
    doc = {**cfg.resolved().model_dump(mode="json"), HISTORY_KEY: [*history, segment]}
    storage.write_json(run.join(RUN_CONFIG_FILE).uri(), doc)
    return segment


# ------------------------------------------------------------------------------------------------------- preflight


def fit_data(cfg: ExperimentConfig, given: frozenset[str]) -> tuple[Fitted, ImageDataset]:
    """The config fitted to its dataset (`resolve.fit_to_dataset`) and that dataset, read at the fitted size."""
    check_default_dataset(cfg)
    try:
        dataset = ImageDataset(cfg.data)
        fitted = fit_to_dataset(cfg, dataset, given)
        if fitted.cfg.data != cfg.data:
            dataset = ImageDataset(fitted.cfg.data, dataset.manifest)
    except (storage.StorageError, ValueError) as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"dataset: {err}") from None
    notes = tuple(fitted.notes)
    fitted.cfg = fitted.cfg.model_copy(update={"notes": notes})
    return fitted, dataset


def preflight(
    cfg: ExperimentConfig, allow_config_change: bool = False, dataset: ImageDataset | None = None
) -> ImageDataset:
    """Everything that can be checked before a worker starts: dataset fit, network build, storage, resume fit."""
    spec = cfg.spec()
    if dataset is None:
        try:
            dataset = ImageDataset(cfg.data)
        except (storage.StorageError, ValueError) as err:
            raise ConfigError(f"dataset: {err}") from None
    _check_layout(cfg, dataset)
    try:
        eval_dataset(cfg, dataset)  # the evaluation split: the same check (and error) as in the workers
    except (storage.StorageError, ValueError) as err:
        raise ConfigError(
            f"dataset: evaluation reads the test split when there is one: {err}; add the missing "
            "split or remove the incomplete one"
        ) from None
    per_worker = -(-len(dataset) // cfg.scaling.num_workers)
    if cfg.loop.batch_size > per_worker:
        raise ConfigError(
            f"--batch-size {cfg.loop.batch_size} exceeds the {per_worker} images each of "
            f"{cfg.scaling.num_workers} worker(s) gets: lower it or use fewer workers"
        )
    try:
        state = spec.build(cfg.family_config(), dataset.spec)
    except ValueError as err:
        raise ConfigError(
            f"{spec.name} cannot be built for this data ({dataset.spec.height}x{dataset.spec.width}x"
            f"{dataset.spec.channels}): {err}"
        ) from None
    try:
        storage.check_bucket(cfg.run.storage_root())
    except storage.StorageError as err:
        raise ConfigError(f"run storage: {err}") from None
    _check_resume_fits(cfg, state, allow_config_change)
    return dataset


def _check_layout(cfg: ExperimentConfig, dataset: ImageDataset) -> None:
    """The dataset's layout and labels are what the family's task needs."""
    spec = cfg.spec()
    layout, attrs = dataset.spec.layout, dataset.spec.attributes
    if spec.task == "generate" and layout != "single":
        raise ConfigError(
            f"{spec.name} generates images from noise and needs a single-domain dataset "
            f"(train/ [test/]); {cfg.data.uri} is {layout}"
        )
    if spec.task == "translate" and layout != "unpaired":
        raise ConfigError(
            f"{spec.name} translates between domains and needs an unpaired dataset (trainA/ trainB/); "
            f"{cfg.data.uri} is {layout}"
        )
    if spec.conditional and not attrs:
        raise ConfigError(f"{spec.name} is label-conditioned: {cfg.data.uri} has no labels.csv attributes")


# Fields a resumed run may change without --allow-config-change (prefixes of dotted paths): how long and how often,
# on what resources, how data is loaded. Everything else (family, model, data content and transforms, batch size, seed,
# metric) defines what is trained.
RESUME_MAY_CHANGE = (
    "loop.max_steps",
    "loop.epochs",
    "loop.log_every",
    "loop.checkpoint_every",
    "loop.eval_every",
    "loop.keep_checkpoints",
    "loop.grid_size",
    "loop.tensorboard",
    "loop.amp",
    "loop.channels_last",
    "loop.compile",
    "loop.compile_mode",
    "loop.tf32",
    "scaling.",
    "run.",
    "data.decode_threads",
    "data.prefetch_batches",
    "data.cache_dir",
    "data.cache",
    "metrics.inception",
    "metrics.samples",
    "metrics.reference_samples",
    "notes",
)


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix.rstrip("."): d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}{k}.") if isinstance(v, dict) and v else {f"{prefix}{k}": v})
    return out


def config_changes(old: ExperimentConfig, new: ExperimentConfig) -> dict[str, tuple[Any, Any]]:
    """Every dotted field whose value differs: path -> (old, new) (resolved configs, so defaults are explicit)."""
    a = _flatten(old.resolved().model_dump(mode="json"))
    b = _flatten(new.resolved().model_dump(mode="json"))
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def guarded(changes: dict[str, tuple[Any, Any]]) -> dict[str, tuple[Any, Any]]:
    """The changes a resume refuses without --allow-config-change."""
    return {
        k: v
        for k, v in changes.items()
        if not any(k == p or (p.endswith(".") and k.startswith(p)) for p in RESUME_MAY_CHANGE)
    }


def _check_resume_fits(cfg: ExperimentConfig, state: Any, allow_config_change: bool) -> None:
    """A run of this name that exists must be of the same family and network shapes (else: refuse, name why), and of
    the same dataset and training config unless --allow-config-change."""
    found = read_run_config(run_uri(cfg))
    if found is None:
        return
    stored = found[0]
    where = f"run {cfg.run.name!r} in {cfg.run.storage_root()}"
    if stored.family != cfg.family:
        raise CheckpointError(f"{where} was trained as {stored.family!r}, not {cfg.family!r}: use another --name")
    try:
        old = stored.spec().build(stored.family_config(), ImageDataset(stored.data).spec)
    except (storage.StorageError, ValueError):
        old = None  # its dataset is gone or changed: the weights are compared when the workers load them
    if old is not None:
        _check_shapes(where, state, old)
    changed = guarded(config_changes(stored, cfg))
    if changed and not allow_config_change:
        listed = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items())
        raise ConfigError(
            f"{where} was started with another config: {listed}. Resume it with its own config (see "
            f"{RUN_CONFIG_FILE} there), use another --name for a new run, or pass "
            "--allow-config-change to continue it with this config (recorded in its history)"
        )


def _check_shapes(where: str, state: Any, old: Any) -> None:
    """The networks of this config have the shapes of the stored run's (else its checkpoints cannot load)."""
    for name, net in state.nets.items():
        a = {k: tuple(v.shape) for k, v in net.state_dict().items()}
        b = {k: tuple(v.shape) for k, v in old.nets[name].state_dict().items()}
        if a != b:
            diff = sorted(set(a.items()) ^ set(b.items()))[:3]
            raise CheckpointError(
                f"{where} has networks of other shapes than this config ({name}: {diff}); resume "
                f"it with its own config (see {RUN_CONFIG_FILE} there) or use another --name"
            )


# --------------------------------------------------------------------------------------------------------- trainer

# Ray Train V2 (2.60) takes one report per worker each time its controller polls the workers, every
# RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (default 2 s), and `ray.train.report` blocks while the previous one is unread
# (train/v2/_internal/execution/context.py `_wait_then_report`): at the default a run reports at most every 2 s, so a
# fast GPU step (dcgan 64 px: hundreds of steps/s, a report every log_every = 50 steps) would wait on the poll. Ray
# passes these variables from the driver to the controller and workers (constants.ENV_VARS_TO_PROPAGATE).
TRAIN_POLL_S = "0.1"
# Ray Train's preemption watcher (an actor per worker group) only tells the training function that a node is being
# drained (ray.train.get_preemption_info), which our loop does not act on: it checkpoints every checkpoint_every steps
# and resumes after any lost worker. Its actor also logs a core_worker error line ("PreemptionWatcher ... constructor
# arguments in the object store") at every start of every run: off unless the user sets the variable.
TRAIN_ENV_DEFAULTS = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": TRAIN_POLL_S, "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}


def train_env_defaults() -> None:
    """Before building a TorchTrainer: TRAIN_ENV_DEFAULTS, where the user has not set the variable."""
    for key, value in TRAIN_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)


def keep_checkpoints(cfg: ExperimentConfig) -> int:
    """Ray's num_to_keep: at least 2, so a damaged newest checkpoint always has a previous one to fall back to."""
    return max(2, cfg.loop.keep_checkpoints)


def make_trainer(
    cfg: ExperimentConfig,
    manifest: Manifest | None = None,
    init_from: str | None = None,
    callbacks: list[Any] | None = None,
) -> Any:
    """The TorchTrainer of a run (Ray must be up). `manifest`: the dataset version preflight checked; every worker
    (and every restart of the worker group) reads exactly that version, even if the dataset is overwritten while the
    run goes on. `init_from`: a checkpoint URI a new run starts from (a PBT segment). `callbacks`: Ray Train run
    callbacks (a Tune trial forwards the reports to Tune)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig  # ray: imported when a run starts
    from ray.train.torch import TorchTrainer

    from gansvc.train.loop import train_loop

    train_env_defaults()
    fs, path = storage.arrow_filesystem(cfg.run.storage_root())
    resources = {"CPU": cfg.scaling.cpus_per_worker}
    if cfg.scaling.use_gpu:
        resources["GPU"] = cfg.scaling.gpus_per_worker
    return TorchTrainer(
        train_loop,
        train_loop_config={
            "experiment": cfg.model_dump(mode="json"),
            "run_uri": run_uri(cfg),
            "manifest": manifest.model_dump(mode="json") if manifest is not None else None,
            "init_from": init_from,
        },
        scaling_config=ScalingConfig(
            num_workers=cfg.scaling.num_workers, use_gpu=cfg.scaling.use_gpu, resources_per_worker=resources
        ),
        run_config=RunConfig(
            name=cfg.run.name,
            storage_path=path,
            storage_filesystem=fs,
            callbacks=callbacks,
            checkpoint_config=CheckpointConfig(num_to_keep=keep_checkpoints(cfg)),
            failure_config=FailureConfig(max_failures=cfg.scaling.max_failures),
        ),
    )


def fit(cfg: ExperimentConfig, manifest: Manifest | None = None) -> Any:
    """Run the train CLI's TorchTrainer on the Ray of `start_ray`; a config, data or code error (one that repeats on
    every restart) stops it at once instead of being retried max_failures times."""
    from gansvc.train.failures import fit_stopping_on_deterministic_errors  # imports ray

    start_ray()
    return fit_stopping_on_deterministic_errors(make_trainer(cfg, manifest))


# ------------------------------------------------------------------------------------------------------------- Ray

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _no_ansi(record: logging.LogRecord) -> bool:
    """A logging filter: the record's message and arguments without ANSI colour codes."""
    if isinstance(record.msg, str):
        record.msg = ANSI.sub("", record.msg)
    if isinstance(record.args, tuple):
        record.args = tuple(ANSI.sub("", a) if isinstance(a, str) else a for a in record.args)
    return True


class RayUnavailable(RuntimeError):
    """Ray could not be started or reached: the run never began (nothing to resume, nothing lost)."""


def start_ray() -> None:
    """Connect to the cluster in RAY_ADDRESS (what `ray job submit` sets), else start a local Ray instance."""
    import ray  # imported when a run starts: --dry-run and argument errors never load Ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS") or None
    if not sys.stdout.isatty():  # a log file or a job's output: no ANSI colour codes from Ray
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")  # the (Worker pid=...) prefixes
        logging.getLogger("ray._private.worker").addFilter(_no_ansi)  # ray.init's "View the dashboard at ..." line
    try:
        ray.init(address=address, log_to_driver=True)
    except Exception as err:  # noqa: BLE001 - Ray raises plain Exception / ConnectionError for both cases
        reason = (str(err).strip().splitlines() or [type(err).__name__])[-1]
        if address:
            raise RayUnavailable(
                f"cannot reach the Ray cluster at RAY_ADDRESS={address}: {reason}\n"
                "check the address and that the cluster is up (`ray status`), or unset RAY_ADDRESS "
                "to train on a local Ray instance"
            ) from None
        raise RayUnavailable(
            f"could not start a local Ray instance: {reason}\nthis happens when the machine is "
            "overloaded or short of memory or disk: retry, or submit to a running cluster "
            "(RAY_ADDRESS=... or `ray job submit -- python -m gansvc.train ...`)"
        ) from None
