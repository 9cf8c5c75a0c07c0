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
import json
import sys
from typing import TYPE_CHECKING, Any

import yaml

from gansvc import storage
from gansvc.paths import SAMPLES_DIR
from gansvc.strict import ConfigError, parse_set, set_path

if TYPE_CHECKING:
    from gansvc.config import ExperimentConfig

# Only argparse, yaml, gansvc.storage and gansvc.strict (pydantic) are imported here: the config, data and family
# modules import torch and the trainer imports Ray (about 3 s), so they are imported inside main() once the arguments
# are valid, and `--help` or a wrong flag answers at once.


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m gansvc.train",
        description=__doc__.strip().splitlines()[0],
        epilog="Run it with no FAMILY for the list of families. Any config field can be set "
        "with --set, e.g. --set model.lr_g=1e-4 --set data.load_size=36.",
    )
    p.add_argument("family", nargs="?", help="family to train (or `family:` in --config)")
    p.add_argument(
        "--dataset",
        help="dataset root: s3://bucket/prefix or a folder with manifest.json (default: the "
        "family's report dataset, $GANSVC_STORAGE/datasets/NAME)",
    )
    p.add_argument("--config", help="experiment config YAML (local path or s3:// URI); flags override it")
    p.add_argument(
        "--preset",
        help="the whole run: default (the family's default preset), report (the report's "
        "baseline exactly), smoke (tiny nets, tests)",
    )
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
    p.add_argument(
        "--allow-config-change",
        action="store_true",
        help="resume a run with another dataset or family/loop config (recorded in its history)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="validate config and dataset, print the resolved config and schedule (steps, epochs, lr decay), exit",
    )
    return p


FLAG_PATHS = {
    "dataset": "data.uri",
    "preset": "preset",
    "num_workers": "scaling.num_workers",
    "cpus_per_worker": "scaling.cpus_per_worker",
    "storage": "run.storage",
    "name": "run.name",
    "max_steps": "loop.max_steps",
    "epochs": "loop.epochs",
    "batch_size": "loop.batch_size",
    "size": "data.size",
    "checkpoint_every": "loop.checkpoint_every",
    "eval_every": "loop.eval_every",
    "log_every": "loop.log_every",
    "seed": "loop.seed",
    "max_failures": "scaling.max_failures",
}


def config_from_args(args: argparse.Namespace) -> ExperimentConfig:
    """The validated config the flags describe (the family's run preset filled in; not yet fitted to the data)."""
    return raw_config(args)[0]


def raw_config(args: argparse.Namespace) -> tuple[ExperimentConfig, frozenset[str]]:
    from gansvc.config import load_yaml  # imports torch (families): after the arguments parsed
    from gansvc.families import FAMILIES
    from gansvc.train.resolve import config_and_given

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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # torch (config, data, families) and the run module: imported once the arguments are valid
    from gansvc.checkpoint import CheckpointError
    from gansvc.train.resolve import schedule_lines
    from gansvc.train.run import fit_data, preflight

    try:
        cfg, given = raw_config(args)
        fitted, dataset = fit_data(cfg, given)
        cfg = fitted.cfg
        dataset = preflight(cfg, args.allow_config_change, dataset)
    except (ConfigError, CheckpointError, storage.StorageError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("schedule:\n" + "\n".join(f"  {line}" for line in schedule_lines(fitted, len(dataset))), flush=True)
    _print_resolved(cfg)
    if args.dry_run:
        print("dry run: config and dataset are valid; nothing was started")
        return 0
    return _train(cfg.resolved(), dataset.manifest, args.allow_config_change)


def _print_resolved(cfg: ExperimentConfig) -> None:
    # the preset's values are expanded into `model`; its name is shown for the record (applying it again under the
    # expanded `model` changes nothing, so this text used as --config gives the same run)
    shown = {**cfg.resolved().model_dump(mode="json"), "preset": cfg.preset}
    print("resolved config:\n" + yaml.safe_dump(shown, sort_keys=False), flush=True)


def _train(resolved: ExperimentConfig, manifest: Any, allow_config_change: bool) -> int:
    """Record the start in the run's config, train, and print the run's summary; the exit code."""
    from ray.train import TrainingFailedError  # Ray: only once a run starts

    from gansvc.train.failures import describe, is_deterministic
    from gansvc.train.run import (
        RayUnavailable,
        checkpoint_uri,
        clear_diverged,
        diverged_error,
        fit,
        record_segment,
        run_uri,
    )

    run = storage.parse_uri(run_uri(resolved))
    segment = record_segment(resolved, allow_config_change)
    if segment["allowed_by_flag"]:
        print(
            "config changed on resume (--allow-config-change), recorded in history: "
            + "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in segment["changed"].items()),
            flush=True,
        )
    clear_diverged(run.uri())  # a new attempt (e.g. with a lower learning rate)
    try:
        result = fit(resolved, manifest)
    except RayUnavailable as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except TrainingFailedError as err:  # Ray raises a run's final error from fit()
        stopped = (
            "stopped at once (a config, data or code error repeats on every restart)"
            if any(is_deterministic(e) for e in getattr(err, "worker_failures", {}).values())
            else "failed"
        )
        print(f"error: training {stopped}:\n{describe(err)}", file=sys.stderr)
        return 1
    metrics = result.metrics or {}
    if result.error is not None:
        print(f"error: training failed: {result.error}", file=sys.stderr)
        return 1
    diverged = diverged_error(run.uri())
    if diverged is not None:
        print(f"error: {diverged}", file=sys.stderr)
        return 1
    ckpt = checkpoint_uri(run, result.checkpoint.path) if result.checkpoint is not None else None
    print(
        json.dumps(
            {"run": run.uri(), "step": metrics.get("step"), "checkpoint": ckpt, "samples": run.join(SAMPLES_DIR).uri()},
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
