"""A test run leaves nothing behind in $HOME or the temp folder (issue 13, point 19).

A separate pytest session runs a small, representative subset of the suite (data put, the data pipeline reading
S3 through its byte cache, a real training run on Ray with the default caches) with a fresh, empty HOME and TMPDIR.
Afterwards both must be empty: tests/conftest.py points every cache and temp folder into one session scratch folder
and removes it, the stack's state dir (Ray's session folders included) is removed, and the tests themselves remove
the synthetic-data folders they generate.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

SUBSET = [
    "tests/unit/data/test_data_put.py::test_put_folder_validates_and_writes_manifest",  # data put from a folder
    "tests/unit/metrics/test_metrics.py::test_reference_stats_are_cached_in_s3",  # synth + put, the pipeline reading S3
    # a real training run: Ray head and workers, the workers' default byte cache, checkpoints through temp folders
    "tests/integration/tune/test_tune.py::test_every_trial_failing_exits_nonzero",
]
# what the outer session (this one) set up, and what a user's shell may hold: the inner session starts from none
# of it, as on a fresh machine
DROPPED_PREFIXES = ("AWS_", "RAY_", "GANSVC_", "XDG_", "PYTEST_")
DROPPED = {"TMPDIR", "TORCH_HOME", "TRITON_CACHE_DIR", "MPLCONFIGDIR", "HOME"}


def _fresh_env(home: Path, tmp: Path, report: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in DROPPED and not k.startswith(DROPPED_PREFIXES)}
    return {
        **env,
        "HOME": str(home),
        "TMPDIR": str(tmp),
        "GANSVC_TEST_REPORT": str(report),
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.timeout(420)
def test_a_test_run_leaves_nothing_in_home_or_tmp() -> None:
    # short on purpose, in /tmp itself (this session's own TMPDIR is a longer scratch path): the inner session puts
    # its stack (Ray's unix sockets, 107-character limit) under its TMPDIR only when that path is short
    base = Path(tempfile.mkdtemp(prefix="ghy-", dir="/tmp"))
    home, tmp, report = base / "h", base / "t", base / "report.json"
    home.mkdir()
    tmp.mkdir()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *SUBSET],
            cwd=REPO,
            env=_fresh_env(home, tmp, report),
            capture_output=True,
            text=True,
            timeout=400,
        )
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
        assert "3 passed" in proc.stdout, proc.stdout[-2000:]
        info = json.loads(report.read_text())
        # every folder the run used lay in its TMPDIR (the stack's state dir included: nothing hard-coded to /tmp)
        assert info["removed"] and all(Path(p).parent == tmp for p in info["removed"]), info
        assert _tree(home) == [], f"left in $HOME: {_tree(home)}"
        assert _tree(tmp) == [], f"left in $TMPDIR: {_tree(tmp)[:20]}"
        # SeaweedFS puts unix sockets in /tmp itself, whatever TMPDIR says (/tmp/seaweedfs-<server>-<port>.sock):
        # the stack must place them in its state dir, or have them removed when it stops
        ports = {str(p) for p in info["stack_ports"]}
        assert ports, info
        sockets = [p.name for p in Path("/tmp").glob("seaweedfs-*.sock") if p.stem.rsplit("-", 1)[-1] in ports]
        assert not sockets, f"the stack left in /tmp: {sockets}"
        # and the tests removed their own synthetic-data folders (the scratch folder would have hidden them)
        assert not [n for n in info["left_in_tmp"] if n.startswith("gansvc-")], info["left_in_tmp"]
    finally:
        shutil.rmtree(base, ignore_errors=True)
