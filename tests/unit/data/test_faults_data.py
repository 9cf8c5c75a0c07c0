"""Fault injection (issue 13): a `data put` killed at random points; re-running it completes; readers never see a mix.

Real processes (`python -m gansvc.data put`, SIGKILL), the real S3 server. Each round replaces the live dataset with
another source and kills the put either at a random named point (the GANSVC_PUT_PAUSE_AT hook: after N uploads,
before / after the manifest switch, after N deletions of the old version) or after a random delay. A reader thread
reads the dataset the whole time. After the kill the dataset must be the old or the new source, whole; the re-run
(`put --overwrite` again, a fresh process) must complete; its wall time, process start included, is the recovery
time printed at the end (README, Reliability table).
"""

from __future__ import annotations

import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from gansvc import storage
from gansvc.data.ingest import put
from gansvc.data.manifest import read_manifest
from tests.unit.data.test_data_safety import cli, image_folder, keys, read_dataset, sigkill, start_paused_put


class Reader(threading.Thread):
    """Reads the whole dataset in a loop: every read must be exactly one of the allowed sources.

    A file missing after the manifest moved on is the old version being deleted (a reader holding an old manifest
    reads it until then): that read is retried. A file missing while the manifest it came from is still live, or a
    read that matches no source whole, is a failure.
    """

    def __init__(self, dest: str, sources: dict[str, dict[str, bytes]], allowed: set[str]) -> None:
        super().__init__(daemon=True)
        self.dest, self.sources, self.allowed = dest, sources, allowed
        self.stop = threading.Event()
        self.failures: list[str] = []
        self.reads = 0

    def run(self) -> None:
        while not self.stop.is_set():
            m = read_manifest(self.dest)
            try:
                data = read_dataset(self.dest, m)
            except storage.StorageError as err:
                if read_manifest(self.dest).model_dump() == m.model_dump():
                    self.failures.append(f"missing file of the live version: {err}")
                continue
            match = [k for k in self.allowed if self.sources[k] == data]
            if len(match) != 1:
                self.failures.append(f"mixed or unknown dataset ({len(data)} files, fingerprint {m.fingerprint})")
            self.reads += 1
            self.stop.wait(0.05)  # leave the (2-core) machine to the put being killed


def whole_source(dest: str, sources: dict[str, dict[str, bytes]], allowed: set[str]) -> str:
    data = read_dataset(dest)
    match = [k for k in allowed if sources[k] == data]
    assert len(match) == 1, f"readers see a mixed dataset (allowed: {sorted(allowed)})"
    return match[0]


@pytest.mark.timeout(300)
def test_put_killed_at_random_points(tmp_path: Path, s3_prefix: str) -> None:
    rng = random.Random(13)
    names = ["a", "b", "c"]
    # the same file names in every source with other bytes, plus some of its own: a mix would show
    sources = {k: image_folder(tmp_path / k, seed=i + 1, n=30, extra=2 * i) for i, k in enumerate(names)}
    put(str(tmp_path / "a"), s3_prefix, quiet=True)
    storage.write_bytes(f"{s3_prefix}/runs/keep.pt", b"beside the dataset: never deleted")
    live, rows = "a", []
    for _ in range(5):
        target = rng.choice([k for k in names if k != live])
        allowed = {live, target}
        reader = Reader(s3_prefix, sources, allowed)
        reader.start()
        if rng.random() < 0.5:
            point = rng.choice(
                [
                    f"upload:{rng.randint(1, len(sources[target]))}",
                    "commit",
                    "committed",
                    f"delete:{rng.randint(1, len(sources[live]))}",
                ]
            )
            proc = start_paused_put(tmp_path / target, s3_prefix, point, "--overwrite")
            time.sleep(0.3)  # let the reader read while the put is stopped there
            sigkill(proc)
        else:
            delay = rng.uniform(0.5, 3.5)
            point = f"after {delay:.1f}s"
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gansvc.data",
                    "put",
                    str(tmp_path / target),
                    s3_prefix,
                    "--overwrite",
                    "--threads",
                    "2",
                    "--quiet",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
                env=dict(os.environ),
            )
            time.sleep(delay)
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            _, err = proc.communicate(timeout=30)
            assert proc.returncode in (0, -signal.SIGKILL), err
            point += "" if proc.returncode else " (finished first)"
        after_kill = whole_source(s3_prefix, sources, allowed)
        t0 = time.perf_counter()
        out = cli("put", str(tmp_path / target), s3_prefix, "--overwrite", "--quiet")
        recovery = time.perf_counter() - t0
        reader.stop.set()
        reader.join(30)
        assert out.returncode == 0, out.stderr
        assert not reader.failures, reader.failures[:3]
        assert whole_source(s3_prefix, sources, {target}) == target
        m = read_manifest(s3_prefix)
        assert keys(s3_prefix) == {"runs/keep.pt", "manifest.json"} | {m.object_rel(r) for r in m.stored_files()}, (
            "no file of an old or killed version left behind"
        )
        rows.append((f"{live}->{target}", point, after_kill, recovery, reader.reads))
        live = target
    print("\nkilled data put: round, kill point, dataset after the kill, re-run (recovery) s, reader passes")
    for row in rows:
        print(f"  {row[0]}  {row[1]:<24} {row[2]}  {row[3]:.2f}s  {row[4]}")
    times = [r[3] for r in rows]
    print(
        f"recovery: median {statistics.median(times):.2f}s, max {max(times):.2f}s over {len(rows)} kills "
        f"({len(sources['a'])}-image datasets, process start included)"
    )
