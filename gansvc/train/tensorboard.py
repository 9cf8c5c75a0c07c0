"""TensorBoard event files of a run, written by rank 0's evaluator into `RUN/tensorboard/` (loop.tensorboard).

- Scalars: every history entry the loop records (one event per report, every scalar in it): the family's train_step
  terms under `train/`, evaluations (fid, kid, ...) under `eval/`, the loop's figures (images_per_s, step_time_s,
  data_wait_frac, epoch) under `loop/`; `lr/NET` and `grad_norm/NET` as they are.
- Images: the sample grid of each evaluation (`samples`), the PNG bytes already written to `samples/` (no re-encoding).
- Where: a local run folder gets the files directly (a TensorBoard pointed at it sees every report); an S3 run writes
  them in a local temporary folder and `sync()` uploads what changed to `RUN/tensorboard/` (the evaluator calls it at
  each evaluation and checkpoint and at the end: never between them, so the step loop does not wait on S3). A file
  is rotated (closed, a new one started) past ROTATE_BYTES, so an upload re-sends at most that much.
- Restarts: each start of the worker group writes new files (names sort by time); on a start at step S, events after S
  in the files of earlier attempts (the failed attempt's steps after its checkpoint) are cut out first, so a resumed
  run continues one stream without duplicated steps, as its history.json does.

The file format is TensorFlow's TFRecord of `Event` protos (tensorboard.compat.proto): written here, synchronously and
without TensorFlow; the CRCs use tensorboard's crc32c.
"""

from __future__ import annotations

import importlib
import os
import shutil
import socket
import struct
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gansvc import storage

TENSORBOARD_DIR = "tensorboard"  # in the run folder (RUN/tensorboard/)
EVENTS_MARK = "tfevents"  # TensorBoard reads the files whose name contains it
ROTATE_BYTES = 8 * 1024 * 1024
SAMPLES_TAG = "samples"
LOOP_SCALARS = ("epoch", "images_per_s", "step_time_s", "data_wait_frac", "replicas_identical", "diverged")


def tag_for(key: str, quality: tuple[str, ...]) -> str:
    """The TensorBoard tag of a history key (see the module docstring)."""
    if "/" in key:
        return key
    if key in quality:
        return f"eval/{key}"
    if key in LOOP_SCALARS:
        return f"loop/{key}"
    return f"train/{key}"


def _tb(module: str) -> Any:
    """A module of the tensorboard package (imported when a run writes events; tensorboard ships no type hints)."""
    return importlib.import_module(f"tensorboard.{module}")


def _masked_crc(data: bytes) -> bytes:
    return struct.pack("<I", _tb("compat.tensorflow_stub.pywrap_tensorflow").masked_crc32c(data))


def record(data: bytes) -> bytes:
    """One TFRecord: length, its masked CRC, the data, its masked CRC (little-endian)."""
    header = struct.pack("<Q", len(data))
    return header + _masked_crc(header) + data + _masked_crc(data)


def records(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """(whole record, its payload) of each complete record in an event file's bytes (a torn tail is left out)."""
    pos = 0
    while pos + 12 <= len(data):
        (length,) = struct.unpack_from("<Q", data, pos)
        end = pos + 12 + length + 4
        if end > len(data):
            return
        yield data[pos:end], data[pos + 12 : pos + 12 + length]
        pos = end


def truncated(data: bytes, after_step: int) -> bytes | None:
    """An event file's bytes without the events of steps after `after_step` (the file-version record stays); None
    when nothing is cut."""
    event_cls = _tb("compat.proto.event_pb2").Event
    kept, cut = [], False
    for whole, payload in records(data):
        event = event_cls.FromString(payload)
        if event.step > after_step and not event.HasField("file_version"):
            cut = True
        else:
            kept.append(whole)
    return b"".join(kept) if cut else None


class RunEvents:
    """Rank 0's TensorBoard writer of one run (see the module docstring). `start_step`: where this start begins."""

    def __init__(self, run_uri: str, start_step: int = 0, quality: tuple[str, ...] = ()) -> None:
        self.remote = storage.parse_uri(run_uri).join(TENSORBOARD_DIR)
        self.quality = quality
        self.local = Path(tempfile.mkdtemp(prefix="gansvc-tb-")) if self.remote.is_s3 else Path(self.remote.uri())
        self.local.mkdir(parents=True, exist_ok=True)
        self._uploaded: dict[str, int] = {}  # file name -> size uploaded (S3 runs)
        self._file: Any = None
        self._path: Path | None = None
        self._cut_after(start_step)
        self._open()

    # ------------------------------------------------------------------------------------------------ files
    def _cut_after(self, step: int) -> None:
        """Remove the events after `step` that earlier attempts left in RUN/tensorboard/."""
        for obj in list(storage.list_objects(self.remote.uri())):
            if EVENTS_MARK not in obj.rel or "/" in obj.rel:
                continue
            uri = self.remote.join(obj.rel).uri()
            data = storage.read_bytes(uri)
            kept = truncated(data, step)
            if kept is None:
                continue
            if len(list(records(kept))) <= 1:  # nothing but the file-version record is left
                storage.delete(uri)
            else:
                storage.write_bytes(uri, kept)

    def _open(self) -> None:
        # names sort by time (TensorBoard reads a folder's files in name order), to the microsecond: never an old name
        now = time.time_ns() // 1000
        name = f"events.out.{EVENTS_MARK}.{now // 10**6:010d}.{now % 10**6:06d}.{socket.gethostname()}.{os.getpid()}"
        self._path = self.local / name
        self._file = self._path.open("xb")
        self._write(_tb("compat.proto.event_pb2").Event(wall_time=time.time(), file_version="brain.Event:2"))

    def _write(self, event: Any) -> None:
        self._file.write(record(event.SerializeToString()))

    # ---------------------------------------------------------------------------------------------- writing
    def scalars(self, step: int, values: dict[str, float]) -> None:
        """One event with every number of a report (the `step` key itself is the x axis, not a scalar)."""
        event, summary_cls = _tb("compat.proto.event_pb2").Event, _tb("compat.proto.summary_pb2").Summary

        summary = summary_cls(
            value=[
                summary_cls.Value(tag=tag_for(k, self.quality), simple_value=float(v))
                for k, v in values.items()
                if k != "step" and isinstance(v, int | float)  # not an evaluation's "protocol" (a dict)
            ]
        )
        self._write(event(wall_time=time.time(), step=step, summary=summary))
        if not self.remote.is_s3:  # a TensorBoard reading the local run folder sees every report (one small write)
            self._file.flush()

    def image(self, step: int, png: bytes, height: int, width: int, channels: int, tag: str = SAMPLES_TAG) -> None:
        event, summary = _tb("compat.proto.event_pb2").Event, _tb("compat.proto.summary_pb2").Summary
        img = summary.Image(height=height, width=width, colorspace=channels, encoded_image_string=png)
        self._write(event(wall_time=time.time(), step=step, summary=summary(value=[summary.Value(tag=tag, image=img)])))

    def sync(self, rotate: bool = True) -> None:
        """Flush; on an S3 run upload the files that changed since the last sync, then rotate a full file."""
        self._file.flush()
        if self.remote.is_s3:
            for path in sorted(self.local.iterdir()):
                size = path.stat().st_size
                if self._uploaded.get(path.name) != size:
                    storage.upload_file(path, self.remote.join(path.name).uri())
                    self._uploaded[path.name] = size
        assert self._path is not None  # opened in __init__
        if rotate and self._path.stat().st_size > ROTATE_BYTES:
            self._file.close()
            self._open()

    def close(self) -> None:
        """The last sync; an S3 run's temporary folder is removed."""
        if self._file is None:
            return
        try:
            self.sync(rotate=False)
        finally:
            self._file.close()
            self._file = None
            if self.remote.is_s3:
                shutil.rmtree(self.local, ignore_errors=True)
