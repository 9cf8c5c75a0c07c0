"""Shared fixtures: one real embedded stack (SeaweedFS S3 + Ray head on 127.0.0.1) per test run.

The stack gets its own state directory and a free port base, so test runs never touch a user's stack and two runs
on one machine do not collide. The test process's environment is pointed at it (AWS_* and RAY_* variables), exactly
as `eval "$(python -m gansvc.local env)"` does for a shell.

Hygiene: a test run leaves nothing behind in $HOME or the temp folder. At import (before any test module, any
fixture, and so before the stack's processes start and inherit the environment) every temp and cache location is
pointed into one session scratch folder, `$TMPDIR/gsx-*`, which `pytest_unconfigure` removes (after the session
fixtures, the stack included, are torn down). tests/unit/test_hygiene.py checks it with a fake HOME and TMPDIR.
"""

from __future__ import annotations

import atexit
import json
import os
import random
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# Ray reads this once, at its first import: set it before any test module imports ray (see gansvc/local.py)
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
# Ray Train V2 hands the controller one report per worker each time it polls the workers, every
# RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (default 2 s): a worker's report queue holds one result and `ray.train.report`
# blocks while it is full (Ray 2.60 ray/train/v2/_internal/execution/context.py `_wait_then_report`,
# worker_group/worker.py `poll_status`). A run that reports N times thus takes at least 2N s, whatever its steps
# cost: the tests' runs report every 1-10 steps, so the controller polls every 0.1 s here (a hanging poll is no error
# before RAY_TRAIN_WORKER_HEALTH_CHECK_TIMEOUT_S, 600 s). Set before the stack starts, the Ray head and so every job
# driver, Tune trial and Train controller inherit it (Ray propagates it from a driver: ENV_VARS_TO_PROPAGATE).
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1")

from gansvc import local

# tests/ is a package, so pytest loads this file as `tests.conftest`, the module test files import. Should it ever run
# twice in a process (imported under another name), the second run reuses the first one's folders, not redirecting
# the environment again.
_SECOND_IMPORT = os.environ.get("GANSVC_TEST_SCRATCH_PID") == str(os.getpid())
# The temp folder the run was started with ($TMPDIR, else /tmp), before it is redirected below.
ORIGINAL_TMP = Path(os.environ["GANSVC_TEST_ORIGINAL_TMP"] if _SECOND_IMPORT else tempfile.gettempdir())
# The stack's state dir holds Ray's unix sockets (ray-tmp/session_<date>_<time>_<usec>_<pid>/sockets/plasma_store,
# about 70 characters below the state dir) and a socket path must stay under 107 characters: the state dir goes
# into the original temp folder only when that is short, else into /tmp.
SHORT_TMP = ORIGINAL_TMP if len(str(ORIGINAL_TMP)) <= 20 else Path("/tmp")
SCRATCH = Path(
    os.environ["GANSVC_TEST_SCRATCH"] if _SECOND_IMPORT else tempfile.mkdtemp(prefix="gsx-", dir=ORIGINAL_TMP)
)
_REMOVE_AT_EXIT: list[Path] = [SCRATCH]
_STACK_PORTS: list[int] = []  # the stack's S3 ports, for the report (SeaweedFS names /tmp sockets after them)


def _redirect_caches(scratch: Path) -> dict[str, str]:
    """Every place the code and its libraries write outside the test's own folders, pointed into `scratch`."""
    cache = scratch / "cache"
    env = {
        "TMPDIR": scratch / "tmp",  # tempfile (synth folders, pytest's tmp_path, checkpoints), Ray, SeaweedFS logs
        "XDG_CACHE_HOME": cache,  # downloads (gansvc.data.ingest), anything XDG-aware
        "GANSVC_CACHE_DIR": cache / "gansvc",  # the data pipeline's byte cache (default ~/.cache/gansvc)
        "TORCH_HOME": cache / "torch",  # torch hub: also keeps a user's Inception weights out of the tests
        "TRITON_CACHE_DIR": cache / "triton",  # GPU kernels (default ~/.triton/cache)
        "MPLCONFIGDIR": scratch / "matplotlib",  # matplotlib's font cache (default ~/.cache and ~/.config)
        "GANSVC_HOME": scratch / "gansvc-home",  # the default local stack state dir (~/.gansvc/local)
    }
    for path in env.values():
        path.mkdir(parents=True, exist_ok=True)
    return {k: str(v) for k, v in env.items()}


# The stack's state dir, made now: Ray reads RAY_AUTH_MODE once, when it is first imported (test modules import it
# at collection, long before the `stack` fixture runs), so the token-auth settings that `local env` exports must be
# in the environment before then. The token file itself is written by `local.up` into this folder.
STACK_DIR = Path(
    os.environ["GANSVC_TEST_STACK_DIR"] if _SECOND_IMPORT else tempfile.mkdtemp(prefix="gst-", dir=SHORT_TMP)
)

if not _SECOND_IMPORT:
    _REMOVE_AT_EXIT.append(STACK_DIR)  # made at import: removed at the end even when no test starts the stack
    os.environ.update(_redirect_caches(SCRATCH))
    os.environ.update(
        {
            "GANSVC_TEST_SCRATCH": str(SCRATCH),
            "GANSVC_TEST_ORIGINAL_TMP": str(ORIGINAL_TMP),
            "GANSVC_TEST_SCRATCH_PID": str(os.getpid()),
            "GANSVC_TEST_STACK_DIR": str(STACK_DIR),
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": str(STACK_DIR / local.TOKEN_FILE),
        }
    )
    os.environ.pop("RAY_AUTH_TOKEN", None)  # a token of the caller's environment would win over the stack's file
    tempfile.tempdir = os.environ["TMPDIR"]  # tempfile caches its folder at first use: re-point it too


def remove_tree(path: Path, timeout: float = 15.0) -> None:
    """rmtree that retries while exiting processes (a stopping raylet, SeaweedFS) still write into the tree."""
    deadline = time.monotonic() + timeout
    while path.exists():
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists() or time.monotonic() > deadline:
            return
        time.sleep(0.2)


def _remove_scratch() -> None:
    for path in _REMOVE_AT_EXIT:
        remove_tree(path)


def _write_report(path: str) -> None:
    """For tests/unit/test_hygiene.py: where this run's folders were, and what tests left in the temp folder (tests
    should remove what they create; the scratch folder removes the rest regardless)."""
    tmp = SCRATCH / "tmp"
    left = sorted(p.name for p in tmp.iterdir()) if tmp.is_dir() else []
    Path(path).write_text(
        json.dumps(
            {
                "scratch": str(SCRATCH),
                "removed": [str(p) for p in _REMOVE_AT_EXIT],
                "left_in_tmp": left,
                "stack_ports": _STACK_PORTS,
            }
        )
    )


def pytest_unconfigure(config: pytest.Config) -> None:
    """After every fixture's teardown (the stack is down): the session's temp and cache folders go."""
    if os.environ.get("GANSVC_TEST_REPORT"):
        _write_report(os.environ["GANSVC_TEST_REPORT"])
    _remove_scratch()


if not _SECOND_IMPORT:
    atexit.register(_remove_scratch)  # a run that ends before pytest_unconfigure (usage error, internal error)


def free_port_base() -> int:
    """A base whose derived ports (base..base+20, and SeaweedFS's base+10000..) are all free.

    Bases stay in 20000-22000: their +10000 gRPC ports then stay below Linux's ephemeral range (32768+).
    """
    for _ in range(200):
        base = random.randrange(20000, 22000, 25)
        ports = local.Ports(base)
        if all(local._port_free(p) for p in [*ports.s3_ports(), *ports.ray_ports(), ports.serve_http]):
            return base
    raise RuntimeError("no free port range found for the test stack")


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Tiny nets run faster on one intra-op thread (no OpenMP spin-waiting when test runs share the two cores)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def stack_dir() -> Iterator[Path]:
    """The stack's state dir (STACK_DIR: short path, see SHORT_TMP); removed with Ray's session folders even when
    tests fail."""
    path = STACK_DIR
    try:
        yield path
    finally:
        remove_tree(path)


@pytest.fixture(scope="session")
def stack(stack_dir: Path) -> Iterator[local.StackState]:
    """The S3 server (Ray is added by `ray_stack`); the process environment points at it."""
    state = local.up(stack_dir, port_base=free_port_base(), with_ray=False, timeout=120)
    _STACK_PORTS.extend(state.ports.s3_ports())
    saved = dict(os.environ)
    os.environ.update(state.env())
    os.environ.pop("RAY_ADDRESS", None)  # set by `ray_stack` once the head runs
    try:
        yield state
    finally:
        local.down(stack_dir)
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="session")
def ray_stack(stack: local.StackState, stack_dir: Path) -> Iterator[local.StackState]:
    """The S3 server plus a Ray head, with this process connected as a driver (ray.init)."""
    import ray

    state = local.up(stack_dir, with_ray=True, timeout=180)
    os.environ["RAY_ADDRESS"] = state.ray_address
    ray.init(address=state.ray_address, log_to_driver=False)
    try:
        yield state
    finally:
        ray.shutdown()


@pytest.fixture
def s3_prefix(stack: local.StackState) -> str:
    """A fresh, empty prefix in the stack's bucket."""
    return f"s3://{stack.bucket}/t-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def synth_put() -> Callable[..., str]:
    """`synth_put(name, dest, **synth_args)`: a synthetic dataset written with `data put` to `dest` (returned); the
    local folder `synth` generates it in is removed right after (tests otherwise leave one per dataset)."""
    from gansvc.data.ingest import put
    from gansvc.data.synth import synth

    def make(name: str, dest: str, **synth_args: Any) -> str:
        folder = synth(name, **synth_args)
        try:
            put(str(folder), dest, quiet=True)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return dest

    return make
