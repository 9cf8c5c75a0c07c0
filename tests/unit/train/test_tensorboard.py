"""gansvc.train.tensorboard: the run's TensorBoard events, in a local run folder and in the real embedded S3, read back
with TensorBoard's own reader (EventAccumulator): scalars and images, uploads only at sync, restarts without
duplicated steps, rotation."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from gansvc import local, storage
from gansvc.train import tensorboard
from gansvc.train.tensorboard import TENSORBOARD_DIR, RunEvents, tag_for


def _png(h: int = 20, w: int = 30) -> bytes:
    buf = io.BytesIO()
    Image.fromarray((np.arange(h * w * 3) % 251).astype(np.uint8).reshape(h, w, 3)).save(buf, format="PNG")
    return buf.getvalue()


def _report(step: int, attempt: int = 0) -> dict[str, float]:
    return {
        "step": float(step),
        "loss_g": step + 0.5 * attempt,
        "epoch": 0.0,
        "images_per_s": 100.0,
        "lr/G": 2e-4,
        "grad_norm/D": 1.5,
    }


def _read(run: str, tmp_path: Path) -> Any:
    """The run's tensorboard/ folder, copied here from S3 when it is there, loaded by EventAccumulator."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = storage.parse_uri(run).join(TENSORBOARD_DIR)
    if folder.is_s3:
        dest = tmp_path / f"copy-{len(list(tmp_path.iterdir()))}"
        dest.mkdir()
        for obj in storage.list_objects(folder.uri()):
            (dest / obj.rel).write_bytes(storage.read_bytes(folder.join(obj.rel).uri()))
        where = str(dest)
    else:
        where = folder.uri()
    acc = EventAccumulator(where, size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


@pytest.fixture(params=["local", "s3"])
def run(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "local":
        return str(tmp_path / "runs" / "r")
    stack: local.StackState = request.getfixturevalue("stack")
    prefix: str = request.getfixturevalue("s3_prefix")
    assert stack.bucket in prefix
    return f"{prefix}/r"


def test_tags_group_the_history_keys() -> None:
    quality = ("fid", "kid")
    assert tag_for("loss_g", quality) == "train/loss_g"
    assert tag_for("fid", quality) == "eval/fid"
    assert tag_for("images_per_s", quality) == "loop/images_per_s"
    assert tag_for("lr/G", quality) == "lr/G" and tag_for("grad_norm/D", quality) == "grad_norm/D"


@pytest.mark.timeout(60)
def test_scalars_and_images_read_back(run: str, tmp_path: Path) -> None:
    events = RunEvents(run, 0, ("fid",))
    for step in range(1, 5):
        events.scalars(step, _report(step))
    events.scalars(4, {"step": 4.0, "fid": 12.5})
    events.image(4, _png(), 20, 30, 3)
    remote = storage.parse_uri(run).join(TENSORBOARD_DIR).uri()
    if storage.parse_uri(run).is_s3:  # nothing goes to S3 between syncs (the step loop never waits on it)
        assert list(storage.list_objects(remote)) == []
    events.sync()
    files = [o.rel for o in storage.list_objects(remote)]
    assert len(files) == 1 and "tfevents" in files[0]
    events.close()
    acc = _read(run, tmp_path)
    tags = acc.Tags()
    assert set(tags["scalars"]) == {
        "train/loss_g",
        "loop/epoch",
        "loop/images_per_s",
        "lr/G",
        "grad_norm/D",
        "eval/fid",
    }
    assert [(s.step, s.value) for s in acc.Scalars("train/loss_g")] == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0)]
    assert [(s.step, s.value) for s in acc.Scalars("eval/fid")] == [(4, 12.5)]
    (image,) = acc.Images("samples")
    assert (image.step, image.height, image.width) == (4, 20, 30)
    assert image.encoded_image_string == _png()
    if storage.parse_uri(run).is_s3:
        assert not events.local.exists()  # the temporary folder is removed at close


@pytest.mark.timeout(60)
def test_restart_continues_without_duplicated_steps(run: str, tmp_path: Path) -> None:
    """Attempt 1 reached step 6 (synced), its checkpoint was step 4: attempt 2 starts at 4 and logs 5..8 again."""
    first = RunEvents(run, 0)
    for step in range(1, 7):
        first.scalars(step, _report(step))
    first.image(6, _png(), 20, 30, 3)
    first.close()
    second = RunEvents(run, 4)
    for step in range(5, 9):
        second.scalars(step, _report(step, attempt=1))
    second.close()
    acc = _read(run, tmp_path)
    points = [(s.step, s.value) for s in acc.Scalars("train/loss_g")]
    assert points == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0), (5, 5.5), (6, 6.5), (7, 7.5), (8, 8.5)]
    assert acc.Tags()["images"] == []  # attempt 1's grid of step 6 was cut with its steps
    # a third start at step 0 (a run restarted before its first checkpoint): attempt 1 and 2's files hold only events
    # after 0 and are deleted
    RunEvents(run, 0).close()
    remote = storage.parse_uri(run).join(TENSORBOARD_DIR).uri()
    assert len(list(storage.list_objects(remote))) == 1
    assert _read(run, tmp_path).Tags()["scalars"] == []


@pytest.mark.timeout(60)
def test_full_files_rotate(run: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past ROTATE_BYTES a sync starts a new file; every step is read back once, across the files."""
    monkeypatch.setattr(tensorboard, "ROTATE_BYTES", 1)
    events = RunEvents(run, 0)
    for step in range(1, 4):
        events.scalars(step, _report(step))
        events.sync()
    events.close()
    assert len(list(storage.list_objects(storage.parse_uri(run).join(TENSORBOARD_DIR).uri()))) == 4
    assert [s.step for s in _read(run, tmp_path).Scalars("train/loss_g")] == [1, 2, 3]
