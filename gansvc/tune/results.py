"""A sweep's results: each trial's state, run folder, best and final metric and checkpoint, as a sorted table,
`SWEEP/results.csv` and `SWEEP/results.json` (with each trial's full resolved config)."""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import os
import re
import sys
from typing import Any

from gansvc import storage
from gansvc.paths import RUN_CONFIG_FILE
from gansvc.tune.spec import META_KEY

UNFINISHED = ("PENDING", "RUNNING", "PAUSED")  # Tune trial states a re-run of the sweep resumes
# Tune's own message suggests a Python call (Tuner.restore); with this CLI the same command resumes (same --name)
INTERRUPTED = (
    "interrupted: re-run the same command to resume (finished trials are kept and not run again; "
    "interrupted ones continue from their last checkpoint)"
)


def trial_statuses(grid: Any, tune_path: str, fs: Any) -> dict[str, str]:
    """Tune's state of each trial: TERMINATED or ERROR (kept by a re-run), or one of UNFINISHED (resumed by one).

    After the first Ctrl-C, `Tuner.fit()` stops the running trials and returns them all TERMINATED, so its result
    cannot tell an interrupted trial from a finished one (checked with Ray 2.60). The state Tune saved to storage
    just before that stop can: it is read back here, and wins over the in-memory one."""
    from ray import tune  # Ray: only once a sweep ran

    states: dict[str, str] = {}
    with contextlib.suppress(AttributeError):  # a ResultGrid without its analysis
        states.update({str(t.trial_id): str(t.status) for t in grid._experiment_analysis.trials})
    quiet = logging.getLogger("ray.tune.analysis.experiment_analysis")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # it warns about trials that never reported (not started)
    try:
        saved = tune.ExperimentAnalysis(tune_path, storage_filesystem=fs)
        states.update({str(t.trial_id): str(t.status) for t in saved.trials})
    except Exception as err:  # noqa: BLE001 - no saved state: keep what fit() said, and say so
        print(
            f"warning: could not read the sweep's saved state ({type(err).__name__}: {err}); trial states "
            "come from this run only",
            file=sys.stderr,
        )
    finally:
        quiet.setLevel(level)
    return states


def trial_id(result: Any) -> str:
    """Tune's trial id ("ab12c_00003"), from the result or its directory name (failed trials may have no result)."""
    if (result.metrics or {}).get("trial_id"):
        return str(result.metrics["trial_id"])
    found = re.search(r"(?:^|_)([0-9a-f]{5}_\d{5})(?:_|$)", os.path.basename(str(result.path).rstrip("/")))
    return found.group(1) if found else ""


def trial_runs(grid: Any, trials_uri: str) -> dict[str, str]:
    """Trial id -> the URI of its run folder in SWEEP/trials: the trial's run (PBT: of its segment runs) that got
    furthest; ties go to the latest written."""
    trials_root = storage.parse_uri(trials_uri)
    objects = list(storage.list_objects(trials_root.uri()))
    runs: dict[str, str] = {}
    for result in grid:
        tid = trial_id(result)
        reached: dict[str, tuple[int, str]] = {}
        for o in objects:
            parts = o.rel.split("/")
            if (
                parts[0].startswith(tid)
                and len(parts) == 3
                and parts[1].startswith("checkpoint-")
                and parts[2] == "meta.json"
            ):
                meta = storage.read_json(trials_root.join(o.rel).uri())
                reached[parts[0]] = max(reached.get(parts[0], (-1, "")), (int(meta["step"]), meta["created"]))
        if reached:
            runs[tid] = trials_root.join(max(reached, key=lambda r: reached[r])).uri()
    return runs


def collect(
    grid: Any,
    metric: str,
    mode: str,
    max_steps: int,
    axes: list[str],
    runs: dict[str, str],
    statuses: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """One row per trial, sorted by best metric (failed trials last). `runs`: each trial's run folder
    (`trial_runs`); `statuses`: Tune's trial states; a trial Tune had not finished when the sweep was interrupted is
    "interrupted" whatever step it reached."""
    rows: list[dict[str, Any]] = []
    for result in grid:
        config = {k: v for k, v in (result.config or {}).items() if k != META_KEY}
        df = result.metrics_dataframe
        last = result.metrics or {}
        values = df[metric].dropna().tolist() if df is not None and metric in df else []
        best = (min(values) if mode == "min" else max(values)) if values else None
        step = int(last.get("step", 0) or 0)
        tid = trial_id(result)
        run = (runs.get(tid) or None) if result.path else result.path
        rows.append(
            {
                "trial": tid,
                "status": _status(result, tid, step, max_steps, statuses),
                "step": step,
                "final": values[-1] if values else None,
                "best": best,
                "checkpoint": _checkpoint_uri(run) if run else None,
                "run": run,
                **{f"config.{k}": config.get(k) for k in axes},
            }
        )
    rows.sort(key=lambda r: _rank(r["best"], mode))
    return rows


def _rank(best: float | None, mode: str) -> tuple[bool, float]:
    """The sort key of a row: trials with a metric first, best first."""
    if best is None:
        return True, 0.0
    return False, best if mode == "min" else -best


def _status(result: Any, tid: str, step: int, max_steps: int, statuses: dict[str, str] | None) -> str:
    if result.error is not None:
        return "failed: " + str(result.error).strip().splitlines()[-1][:300]
    if (statuses or {}).get(tid) in UNFINISHED:
        return "interrupted"
    return "stopped early" if step < max_steps else "completed"


def _checkpoint_uri(run: str) -> str | None:
    """The trial's committed best (best/, whatever its model file is called), else its newest checkpoint."""
    from gansvc.checkpoint import BEST_DIR, read_best  # torch

    loc = storage.parse_uri(run)
    if read_best(run) is not None:
        return loc.join(BEST_DIR).uri()
    ckpts = sorted({o.rel.split("/")[0] for o in storage.list_objects(run) if o.rel.startswith("checkpoint-")})
    return loc.join(ckpts[-1]).uri() if ckpts else None


def full_configs(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Trial id -> the resolved config its run stored (trials whose run has none are left out)."""
    configs = {}
    for r in rows:
        uri = storage.parse_uri(r["run"]).join(RUN_CONFIG_FILE).uri() if r["run"] else None
        if uri and storage.exists(uri):
            configs[r["trial"]] = storage.read_json(uri)
    return configs


def write_results(rows: list[dict[str, Any]], sweep_uri: str, configs: dict[str, Any]) -> None:
    loc = storage.parse_uri(sweep_uri)
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    storage.write_bytes(loc.join("results.csv").uri(), buf.getvalue().encode(), "text/csv")
    storage.write_json(loc.join("results.json").uri(), [{**r, "full_config": configs.get(r["trial"])} for r in rows])


def format_table(rows: list[dict[str, Any]], metric: str) -> str:
    if not rows:
        return "(no trials)"
    cols = ["trial", "status", "step", "best", "final"] + [k for k in rows[0] if k.startswith("config.")]
    table = [
        [
            c.replace("config.", "") if c.startswith("config.") else (f"best {metric}" if c == "best" else c)
            for c in cols
        ]
    ]
    for r in rows:
        table.append([f"{r[c]:.4g}" if isinstance(r[c], float) else str(r[c]) for c in cols])
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in table)
