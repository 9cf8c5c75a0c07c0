"""`python -m gansvc.train FAMILY [--dataset URI] [options]`: data-parallel GAN training on Ray Train.

With no other flag it trains the family's default preset (a whole run: model, batch size, length, schedule, size,
flip) on its report's dataset in $GANSVC_STORAGE/datasets/ (see gansvc.train.resolve); `--dry-run` prints it.

Run it on a cluster with `ray job submit -- python -m gansvc.train ...`, or directly: it connects to `RAY_ADDRESS`
or starts a local Ray. The config is validated and the dataset checked before any worker starts; re-running with the
same `--name` (and storage) resumes from the latest checkpoint (the newest one that is not damaged).

Resume rules: a run keeps its dataset, family config and the loop fields that shape training (batch size, seed) and
its metric. Loop-length and cadence fields (max_steps, epochs, log/eval/checkpoint cadence, keep_checkpoints), scaling
(workers, GPUs, max_failures), data loading threads and the GPU switches may change. Any other change is refused with
the differing fields, unless `--allow-config-change`: then the run continues with the new config and the change is
recorded in `history` of its gansvc-config.json (one segment per start: time, the step it resumed from, changed
fields old -> new).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import re
import sys
from pathlib import PurePosixPath
from typing import Any

import yaml
from pydantic import ValidationError

from gansvc import storage
from gansvc.checkpoint import CheckpointError, checkpoint_step
from gansvc.config import (ConfigError, ExperimentConfig, build_config, format_validation, load_yaml, parse_set,
                           set_path)
from gansvc.data.manifest import Manifest
from gansvc.data.pipeline import ImageDataset
from gansvc.families import FAMILIES, get_family
from gansvc.train.evaluation import eval_dataset
from gansvc.train.resolve import (Fitted, apply_run_preset, check_default_dataset, default_dataset_uri,
                                  fit_to_dataset, schedule_lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m gansvc.train", description=__doc__.strip().splitlines()[0],
                                epilog="Families: " + ", ".join(FAMILIES) + ". Any config field can be set with "
                                "--set, e.g. --set model.lr_g=1e-4 --set data.load_size=36.")
    p.add_argument("family", nargs="?", help="family to train (or `family:` in --config)")
    p.add_argument("--dataset", help="dataset root: s3://bucket/prefix or a folder with manifest.json (default: the "
                   "family's report dataset, $GANSVC_STORAGE/datasets/NAME)")
    p.add_argument("--config", help="experiment config YAML (local path or s3:// URI); flags override it")
    p.add_argument("--preset", help="the whole run: default (the family's default preset), report (the report's "
                   "baseline exactly), smoke (tiny nets, tests)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any config field")
    p.add_argument("--num-workers", type=int, help="data-parallel workers (default 1)")
    p.add_argument("--gpus-per-worker", type=float, help="GPUs per worker; > 0 trains on GPUs (NCCL)")
    p.add_argument("--cpus-per-worker", type=float, help="CPUs per worker (default 1)")
    p.add_argument("--storage", help="where runs and checkpoints go (default $GANSVC_STORAGE/runs)")
    p.add_argument("--name", help="run name; the same name resumes (default FAMILY-TIMESTAMP)")
    p.add_argument("--max-steps", type=int, help="stop after this many steps")
    p.add_argument("--epochs", type=float, help="or after this many epochs")
    p.add_argument("--batch-size", type=int, help="per worker (default: the preset's, else 64)")
    p.add_argument("--size", type=int, help="training image size (default: the dataset's)")
    p.add_argument("--checkpoint-every", type=int)
    p.add_argument("--eval-every", type=int)
    p.add_argument("--log-every", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--max-failures", type=int, help="restarts of a crashed worker group (default 2)")
    p.add_argument("--allow-config-change", action="store_true",
                   help="resume a run with another dataset or family/loop config (recorded in its history)")
    p.add_argument("--dry-run", action="store_true", help="validate config and dataset, print the resolved config "
                   "and schedule (steps, epochs, lr decay), exit")
    return p


FLAG_PATHS = {
    "dataset": "data.uri", "preset": "preset", "num_workers": "scaling.num_workers",
    "cpus_per_worker": "scaling.cpus_per_worker", "storage": "run.storage", "name": "run.name",
    "max_steps": "loop.max_steps", "epochs": "loop.epochs", "batch_size": "loop.batch_size", "size": "data.size",
    "checkpoint_every": "loop.checkpoint_every", "eval_every": "loop.eval_every", "log_every": "loop.log_every",
    "seed": "loop.seed", "max_failures": "scaling.max_failures",
}


def config_from_args(args: argparse.Namespace) -> ExperimentConfig:
    """The validated config the flags describe (the family's run preset filled in; not yet fitted to the data)."""
    return raw_config(args)[0]


def raw_config(args: argparse.Namespace) -> tuple[ExperimentConfig, frozenset[str]]:
    raw: dict[str, Any] = load_yaml(args.config) if args.config else {}
    if args.family:
        if raw.get("family") not in (None, args.family):
            raise ConfigError(f"the command names family {args.family!r} but {args.config} says {raw['family']!r}")
        raw["family"] = args.family
    if "family" not in raw:
        raise ConfigError("name a family: python -m gansvc.train FAMILY ... (one of: " + ", ".join(FAMILIES) + ")")
    for flag, path in FLAG_PATHS.items():
        value = getattr(args, flag)
        if value is not None:
            set_path(raw, path, value)
    if args.gpus_per_worker is not None:
        set_path(raw, "scaling.gpus_per_worker", args.gpus_per_worker)
        set_path(raw, "scaling.use_gpu", args.gpus_per_worker > 0)
    for item in args.set:
        set_path(raw, *parse_set(item))
    return config_and_given(raw)


def config_and_given(raw: dict[str, Any]) -> tuple[ExperimentConfig, frozenset[str]]:
    """The config of a raw dict (YAML + flags) with the family's run preset filled in under the user's values and the
    default dataset, and the dotted keys the user gave (which fitting to the data never changes)."""
    try:
        spec = get_family(raw["family"])
    except ValueError as err:
        raise ConfigError(str(err)) from None
    preset = raw.get("preset")
    if preset is not None and preset not in spec.presets and preset not in spec.runs:
        known = ", ".join(sorted(set(spec.presets) | set(spec.runs))) or "none"
        raise ConfigError(f"family {spec.name!r} has no preset {preset!r}; presets: {known}")
    given = apply_run_preset(raw, spec)
    if not raw.get("data", {}).get("uri"):
        set_path(raw, "data.uri", default_dataset_uri(spec))
    loop = raw.get("loop") or {}
    if loop.get("max_steps") is None and loop.get("epochs") is None:
        raise ConfigError("say how long to train: --max-steps N or --epochs E (loop.max_steps / loop.epochs)")
    if not raw.get("run", {}).get("name"):
        set_path(raw, "run.name", f"{raw['family']}-{dt.datetime.now():%Y%m%d-%H%M%S}")
    return build_config(raw), given


def checkpoint_uri(run: storage.Location, arrow_path: str) -> str:
    """The URI (s3://... or a local path) of a checkpoint Ray reports by its pyarrow path (`bucket/prefix/...`, no
    scheme): Ray Train writes each checkpoint folder directly in the run folder."""
    return run.join(PurePosixPath(arrow_path).name).uri()


def run_uri(cfg: ExperimentConfig) -> str:
    return storage.parse_uri(cfg.run.storage_root()).join(cfg.run.name).uri()


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


def preflight(cfg: ExperimentConfig, allow_config_change: bool = False,
              dataset: ImageDataset | None = None) -> ImageDataset:
    """Everything that can be checked before a worker starts: dataset fit, network build, storage, resume fit."""
    spec = cfg.spec()
    if dataset is None:
        try:
            dataset = ImageDataset(cfg.data)
        except (storage.StorageError, ValueError) as err:
            raise ConfigError(f"dataset: {err}") from None
    layout, attrs = dataset.spec.layout, dataset.spec.attributes
    if spec.task == "generate" and layout != "single":
        raise ConfigError(f"{spec.name} generates images from noise and needs a single-domain dataset "
                          f"(train/ [test/]); {cfg.data.uri} is {layout}")
    if spec.task == "translate" and layout != "unpaired":
        raise ConfigError(f"{spec.name} translates between domains and needs an unpaired dataset (trainA/ trainB/); "
                          f"{cfg.data.uri} is {layout}")
    if spec.conditional and not attrs:
        raise ConfigError(f"{spec.name} is label-conditioned: {cfg.data.uri} has no labels.csv attributes")
    try:
        eval_dataset(cfg, dataset)  # the evaluation split: the same check (and error) as in the workers
    except (storage.StorageError, ValueError) as err:
        raise ConfigError(f"dataset: evaluation reads the test split when there is one: {err}; add the missing "
                          "split or remove the incomplete one") from None
    per_worker = -(-len(dataset) // cfg.scaling.num_workers)
    if cfg.loop.batch_size > per_worker:
        raise ConfigError(f"--batch-size {cfg.loop.batch_size} exceeds the {per_worker} images each of "
                          f"{cfg.scaling.num_workers} worker(s) gets: lower it or use fewer workers")
    try:
        state = spec.build(cfg.family_config(), dataset.spec)
    except ValueError as err:
        raise ConfigError(f"{spec.name} cannot be built for this data ({dataset.spec.height}x{dataset.spec.width}x"
                          f"{dataset.spec.channels}): {err}") from None
    root = cfg.run.storage_root()
    try:
        storage.check_bucket(root)
    except storage.StorageError as err:
        raise ConfigError(f"run storage: {err}") from None
    _check_resume_fits(cfg, state, allow_config_change)
    return dataset


# Fields a resumed run may change without --allow-config-change (prefixes of dotted paths): how long and how often,
# on what resources, how data is loaded. Everything else (family, model, data content and transforms, batch size, seed,
# metric) defines what is trained.
RESUME_MAY_CHANGE = ("loop.max_steps", "loop.epochs", "loop.log_every", "loop.checkpoint_every", "loop.eval_every",
                     "loop.keep_checkpoints", "loop.grid_size", "loop.amp", "loop.channels_last", "loop.compile",
                     "loop.compile_mode", "loop.tf32", "scaling.", "run.", "data.decode_threads",
                     "data.prefetch_batches", "data.cache_dir", "data.cache", "metrics.inception", "metrics.samples",
                     "metrics.reference_samples", "notes")
HISTORY_KEY = "history"  # in gansvc-config.json: one segment per start of the run


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
    return {k: v for k, v in changes.items() if not any(k == p or (p.endswith(".") and k.startswith(p))
                                                        for p in RESUME_MAY_CHANGE)}


def read_run_config(run: str) -> tuple[ExperimentConfig, list[dict[str, Any]]] | None:
    """(config, history) from a run's gansvc-config.json, or None for a new run."""
    uri = storage.parse_uri(run).join("gansvc-config.json").uri()
    if not storage.exists(uri):
        return None
    raw = dict(storage.read_json(uri))
    history = raw.pop(HISTORY_KEY, [])
    try:
        return ExperimentConfig.model_validate(raw), list(history)
    except ValidationError as err:
        raise ConfigError(f"{uri} is not a valid run config (written by another version?):\n"
                          + format_validation(err) + "\nuse another --name for a new run") from None


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
    for name, net in state.nets.items() if old is not None else ():
        a = {k: tuple(v.shape) for k, v in net.state_dict().items()}
        b = {k: tuple(v.shape) for k, v in old.nets[name].state_dict().items()}
        if a != b:
            diff = sorted(set(a.items()) ^ set(b.items()))[:3]
            raise CheckpointError(f"{where} has networks of other shapes than this config ({name}: {diff}); resume "
                                  "it with its own config (see gansvc-config.json there) or use another --name")
    changed = guarded(config_changes(stored, cfg))
    if changed and not allow_config_change:
        listed = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items())
        raise ConfigError(f"{where} was started with another config: {listed}. Resume it with its own config (see "
                          "gansvc-config.json there), use another --name for a new run, or pass "
                          "--allow-config-change to continue it with this config (recorded in its history)")


def _latest_step(run: storage.Location) -> int:
    steps = [checkpoint_step(o.rel.split("/", 1)[0]) for o in storage.list_objects(run.uri())
             if o.rel.endswith("/meta.json")]
    return max((s for s in steps if s is not None), default=0)


def record_segment(cfg: ExperimentConfig, allow_config_change: bool) -> dict[str, Any]:
    """Write the run's gansvc-config.json: this (resolved) config plus its history with one more segment."""
    import datetime as dt

    run = storage.parse_uri(run_uri(cfg))
    found = read_run_config(run.uri())
    history = found[1] if found else []
    changes = config_changes(found[0], cfg) if found else {}
    segment = {"segment": len(history), "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
               "resume_step": _latest_step(run) if found else 0,
               "changed": {k: [a, b] for k, (a, b) in changes.items()},
               "allowed_by_flag": bool(allow_config_change and guarded(changes))}
    doc = {**cfg.resolved().model_dump(mode="json"), HISTORY_KEY: [*history, segment]}
    storage.write_json(run.join("gansvc-config.json").uri(), doc)
    return segment


def fit(cfg: ExperimentConfig, manifest: Manifest | None = None) -> Any:
    """Run the TorchTrainer. `manifest`: the dataset version preflight checked; every worker (and every restart of
    the worker group) reads exactly that version, even if the dataset is overwritten while the run goes on."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from gansvc.train.failures import fit_stopping_on_deterministic_errors
    from gansvc.train.loop import train_loop

    start_ray()
    train_env_defaults()
    fs, path = storage.arrow_filesystem(cfg.run.storage_root())
    resources = {"CPU": cfg.scaling.cpus_per_worker}
    if cfg.scaling.use_gpu:
        resources["GPU"] = cfg.scaling.gpus_per_worker
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"experiment": cfg.model_dump(mode="json"), "run_uri": run_uri(cfg),
                           "manifest": manifest.model_dump(mode="json") if manifest is not None else None},
        scaling_config=ScalingConfig(num_workers=cfg.scaling.num_workers, use_gpu=cfg.scaling.use_gpu,
                                     resources_per_worker=resources),
        run_config=RunConfig(name=cfg.run.name, storage_path=path, storage_filesystem=fs,
                             checkpoint_config=CheckpointConfig(num_to_keep=keep_checkpoints(cfg)),
                             failure_config=FailureConfig(max_failures=cfg.scaling.max_failures)),
    )
    return fit_stopping_on_deterministic_errors(trainer)


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
    import ray

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
            raise RayUnavailable(f"cannot reach the Ray cluster at RAY_ADDRESS={address}: {reason}\n"
                                 "check the address and that the cluster is up (`ray status`), or unset RAY_ADDRESS "
                                 "to train on a local Ray instance") from None
        raise RayUnavailable(f"could not start a local Ray instance: {reason}\nthis happens when the machine is "
                             "overloaded or short of memory or disk: retry, or submit to a running cluster "
                             "(RAY_ADDRESS=... or `ray job submit -- python -m gansvc.train ...`)") from None


def keep_checkpoints(cfg: ExperimentConfig) -> int:
    """Ray's num_to_keep: at least 2, so a damaged newest checkpoint always has a previous one to fall back to."""
    return max(2, cfg.loop.keep_checkpoints)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg, given = raw_config(args)
        fitted, dataset = fit_data(cfg, given)
        cfg = fitted.cfg
        dataset = preflight(cfg, args.allow_config_change, dataset)
    except (ConfigError, CheckpointError, storage.StorageError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    resolved = cfg.resolved()
    print("schedule:\n" + "\n".join(f"  {line}" for line in schedule_lines(fitted, len(dataset))), flush=True)
    # the preset's values are expanded into `model`; its name is shown for the record (applying it again under the
    # expanded `model` changes nothing, so this text used as --config gives the same run)
    shown = {**resolved.model_dump(mode="json"), "preset": cfg.preset}
    print("resolved config:\n" + yaml.safe_dump(shown, sort_keys=False), flush=True)
    if args.dry_run:
        print("dry run: config and dataset are valid; nothing was started")
        return 0
    from ray.train import TrainingFailedError

    from gansvc.train.failures import describe, is_deterministic
    from gansvc.train.loop import DIVERGED_FILE

    run = storage.parse_uri(run_uri(cfg))
    segment = record_segment(resolved, args.allow_config_change)
    if segment["allowed_by_flag"]:
        print("config changed on resume (--allow-config-change), recorded in history: "
              + "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in segment["changed"].items()), flush=True)
    storage.delete(run.join(DIVERGED_FILE).uri())  # a new attempt (e.g. with a lower learning rate)
    try:
        result = fit(resolved, dataset.manifest)
    except RayUnavailable as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except TrainingFailedError as err:  # Ray raises a run's final error from fit()
        stopped = "stopped at once (a config, data or code error repeats on every restart)" if any(
            is_deterministic(e) for e in getattr(err, "worker_failures", {}).values()) else "failed"
        print(f"error: training {stopped}:\n{describe(err)}", file=sys.stderr)
        return 1
    metrics = result.metrics or {}
    if result.error is not None:
        print(f"error: training failed: {result.error}", file=sys.stderr)
        return 1
    if storage.exists(run.join(DIVERGED_FILE).uri()):
        print(f"error: {storage.read_json(run.join(DIVERGED_FILE).uri())['error']}", file=sys.stderr)
        return 1
    uri = run.uri()
    ckpt = checkpoint_uri(run, result.checkpoint.path) if result.checkpoint is not None else None
    print(json.dumps({"run": uri, "step": metrics.get("step"), "checkpoint": ckpt,
                      "samples": storage.parse_uri(uri).join("samples").uri()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
