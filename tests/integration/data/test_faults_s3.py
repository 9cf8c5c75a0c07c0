"""Fault injection: the embedded S3 server stops for 30 s in the middle of a 2-worker training run.

Real processes only: the session's SeaweedFS process is stopped (`local.stop_s3`, by its verified PID) and started
again on the same ports and data (`local.start_s3`), while `python -m gansvc.train` runs 2 DDP workers on the real Ray
head. Expected: the run completes; if its worker group failed it resumed from the last checkpoint written before the
outage (RUN/starts.json says where each attempt began); every checkpoint left in storage is complete and readable.
The measured figures (outage, recovery = S3 back -> a new checkpoint written, restarts) are printed and written to
$GANSVC_FAULT_REPORT (a JSON file) when set, for the README's Reliability table.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from gansvc import local, storage

OUTAGE_S = 30.0
MAX_STEPS = 200
EVERY = 10


def _checkpoint_steps(run: str) -> list[int]:
    """Steps of the complete checkpoints in storage (meta.json is written with the checkpoint's files)."""
    steps = set()
    for obj in storage.list_objects(run):
        head, _, rest = obj.rel.partition("/")
        if head.startswith("checkpoint-") and rest == "meta.json":
            steps.add(int(head.split("-")[1]))
    return sorted(steps)


def _wait(predicate: Any, timeout: float, what: str, alive: threading.Thread) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        assert alive.is_alive(), f"training ended before {what}"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def dataset(stack: local.StackState) -> str:
    from gansvc.data.ingest import put
    from gansvc.data.synth import synth

    uri = f"s3://{stack.bucket}/faults-s3/shapes"
    folder = synth("shapes", count=64, size=16, seed=0, test_count=8)
    try:
        put(str(folder), uri, quiet=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return uri


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_s3_outage_during_two_worker_training(
    ray_stack: local.StackState, stack_dir: Path, dataset: str, s3_prefix: str
) -> None:
    from gansvc.checkpoint import TRAIN_FILE, _load_bytes
    from gansvc.train.__main__ import main as train_main
    from gansvc.train.loop import STARTS_FILE

    run = f"{s3_prefix}/outage"
    args = [
        "dcgan",
        "--dataset",
        dataset,
        "--storage",
        s3_prefix,
        "--name",
        "outage",
        "--preset",
        "smoke",
        "--batch-size",
        "8",
        "--num-workers",
        "2",
        "--max-steps",
        str(MAX_STEPS),
        "--checkpoint-every",
        str(EVERY),
        "--eval-every",
        "1000",
        "--log-every",
        "10",
        "--max-failures",
        "3",
    ]
    result: dict[str, int] = {}
    trainer = threading.Thread(target=lambda: result.setdefault("code", train_main(args)), daemon=True)
    trainer.start()
    figures: dict[str, Any] = {"outage_s": OUTAGE_S}
    restarted = False
    try:
        _wait(lambda: len(_checkpoint_steps(run)) >= 2, 420, "two checkpoints", trainer)
        before = _checkpoint_steps(run)
        figures["last_checkpoint_before"] = before[-1]
        assert local.stop_s3(stack_dir), "the S3 server was running"
        down_at = time.monotonic()
        time.sleep(OUTAGE_S)
        local.start_s3(stack_dir, timeout=120)
        restarted = True
        back_at = time.monotonic()
        figures["s3_restart_s"] = round(back_at - down_at - OUTAGE_S, 1)
        # recovery: S3 back -> training progressing again (a checkpoint newer than any before the outage)
        _wait(lambda: _checkpoint_steps(run)[-1] > before[-1], 420, "a new checkpoint after the outage", trainer)
        figures["recovery_s"] = round(time.monotonic() - back_at, 1)
        trainer.join(timeout=600)
    finally:
        if not restarted:
            local.start_s3(stack_dir, timeout=120)
    assert not trainer.is_alive(), "training did not finish"
    assert result.get("code") == 0, "the run did not complete after the S3 outage"

    steps = _checkpoint_steps(run)
    assert steps[-1] == MAX_STEPS, steps
    for step in steps:  # nothing left half-written: every checkpoint's files are there and load
        for name in (TRAIN_FILE, "model.pt"):
            uri = f"{run}/checkpoint-{step:08d}/{name}"
            assert isinstance(_load_bytes(storage.read_bytes(uri), uri), dict), uri
    starts = storage.read_json(f"{run}/{STARTS_FILE}")
    figures["worker_group_starts"] = [(s["step"], s["source"]) for s in starts]
    figures["restarts"] = len(starts) - 1
    for later in starts[1:]:  # a restart resumed from the newest checkpoint written before it, never from scratch
        assert later["step"] >= figures["last_checkpoint_before"], starts
    print(f"\nS3 outage figures: {json.dumps(figures)}")
    if os.environ.get("GANSVC_FAULT_REPORT"):
        Path(os.environ["GANSVC_FAULT_REPORT"]).write_text(json.dumps(figures, indent=2))
