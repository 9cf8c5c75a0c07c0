"""Tune faults survived (issue 13, fault-injection suite): a real sweep driver, real Ray Tune and Train, real S3.

A sweep of 4 trials (2 at a time) is interrupted with SIGINT to the driver once a trial has finished and a third has
started; the driver must exit cleanly (code 130) saying how to resume. The same command run again must complete the
sweep without running the finished trials again (their run folders are untouched: no new worker-group start, the
same final checkpoint), continuing the interrupted ones from their last checkpoint. Prints the measured figures
(SIGINT -> driver exit; re-run -> first resumed training start; re-run -> sweep complete) for the README's
Reliability table.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from gansvc import local, storage

REPO = Path(__file__).resolve().parents[3]
MAX_STEPS = 4
LR_D = [1.0e-4, 2.0e-4, 3.0e-4, 4.0e-4]


@pytest.fixture(scope="module")
def shapes(stack: local.StackState, synth_put: Callable[..., str]) -> str:
    return synth_put("shapes", f"s3://{stack.bucket}/faults-tune/shapes", count=64, size=16, seed=0, test_count=8)


def _spec(tmp_path: Path, dataset: str) -> Path:
    spec = {
        "family": "dcgan",
        "dataset": dataset,
        "base": {
            "preset": "smoke",
            "model": {"loss": "mse", "optimizer": "sgd"},
            "loop": {"max_steps": MAX_STEPS, "batch_size": 8, "eval_every": 2, "checkpoint_every": 2, "log_every": 2},
            "metrics": {"samples": 32, "reference_samples": 64},
        },
        "space": {"model.lr_d": {"grid": LR_D}},
        "metric": "swd",
        "scheduler": {"type": "none"},
        "max_concurrent": 2,
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _command(spec: Path, runs: str) -> list[str]:
    return [sys.executable, "-m", "gansvc.tune", str(spec), "--storage", f"{runs}/sweeps", "--name", "intr"]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def _runs(trials: str) -> dict[str, dict[str, Any]]:
    """Per trial run folder: whether its configuration is written (started) and its final checkpoint (finished)."""
    out: dict[str, dict[str, Any]] = {}
    for o in storage.list_objects(trials):
        run, _, rel = o.rel.partition("/")
        entry = out.setdefault(run, {"started": False, "final": False})
        entry["started"] |= rel == "gansvc-config.json"
        entry["final"] |= rel == f"checkpoint-{MAX_STEPS:08d}/meta.json"
    return out


def _starts(trials: str, run: str) -> list[dict[str, Any]]:
    uri = f"{trials}/{run}/starts.json"
    return storage.read_json(uri) if storage.exists(uri) else []


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_interrupted_sweep_resumes_without_rerunning_finished_trials(
    ray_stack: local.StackState,
    shapes: str,
    tmp_path: Path,
    s3_prefix: str,
) -> None:
    spec = _spec(tmp_path, shapes)
    trials = f"{s3_prefix}/sweeps/intr/trials"
    driver = subprocess.Popen(
        _command(spec, s3_prefix), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(), cwd=REPO
    )
    try:
        deadline = time.monotonic() + 400
        while True:  # 2 at a time: a third trial starts once Tune has finished one of the first two
            assert driver.poll() is None, "the sweep ended early:\n" + driver.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "no trial finished in time"
            runs = _runs(trials)
            if any(r["final"] for r in runs.values()) and sum(r["started"] for r in runs.values()) >= 3:
                break
            time.sleep(0.5)
        sigint_at = time.monotonic()
        driver.send_signal(signal.SIGINT)
        out, _ = driver.communicate(timeout=240)
        exit_s = time.monotonic() - sigint_at
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.communicate()
    assert driver.returncode == 130, out[-4000:]
    assert "interrupted: re-run the same command to resume" in out, out[-3000:]

    first = storage.read_json(f"{s3_prefix}/sweeps/intr/results.json")  # written by the interrupted driver too
    finished = {r["trial"] for r in first if r["status"] == "completed"}
    interrupted = {r["trial"] for r in first if r["status"] == "interrupted"}
    # Tune creates trials as slots free up: the 4th may not exist yet
    assert finished and interrupted and len(first) in (3, 4), first
    kept = {
        t: (
            _starts(trials, t),
            storage.read_json(f"{trials}/{t}/checkpoint-{MAX_STEPS:08d}/meta.json"),
            sorted(o.rel for o in storage.list_objects(f"{trials}/{t}")),
        )
        for t in finished
    }
    # the step each interrupted trial can continue from: its newest complete checkpoint (0: none yet)
    saved = {
        t: max(
            [
                _step(o.rel)
                for o in storage.list_objects(f"{trials}/{t}")
                if o.rel.startswith("checkpoint-") and o.rel.endswith("/meta.json")
            ],
            default=0,
        )
        for t in interrupted
    }
    starts_before = {t: _starts(trials, t) for t in interrupted}

    rerun_wall, rerun_at = time.time(), time.monotonic()
    again = subprocess.run(_command(spec, s3_prefix), capture_output=True, text=True, timeout=480, env=_env(), cwd=REPO)
    recovery_s = time.monotonic() - rerun_at
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "resuming sweep intr" in again.stdout

    rows = storage.read_json(f"{s3_prefix}/sweeps/intr/results.json")
    assert len(rows) == 4 and all(r["status"] == "completed" for r in rows), rows
    assert {r["trial"] for r in first} <= {r["trial"] for r in rows}, "the same trials, under the same ids"
    assert sorted(r["config.model.lr_d"] for r in rows) == LR_D
    for t, (starts, meta, objects) in kept.items():  # finished trials: not one more start, not one new object
        assert _starts(trials, t) == starts, f"finished trial {t} was run again"
        assert storage.read_json(f"{trials}/{t}/checkpoint-{MAX_STEPS:08d}/meta.json") == meta
        assert sorted(o.rel for o in storage.list_objects(f"{trials}/{t}")) == objects
    resumed = []
    for t in interrupted:  # ran once more, from no later than its newest checkpoint (Ray's latest may lag by one)
        starts = _starts(trials, t)
        assert starts[:-1] == starts_before[t] and starts[-1]["step"] <= saved[t], (t, saved[t], starts)
        assert (starts[-1]["source"] == "resumed") == (starts[-1]["step"] > 0), starts
        resumed.append(_start_time(starts[-1]) - rerun_wall)
    print(
        f"\n[faults] tune SIGINT: driver exited {exit_s:.1f} s after SIGINT (code 130); the re-run started the "
        f"first interrupted trial again after {min(resumed):.0f} s and completed the sweep in {recovery_s:.1f} s; "
        f"{len(finished)} finished trial(s) kept as they were, {len(interrupted)} run again from steps "
        f"{sorted(_starts(trials, t)[-1]['step'] for t in interrupted)}"
    )


def _step(rel: str) -> int:
    return int(rel.split("/")[0].split("-")[1][:8])


def _start_time(start: dict[str, Any]) -> float:
    import datetime as dt

    return dt.datetime.fromisoformat(start["time"]).timestamp()
