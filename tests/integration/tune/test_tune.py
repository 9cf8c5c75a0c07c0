"""`python -m gansvc.tune` on a real Ray instance: tiny sweeps through the CLI, ASHA, failures, promote, resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from gansvc import local, storage
from gansvc.registry import load_model

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def shapes(stack: local.StackState, synth_put: Callable[..., str]) -> str:
    return synth_put("shapes", f"s3://{stack.bucket}/tune-data/shapes", count=64, size=16, seed=0, test_count=8)


def _spec(tmp_path: Path, dataset: str, **over: object) -> Path:
    spec: dict[str, object] = {
        "family": "dcgan",
        "dataset": dataset,
        "base": {
            "preset": "smoke",
            "model": {"loss": "mse", "optimizer": "sgd", "lr_g": 2.0e-4},
            "loop": {"max_steps": 6, "batch_size": 8, "eval_every": 2, "checkpoint_every": 2, "log_every": 2},
            "metrics": {"samples": 32, "reference_samples": 64},
        },
        # SGD with lr_d = 1 on a least-squares D diverges within 3 steps (checked by hand): that trial must fail
        "space": {"model.lr_d": {"grid": [2.0e-4, 5.0e-4, 1.0]}},
        "metric": "swd",
        "scheduler": {"type": "none"},
        "max_concurrent": 2,
    }
    spec.update(over)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _tune(*args: str, wait: bool = True) -> subprocess.CompletedProcess[str] | subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "gansvc.tune", *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if not wait:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env, cwd=REPO)


def test_invalid_axis_is_rejected_before_any_trial(
    ray_stack: local.StackState, shapes: str, tmp_path: Path, s3_prefix: str
) -> None:
    spec = _spec(tmp_path, shapes, space={"model.lr_g": {"grid": [1.0e-4, -1.0]}})
    out = _tune(str(spec), "--storage", f"{s3_prefix}/sweeps", "--name", "bad")
    assert out.returncode == 2 and "space.model.lr_g = -1.0" in out.stderr and "model.lr_g" in out.stderr
    assert not list(storage.list_objects(f"{s3_prefix}/sweeps/bad")), "nothing started"
    valid = _spec(tmp_path, shapes)
    out = _tune(
        str(valid), "--storage", f"{s3_prefix}/sweeps", "--set", "space.model.kernel_size.choice=[4]", "--dry-run"
    )
    assert out.returncode == 2 and "space.model.kernel_size" in out.stderr
    out = _tune(str(valid), "--storage", f"{s3_prefix}/sweeps", "--dry-run")
    assert out.returncode == 0 and out.stdout.count("trial ") == 3


def test_sweep_results_failures_and_promote(
    ray_stack: local.StackState, shapes: str, tmp_path: Path, s3_prefix: str
) -> None:
    out = _tune(
        str(_spec(tmp_path, shapes)), "--storage", f"{s3_prefix}/sweeps", "--name", "s1", "--promote", "best-dcgan"
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    rows = storage.read_json(f"{s3_prefix}/sweeps/s1/results.json")
    assert len(rows) == 3
    failed = [r for r in rows if r["status"].startswith("failed")]
    assert len(failed) == 1 and failed[0]["config.model.lr_d"] == 1.0 and "non-finite" in failed[0]["status"]
    ok = [r for r in rows if r["status"] == "completed"]
    assert len(ok) == 2 and rows[:2] == sorted(ok, key=lambda r: r["best"]), "sorted by the metric, failures last"
    assert all(r["checkpoint"] and r["full_config"]["model"]["lr_d"] == r["config.model.lr_d"] for r in ok)
    assert all(r["checkpoint"] == f"{r['run']}/best" for r in ok), "the best evaluation, not the last checkpoint"
    csv_text = storage.read_bytes(f"{s3_prefix}/sweeps/s1/results.csv").decode()
    assert csv_text.count("\n") == 4
    assert "promoted trial" in out.stdout
    entry, model = load_model("best-dcgan")  # the default registry the CLI promoted into ($GANSVC_STORAGE/registry)
    assert entry["family"] == "dcgan" and model.spec.name == "dcgan"


def test_every_trial_failing_exits_nonzero(
    ray_stack: local.StackState, shapes: str, tmp_path: Path, s3_prefix: str
) -> None:
    spec = _spec(tmp_path, shapes, space={"model.lr_d": {"grid": [1.0]}})
    out = _tune(str(spec), "--storage", f"{s3_prefix}/sweeps", "--name", "allfail")
    assert out.returncode == 1 and "every trial failed" in out.stderr


def test_asha_stops_a_trial_early(ray_stack: local.StackState, shapes: str, tmp_path: Path, s3_prefix: str) -> None:
    """Built to make ASHA stop: trials run one at a time in grid order and the metric is the reported learning rate
    (lower is better), so every trial after the first is below the first rung's cutoff."""
    spec = _spec(
        tmp_path,
        shapes,
        space={"model.lr_g": {"grid": [1.0e-4, 4.0e-4, 8.0e-4]}},
        metric="lr/G",
        scheduler={"type": "asha", "grace_period": 2, "reduction_factor": 2},
        max_concurrent=1,
    )
    out = _tune(str(spec), "--storage", f"{s3_prefix}/sweeps", "--name", "asha")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    rows = storage.read_json(f"{s3_prefix}/sweeps/asha/results.json")
    assert [r["config.model.lr_g"] for r in rows] == [1.0e-4, 4.0e-4, 8.0e-4]
    assert rows[0]["status"] == "completed"
    stopped = [r for r in rows if r["status"] == "stopped early"]
    assert stopped and all(r["step"] < 6 and r["final"] is not None for r in stopped), rows


def test_resume_skips_finished_trials(ray_stack: local.StackState, shapes: str, tmp_path: Path, s3_prefix: str) -> None:
    spec = _spec(tmp_path, shapes, space={"model.lr_d": {"grid": [2.0e-4, 5.0e-4]}}, max_concurrent=1)
    proc = _tune(str(spec), "--storage", f"{s3_prefix}/sweeps", "--name", "res", wait=False)
    trials = f"{s3_prefix}/sweeps/res/trials"
    deadline = time.monotonic() + 600
    first: str | None = None
    while first is None:  # trials run one at a time: the second starts once Tune has finished the first
        assert time.monotonic() < deadline and proc.poll() is None, "first trial did not finish"
        objects = [o.rel for o in storage.list_objects(trials)]
        done = [r for r in objects if r.endswith("checkpoint-00000006/meta.json")]
        started = {r.split("/")[0] for r in objects if r.endswith("gansvc-config.json")}
        first = done[0].split("/")[0] if done and len(started) == 2 else None
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=300)
    # Tune's first Ctrl-C stops the trials and returns them all TERMINATED: the driver must still see the
    # interruption (from the state Tune saved), exit 130 and say how to resume
    assert proc.returncode == 130 and "interrupted: re-run the same command to resume" in out, out[-3000:]
    statuses = {r["trial"]: r["status"] for r in storage.read_json(f"{s3_prefix}/sweeps/res/results.json")}
    assert statuses[first] == "completed" and sorted(statuses.values()) == ["completed", "interrupted"], statuses
    meta_key = f"{trials}/{first}/checkpoint-00000006/meta.json"
    before = storage.read_json(meta_key)["created"]
    out = _tune(str(spec), "--storage", f"{s3_prefix}/sweeps", "--name", "res")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "resuming sweep res" in out.stdout
    assert storage.read_json(meta_key)["created"] == before, "the finished trial was not run again"
    rows = storage.read_json(f"{s3_prefix}/sweeps/res/results.json")
    assert len(rows) == 2 and all(r["status"] == "completed" for r in rows)


def test_pbt_runs_trials_in_segments(ray_stack: local.StackState, shapes: str, tmp_path: Path, s3_prefix: str) -> None:
    """PBT: each trial runs in segments of perturbation_interval steps, each continuing from a checkpoint."""
    spec = _spec(
        tmp_path,
        shapes,
        space={"model.lr_g": {"loguniform": [1.0e-4, 1.0e-3]}},
        scheduler={"type": "pbt", "perturbation_interval": 3},
        num_samples=2,
    )
    out = _tune(str(spec), "--storage", f"{s3_prefix}/sweeps", "--name", "pbt")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    rows = storage.read_json(f"{s3_prefix}/sweeps/pbt/results.json")
    assert len(rows) == 2 and all(r["status"] == "completed" and r["step"] == 6 for r in rows)
    runs = {o.rel.split("/")[0] for o in storage.list_objects(f"{s3_prefix}/sweeps/pbt/trials")}
    for row in rows:
        segments = sorted(r for r in runs if r.startswith(row["trial"]))
        starts = {int(r.split("-from")[1].split("-")[0]) for r in segments}
        # segments start at multiples of the interval (an exploit restarts a trial from a checkpoint at a boundary,
        # which adds a segment); every trial ran 0-3 and continued from step 3
        assert starts == {0, 3}, segments
        assert row["run"].split("/")[-1] in segments and row["checkpoint"]
        assert storage.exists(f"{row['run']}/checkpoint-00000006/model.pt")


def test_storage_names_where_sweeps_go_and_old_sweeps_are_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """issue 16 #9: `--storage` means where sweeps go (the sweep is STORAGE/NAME), as gansvc.train's names where runs
    go; the default is unchanged ($GANSVC_STORAGE/sweeps/NAME). A sweep that the old meaning put in
    STORAGE/sweeps/NAME is resumed there, with a note saying what to pass from now on."""
    from gansvc.tune.__main__ import locate_sweep, sweep_uri

    monkeypatch.setenv("GANSVC_STORAGE", "s3://bucket/root")
    assert sweep_uri(None, "abl") == "s3://bucket/root/sweeps/abl"
    assert sweep_uri("s3://bucket/mine", "abl") == "s3://bucket/mine/abl"
    root = str(tmp_path)
    assert locate_sweep(root, "abl") == (f"{root}/abl", None), "a new sweep goes in STORAGE/NAME"
    old_state = tmp_path / "sweeps" / "abl" / "tune" / "experiment_state.json"
    old_state.parent.mkdir(parents=True)
    old_state.write_text("{}")
    uri, note = locate_sweep(root, "abl")
    assert uri == f"{root}/sweeps/abl" and note and f"--storage {root}/sweeps" in note
    new_state = tmp_path / "abl" / "tune" / "experiment_state.json"
    new_state.parent.mkdir(parents=True)
    new_state.write_text("{}")
    assert locate_sweep(root, "abl") == (f"{root}/abl", None), "a sweep in STORAGE/NAME wins"
