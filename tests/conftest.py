"""Shared fixtures: one real embedded stack (SeaweedFS S3 + Ray head on 127.0.0.1) per test run.

The stack gets its own state directory and a free port base, so test runs never touch a user's stack and two runs
on one machine do not collide. The test process's environment is pointed at it (AWS_* and RAY_* variables), exactly
as `eval "$(python -m gansvc.local env)"` does for a shell.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

# Ray reads this once, at its first import: set it before any test module imports ray (see gansvc/local.py)
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

from gansvc import local  # noqa: E402


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
    # short path: Ray's unix sockets live under it and must stay under 107 characters
    path = Path(tempfile.mkdtemp(prefix="gst-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def stack(stack_dir: Path) -> Iterator[local.StackState]:
    """The S3 server (Ray is added by `ray_stack`); the process environment points at it."""
    state = local.up(stack_dir, port_base=free_port_base(), with_ray=False, timeout=120)
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
