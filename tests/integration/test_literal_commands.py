"""The commands a user is promised, typed as they are (issue 14.1), on the embedded stack:

    python -m gansvc.data get horse2zebra            # here --from the archive: these machines are offline
    python -m gansvc.train cyclegan --dry-run
    ray job submit -- python -m gansvc.train cyclegan --max-steps 2

The archive is a small one in the official CycleGAN zip layout (horse2zebra/trainA ... testB, JPEGs). The job runs
with the stack's environment (GANSVC_STORAGE = the stack's bucket), as a user's `ray job submit` does.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
import uuid
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gansvc import local, storage
from gansvc.train.resolve import steps_per_epoch

N_TRAIN = 6  # images per domain: max(|A|, |B|) = one epoch


def _cyclegan_zip(path: Path, name: str, size: int = 32) -> Path:
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w") as zf:
        for split, n in (("trainA", N_TRAIN), ("trainB", N_TRAIN - 2), ("testA", 2), ("testB", 2)):
            for i in range(n):
                buf = io.BytesIO()
                Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, "JPEG")
                zf.writestr(f"{name}/{split}/{i:04d}.jpg", buf.getvalue())
    return path


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_get_dry_run_and_job_submit_train_cyclegan_as_typed(ray_stack: local.StackState, tmp_path: Path) -> None:
    from ray.job_submission import JobStatus, JobSubmissionClient

    env = {**os.environ, "GANSVC_CACHE_DIR": str(tmp_path / "cache"), "GANSVC_STORAGE": f"s3://{ray_stack.bucket}"}
    archive = _cyclegan_zip(tmp_path / "horse2zebra.zip", "horse2zebra")
    got = subprocess.run(
        [sys.executable, "-m", "gansvc.data", "get", "horse2zebra", "--from", str(archive), "--quiet"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert got.returncode == 0, got.stdout + got.stderr
    dataset = f"s3://{ray_stack.bucket}/datasets/horse2zebra"
    assert storage.exists(f"{dataset}/manifest.json")

    dry = subprocess.run(
        [sys.executable, "-m", "gansvc.train", "cyclegan", "--dry-run"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert dry.returncode == 0, dry.stdout + dry.stderr
    spe = steps_per_epoch(N_TRAIN, 1, 1)
    assert f"length: {200 * spe} steps = 200 epochs" in dry.stdout, dry.stdout[-2000:]
    assert f"constant for {100 * spe} steps (100 epochs)" in dry.stdout

    name = f"literal-{uuid.uuid4().hex[:8]}"
    client = JobSubmissionClient(ray_stack.dashboard_url)
    job = client.submit_job(entrypoint=f"python -m gansvc.train cyclegan --max-steps 2 --name {name}")
    deadline = time.monotonic() + 800
    while not client.get_job_status(job).is_terminal():
        assert time.monotonic() < deadline, client.get_job_logs(job)[-3000:]
        time.sleep(0.5)
    logs = client.get_job_logs(job)
    assert client.get_job_status(job) == JobStatus.SUCCEEDED, logs[-4000:]
    run = f"s3://{ray_stack.bucket}/runs/{name}"
    saved = storage.read_json(f"{run}/gansvc-config.json")
    # the report's run, shortened by --max-steps only: batch 1, 200 epochs, the decay of 100 + 100 epochs in steps
    assert saved["data"]["uri"] == dataset
    assert saved["loop"]["batch_size"] == 1 and saved["loop"]["epochs"] == 200 and saved["loop"]["max_steps"] == 2
    assert saved["model"]["decay_start"] == 100 * spe and saved["model"]["decay_steps"] == 100 * spe
    assert saved["data"]["flip"] is True
    assert any("never upsamples" in n for n in saved["notes"]), saved["notes"]
    assert storage.exists(f"{run}/checkpoint-00000002/meta.json"), logs[-3000:]
    # the job's output as a user reads it (issue 16.10): each progress line once, no ANSI colour codes, the
    # checkpoint named by its s3:// URI in the run summary
    progress = [line for line in logs.splitlines() if "[gansvc] step 2/2" in line]
    assert len(progress) == 1, progress
    assert "\x1b[" not in logs, logs[-3000:]
    assert "PreemptionWatcher" not in logs, logs[-3000:]  # Ray Train's watcher (off: gansvc.train.run)
    assert f'"checkpoint": "{run}/checkpoint-00000002"' in logs, logs[-3000:]
