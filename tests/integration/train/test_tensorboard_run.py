"""A real `python -m gansvc.train` run (Ray, embedded S3) writes RUN/tensorboard/: every logged scalar and each
evaluation's sample grid, read back with TensorBoard's EventAccumulator; a resume that falls back to an earlier
checkpoint continues the stream without duplicated steps; loop.tensorboard=false writes none."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gansvc import local, storage
from gansvc.train.__main__ import main as train_main
from gansvc.train.tensorboard import TENSORBOARD_DIR, records


def _args(dataset: str, runs: str, name: str, steps: int, *extra: str) -> list[str]:
    return [
        "dcgan",
        "--dataset",
        dataset,
        "--storage",
        runs,
        "--name",
        name,
        "--preset",
        "smoke",
        "--batch-size",
        "8",
        "--max-steps",
        str(steps),
        "--log-every",
        "1",
        "--checkpoint-every",
        "2",
        "--eval-every",
        "2",
        "--set",
        "loop.grid_size=4",
        *extra,
    ]


def _events(run: str, dest: Path) -> tuple[Any, Counter[tuple[str, int]]]:
    """The run's events copied from S3 into `dest`: EventAccumulator, and how often each (tag, step) is in the raw
    files (TensorBoard's reader would hide duplicates of a restart)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.compat.proto.event_pb2 import Event

    dest.mkdir()
    seen: Counter[tuple[str, int]] = Counter()
    folder = storage.parse_uri(run).join(TENSORBOARD_DIR)
    for obj in storage.list_objects(folder.uri()):
        data = storage.read_bytes(folder.join(obj.rel).uri())
        (dest / obj.rel).write_bytes(data)
        for _, payload in records(data):
            event = Event.FromString(payload)
            seen.update((v.tag, event.step) for v in event.summary.value)
    acc = EventAccumulator(str(dest), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc, seen


@pytest.mark.timeout(240)
def test_run_writes_tensorboard_and_resume_continues_it(
    ray_stack: local.StackState, synth_put: Callable[..., str], s3_prefix: str, tmp_path: Path
) -> None:
    data = synth_put("shapes", f"{s3_prefix}/data", count=32, size=16, seed=0, test_count=8)
    runs = f"{s3_prefix}/runs"
    assert train_main(_args(data, runs, "tb", 4)) == 0
    acc, _ = _events(f"{runs}/tb", tmp_path / "first")
    tags = acc.Tags()
    assert {"train/loss_g", "train/loss_d", "loop/images_per_s", "loop/data_wait_frac", "lr/G", "grad_norm/D"} <= set(
        tags["scalars"]
    )
    assert [s.step for s in acc.Scalars("train/loss_g")] == [1, 2, 3, 4]
    assert [s.step for s in acc.Scalars("eval/swd")] == [2, 4]  # the evaluation metric at each evaluation
    assert [i.step for i in acc.Images("samples")] == [2, 4]
    history = storage.read_json(f"{runs}/tb/history.json")
    assert [s.value for s in acc.Scalars("train/loss_g")] == pytest.approx([h["loss_g"] for h in history], rel=1e-6)

    # damage the newest checkpoint: the resume falls back to step 2 and trains 3..6; steps 3 and 4 of the first
    # attempt are cut from its events, not shown twice
    storage.delete(f"{runs}/tb/checkpoint-00000004/model.pt")
    assert train_main(_args(data, runs, "tb", 6)) == 0
    acc, seen = _events(f"{runs}/tb", tmp_path / "resumed")
    assert [s.step for s in acc.Scalars("train/loss_g")] == [1, 2, 3, 4, 5, 6]
    assert [i.step for i in acc.Images("samples")] == [2, 4, 6]
    assert max(seen.values()) == 1, [k for k, n in seen.items() if n > 1]
    history = storage.read_json(f"{runs}/tb/history.json")
    assert [s.value for s in acc.Scalars("train/loss_g")] == pytest.approx([h["loss_g"] for h in history], rel=1e-6)

    assert train_main(_args(data, runs, "off", 2, "--set", "loop.tensorboard=false")) == 0
    assert not any(o.rel.startswith(f"{TENSORBOARD_DIR}/") for o in storage.list_objects(f"{runs}/off"))
