"""Training faults survived (issue 13, fault-injection suite): real Ray jobs, the real S3 server, real processes.

- A training job stopped with `ray job stop` and submitted again with the same name resumes at the last checkpoint.
- The newest checkpoint truncated in storage: the resume falls back to the previous good one, with a message.
Each case prints its measured recovery time (resubmission -> first new training step); the README's Reliability table
quotes them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import torch

from gansvc import local, storage
from gansvc.checkpoint import TRAIN_FILE, _load_bytes

pytestmark = pytest.mark.slow  # each case runs two or three Ray Train runs (minutes on 2 cores)

STEP_LINE = re.compile(r"\[gansvc\] step (\d+)/")
RESUMED_LINE = re.compile(r"\[gansvc\] resumed at step (\d+)")


@pytest.fixture(scope="module")
def shapes(stack: local.StackState, synth_put: Callable[..., str]) -> str:
    return synth_put("shapes", f"s3://{stack.bucket}/faults-train/shapes", count=64, size=16, seed=0, test_count=8)


def _train_args(shapes: str, runs: str, name: str, *extra: str) -> list[str]:
    return [
        "dcgan",
        "--dataset",
        shapes,
        "--storage",
        runs,
        "--name",
        name,
        "--preset",
        "smoke",
        "--batch-size",
        "8",
        *extra,
    ]


def _checkpoint_steps(run: str) -> list[int]:
    """Steps of the run's checkpoints whose meta.json is written (complete uploads)."""
    return sorted(
        int(o.rel.split("/")[0].split("-")[1])
        for o in storage.list_objects(run)
        if o.rel.startswith("checkpoint-") and o.rel.endswith("/meta.json")
    )


def _wait(predicate: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def _train_state(run: str, directory: str) -> dict[str, Any]:
    uri = f"{run}/{directory}/{TRAIN_FILE}"
    return _load_bytes(storage.read_bytes(uri), uri)


@pytest.mark.timeout(600)
def test_job_stopped_and_resubmitted_resumes_at_last_checkpoint(
    ray_stack: local.StackState, shapes: str, s3_prefix: str
) -> None:
    """`ray job stop` in the middle of a run, then the same submission again: it resumes at the last checkpoint."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(ray_stack.dashboard_url)
    run = f"{s3_prefix}/stopped"
    entrypoint = " ".join(
        [
            "python",
            "-m",
            "gansvc.train",
            *_train_args(
                shapes,
                s3_prefix,
                "stopped",
                "--max-steps",
                "5000",
                "--checkpoint-every",
                "20",
                "--eval-every",
                "100000",
                "--log-every",
                "1",
            ),
        ]
    )
    first = client.submit_job(entrypoint=entrypoint)
    _wait(
        lambda: len(_checkpoint_steps(run)) >= 3 or client.get_job_status(first).is_terminal(), 300, "three checkpoints"
    )
    assert not client.get_job_status(first).is_terminal(), client.get_job_logs(first)[-3000:]
    client.stop_job(first)
    _wait(lambda: client.get_job_status(first).is_terminal(), 120, "the stopped job to end")
    assert client.get_job_status(first) == JobStatus.STOPPED
    last = _checkpoint_steps(run)[-1]
    # what Ray Train had committed when the job died (its checkpoint manager's snapshot in the run folder, Ray 2.60
    # ray/train/v2/_internal/execution/checkpoint/checkpoint_manager.py): the checkpoint a resume must start from
    snapshot = json.loads(storage.read_bytes(f"{run}/checkpoint_manager_snapshot.json"))
    committed = int(snapshot["latest_checkpoint_result"]["checkpoint_dir_name"].split("-")[1])

    submitted = time.monotonic()
    second = client.submit_job(entrypoint=entrypoint)
    resumed_at: dict[str, float] = {}

    def progressed() -> bool:
        logs = client.get_job_logs(second)
        if "resumed" not in resumed_at and (m := RESUMED_LINE.search(logs)):
            resumed_at["resumed"], resumed_at["step"] = time.monotonic() - submitted, int(m.group(1))
        if "resumed" in resumed_at and any(int(s) > resumed_at["step"] for s in STEP_LINE.findall(logs)):
            resumed_at["first_step"] = time.monotonic() - submitted
            return True
        assert not client.get_job_status(second).is_terminal(), logs[-3000:]
        return False

    _wait(progressed, 300, "the resubmitted job's first new step")
    client.stop_job(second)
    _wait(lambda: client.get_job_status(second).is_terminal(), 120, "the second job to end")
    step = int(resumed_at["step"])
    # the last committed checkpoint (the newest in storage, or the one before when the stop came between an upload
    # and its commit)
    assert step > 0 and step == committed and committed in (last, last - 20), (step, committed, last)
    starts = storage.read_json(f"{run}/starts.json")
    assert starts[0]["source"] == "fresh" and starts[-1] == {**starts[-1], "step": step, "source": "resumed"}
    print(
        f"\n[recovery] job stop + resubmit: resumed at step {step} (committed {committed}, newest in storage "
        f"{last}); restore done "
        f"{resumed_at['resumed']:.1f}s and first new step {resumed_at['first_step']:.1f}s after the resubmission"
    )


@pytest.mark.timeout(900)
def test_corrupted_newest_checkpoint_falls_back_to_the_previous_one(
    ray_stack: local.StackState, shapes: str, s3_prefix: str
) -> None:
    """The newest checkpoint's train_state.pt truncated in S3: the resumed run says so, continues from the previous
    checkpoint and ends with exactly the weights of an uninterrupted run."""
    from gansvc.train.__main__ import main as train_main

    # evaluations at every checkpoint (the resume restores the evaluator's history and best), on few samples: their
    # count changes no training step (evaluation draws from its own seeded generator, gansvc/train/quality.py) and the
    # three runs use the same
    common = (
        "--checkpoint-every",
        "10",
        "--eval-every",
        "10",
        "--log-every",
        "1",
        "--set",
        "metrics.samples=32",
        "--set",
        "metrics.reference_samples=64",
    )
    run = f"{s3_prefix}/bad"
    assert train_main(_train_args(shapes, s3_prefix, "bad", "--max-steps", "20", *common)) == 0
    bad = f"{run}/checkpoint-00000020/{TRAIN_FILE}"
    data = storage.read_bytes(bad)
    storage.write_bytes(bad, data[: len(data) // 2])  # truncated in storage

    lines: list[tuple[float, str]] = []
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gansvc.train", *_train_args(shapes, s3_prefix, "bad", "--max-steps", "30", *common)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(os.environ),
    )
    reader = threading.Thread(
        target=lambda: [lines.append((time.monotonic() - started, line)) for line in proc.stdout], daemon=True
    )  # type: ignore[union-attr]
    reader.start()
    try:
        code = proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(timeout=10)
    out = "".join(line for _, line in lines)
    assert code == 0, out[-4000:]
    assert f"checkpoint {run}/checkpoint-00000020 is damaged" in out and "train_state.pt does not match" in out, out[
        -4000:
    ]
    assert "resumed at step 10" in out and "previous good checkpoint checkpoint-00000010" in out
    starts = storage.read_json(f"{run}/starts.json")
    assert starts[-1]["step"] == 10 and starts[-1]["checkpoint"] == "checkpoint-00000010"
    redone = [
        o.rel.split("/")[0] for o in storage.list_objects(run) if re.match(r"checkpoint-00000020-\w+/meta.json", o.rel)
    ]
    assert len(redone) == 1, "step 20 is checkpointed again beside the damaged one, under a new name"
    first_new = next(t for t, line in lines if (m := STEP_LINE.search(line)) and int(m.group(1)) > 10)

    assert train_main(_train_args(shapes, s3_prefix, "good", "--max-steps", "30", *common)) == 0
    resumed, reference = (
        _train_state(run, "checkpoint-00000030"),
        _train_state(f"{s3_prefix}/good", "checkpoint-00000030"),
    )
    for net, sd in reference["nets"].items():
        for key, value in sd.items():
            assert torch.equal(value, resumed["nets"][net][key]), f"{net}.{key} differs after the fall back"
    print(
        f"\n[recovery] truncated newest checkpoint: fell back to step 10; first new step {first_new:.1f}s after "
        "the resubmission (a new driver process)"
    )
