"""The sweep CLI: `python -m gansvc.tune tune/SWEEP.yaml [--storage SWEEPS] [--name NAME] ...` (see gansvc.tune).

`--storage` names where sweeps go, as gansvc.train's names where runs go: a sweep is the folder `--storage`/NAME
(default `$GANSVC_STORAGE/sweeps/NAME`, the same place as before). Before, `--storage` named the folder above
`sweeps/`: a sweep saved there (`--storage`/sweeps/NAME) is still found and resumed, with a note.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from gansvc import storage
from gansvc.strict import ConfigError
from gansvc.tune import __doc__ as package_doc
from gansvc.tune.results import INTERRUPTED
from gansvc.tune.spec import SweepError, SweepSpec, base_config, expand_trials, load_spec, validate

# Only the spec models (pydantic, yaml) are imported here: the experiment config and families import torch, the sweep
# imports Ray (about 3 s), so they are imported once the arguments are valid and `--help` answers at once.


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m gansvc.tune", description=(package_doc or "").strip().splitlines()[0])
    p.add_argument("spec", help="sweep spec YAML (e.g. tune/dcgan-ablation.yaml)")
    p.add_argument("--dataset", help="override the spec's dataset")
    p.add_argument("--num-samples", type=int)
    p.add_argument("--max-concurrent", type=int)
    p.add_argument("--max-steps", type=int, help="steps per trial (overrides base loop.max_steps)")
    p.add_argument("--storage", help="where sweeps go: the sweep is STORAGE/NAME (default $GANSVC_STORAGE/sweeps)")
    p.add_argument("--name", help="sweep name; the same name resumes (default: the spec's file name)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any spec field, e.g. --set base.loop.batch_size=16 --set scheduler.type=none",
    )
    p.add_argument("--dry-run", action="store_true", help="validate and print the expanded trials; start nothing")
    p.add_argument("--promote", metavar="NAME", help="register the best trial's best checkpoint under NAME")
    return p


def sweeps_root() -> str:
    """Where sweeps go by default: $GANSVC_STORAGE/sweeps, else ~/gansvc-runs/sweeps."""
    root = os.environ.get("GANSVC_STORAGE") or str(Path.home() / "gansvc-runs")
    return storage.parse_uri(root).join("sweeps").uri()


def sweep_uri(storage_arg: str | None, name: str) -> str:
    """The sweep's folder: STORAGE/NAME (`--storage`, default `sweeps_root()`)."""
    return storage.parse_uri(storage_arg or sweeps_root()).join(name).uri()


def locate_sweep(storage_arg: str | None, name: str) -> tuple[str, str | None]:
    """(the sweep's folder, a note for the user or None). A sweep that `--storage STORAGE` put in
    STORAGE/sweeps/NAME (its meaning before it named the sweeps folder itself, as gansvc.train's names the runs
    folder) is resumed there when STORAGE/NAME holds no sweep."""
    uri = sweep_uri(storage_arg, name)
    if storage_arg is None or _has_tune_state(uri):
        return uri, None
    old = storage.parse_uri(storage_arg).join("sweeps", name).uri()
    if not _has_tune_state(old):
        return uri, None
    return old, (
        f"note: resuming sweep {name} in {old}: --storage now names the folder the sweep itself goes in "
        f"(STORAGE/NAME, as gansvc.train's --storage names the runs folder); this sweep was started when it "
        f"named the folder above sweeps/. Pass --storage {storage.parse_uri(storage_arg).join('sweeps').uri()}"
        " from now on"
    )


def _has_tune_state(sweep: str) -> bool:
    return next(iter(storage.list_objects(storage.parse_uri(sweep).join("tune").uri())), None) is not None


def spec_sets(args: argparse.Namespace) -> list[str]:
    """--set items, with the flags that override spec fields (--dataset, --num-samples, --max-concurrent) added."""
    sets = list(args.set)
    for flag, key in (("dataset", "dataset"), ("num_samples", "num_samples"), ("max_concurrent", "max_concurrent")):
        if getattr(args, flag) is not None:
            sets.append(f"{key}={getattr(args, flag)}")
    return sets


def dry_run(spec: SweepSpec, name: str, uri: str, max_steps: int | None) -> int:
    cfg = validate(spec, base_config(spec, uri, max_steps))
    trials = expand_trials(spec)
    print(
        f"sweep {name}: family {spec.family}, dataset {cfg.data.uri}, scheduler {spec.scheduler.type}, "
        f"metric {spec.metric} ({spec.mode or 'its own direction'}), {len(trials)} trial(s), "
        f"{spec.max_concurrent} at a time"
    )
    for i, t in enumerate(trials):
        print(f"  trial {i:3d}: " + ", ".join(f"{k}={v}" for k, v in t.items()))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    name = args.name or os.path.splitext(os.path.basename(args.spec))[0]
    try:
        spec = load_spec(args.spec, spec_sets(args))
        if args.dry_run:
            return dry_run(spec, name, sweep_uri(args.storage, name), args.max_steps)
        uri, note = locate_sweep(args.storage, name)
        if note:
            print(note, file=sys.stderr, flush=True)
        from gansvc.tune.sweep import run_sweep  # Ray and torch: only when a sweep starts

        return run_sweep(spec, name, uri, args.max_steps, args.promote)
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
