"""Shared helpers of the benchmarks: machine and version facts, result rows, tables, the embedded stack's env.

Every benchmark appends one JSON object per measured cell to `bench/results/<bench>.jsonl`; each row carries the
date, commit, machine (CPU model, cores, GPU), versions and the 1-minute load average, so rows from different runs and
machines can be told apart.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@cache
def machine() -> dict[str, Any]:
    """What ran the benchmark: CPU model and usable cores, GPU, and the versions that matter."""
    import torch

    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    try:
        import ray

        info["ray"] = ray.__version__
    except ImportError:
        pass
    info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE)
    info["commit"] = commit.stdout.strip() or None
    return info


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def append_rows(bench: str, rows: Sequence[dict[str, Any]], meta: dict[str, Any], out: str | None = None) -> Path:
    """Append one JSON line per row (row + meta + machine) to bench/results/<bench>.jsonl (or `out`)."""
    path = Path(out) if out else RESULTS / f"{bench}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        for row in rows:
            f.write(json.dumps({"bench": bench, "date": now(), **machine(), **meta, **row}) + "\n")
    print(f"appended {len(rows)} rows to {path}", file=sys.stderr)
    return path


def print_table(head: Sequence[str], lines: Sequence[Sequence[Any]], title: str = "") -> None:
    """A right-aligned plain-text table on stdout (floats with 3 significant digits unless pre-formatted)."""

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
        return "-" if v is None else str(v)

    cells = [list(map(str, head))] + [[fmt(v) for v in line] for line in lines]
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
    if title:
        print(f"\n## {title}")
    for c in cells:
        print("  ".join(x.rjust(w) for x, w in zip(c, widths, strict=True)))
    sys.stdout.flush()


def use_stack(state_dir: str | None) -> bool:
    """Export an embedded stack's environment (S3 endpoint, keys, RAY_ADDRESS...) before Ray is imported.
    Returns False (with a message) when `state_dir` holds no running stack."""
    if not state_dir:
        return True
    from gansvc import local

    state = local.load_state(Path(state_dir).resolve())
    if state is None:
        print(
            f"no embedded stack in {state_dir}: start one with `python -m gansvc.local --state-dir {state_dir} up`",
            file=sys.stderr,
        )
        return False
    os.environ.update(state.env())
    return True


def ensure_shapes(dest: str, size: int, count: int, test_count: int = 0) -> str:
    """A synthetic `shapes` dataset at `dest` (S3 URI), made by the CLI's own synth + put, so it is built exactly as
    users build it; the CLI skips a set already there."""
    import contextlib

    from gansvc.data.__main__ import main as data_cli

    print(f"dataset {dest} ...", file=sys.stderr, flush=True)
    with contextlib.redirect_stdout(sys.stderr):  # its report is progress, not results
        rc = data_cli(
            [
                "synth",
                "shapes",
                dest,
                "--count",
                str(count),
                "--test-count",
                str(test_count),
                "--size",
                str(size),
                "--quiet",
            ]
        )
    if rc:
        raise RuntimeError(f"creating {dest} failed (exit {rc})")
    return dest


def load_avg() -> float:
    return round(os.getloadavg()[0], 2)
