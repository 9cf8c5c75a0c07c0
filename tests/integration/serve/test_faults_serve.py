"""Fault injection, Serve: a model replica's process killed (SIGKILL) while 32 clients send requests.

Real parts only: the embedded stack's Ray, a real Serve instance (front door + one model application with ONE replica,
so the kill is a full outage of that model until Serve replaces it), real HTTP with a bounded client timeout.
What must hold: no request hangs (every one answers within the client timeout), the requests the kill hits answer
503 `model_unavailable` with Retry-After (never a 500, never a dropped connection), Serve starts a new replica and
serving resumes. The error count and the recovery time (kill -> first answer from the new replica) are printed
(`pytest -s`) and reported in the README's Reliability table.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests

from gansvc import local
from gansvc.registry import register
from tests.support.serve import ATTRS
from tests.support.serve import model_app as _model_app
from tests.support.serve import model_bytes as _model_bytes

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("stack")]
CLIENTS = 32
CLIENT_TIMEOUT_S = 60.0  # a request that takes longer counts as a hang
REQUEST_TIMEOUT_S = 30.0  # the front door's own bound on a model call (-> 504)


@pytest.fixture(scope="module")
def url(ray_stack: local.StackState) -> Any:
    from ray import serve

    from gansvc.serve.__main__ import deploy, wait_running

    registry = f"s3://{ray_stack.bucket}/t-fserve-{uuid.uuid4().hex[:10]}/registry"
    register("gen", _model_bytes("acgan", ATTRS, 0), "test", {}, root=registry)
    port = ray_stack.ports.serve_http
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    config = {
        "proxy_location": "HeadOnly",
        "http_options": {"host": "127.0.0.1", "port": port},
        "applications": [
            {
                "name": "gansvc",
                "route_prefix": "/",
                "import_path": "gansvc.serve.app:build_app",
                "args": {"num_cpus": 0.1, "request_timeout_s": REQUEST_TIMEOUT_S, "expect_models": ["gen"]},
            },
            _model_app("gen", registry),
        ],
    }  # autoscaling default: exactly one replica
    try:
        deploy(ray_stack.dashboard_url, config)
        wait_running(ray_stack.dashboard_url, ["gansvc", "gen"], timeout=240)
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()


def _replica_pids() -> dict[str, int]:
    """actor id -> PID of the live replicas of the `gen` model (Ray's state API)."""
    from ray.util.state import list_actors

    actors = list_actors(filters=[("state", "=", "ALIVE")], limit=1000, raise_on_missing_output=False)
    return {a.actor_id: a.pid for a in actors if a.class_name.startswith("ServeReplica:gen:")}


@pytest.mark.timeout(300)
def test_replica_killed_under_load(url: str) -> None:
    stop = threading.Event()
    log: list[tuple[float, float, int | str, str]] = []  # (start, end, status or error, replica)
    lock = threading.Lock()

    def client(i: int) -> None:
        session = requests.Session()
        k = 0
        while not stop.is_set():
            t0 = time.monotonic()
            try:
                r = session.post(
                    f"{url}/v1/models/gen/generate", json={"n": 1, "seed": i * 1000 + k}, timeout=CLIENT_TIMEOUT_S
                )
                entry = (t0, time.monotonic(), r.status_code, r.headers.get("X-Replica", ""))
                if r.status_code != 200:
                    entry = (*entry[:3], r.headers.get("Retry-After", "") + "|" + r.text[:200])
            except requests.RequestException as err:
                entry = (t0, time.monotonic(), type(err).__name__, str(err)[:200])
            with lock:
                log.append(entry)
            k += 1

    pids = _replica_pids()
    assert len(pids) == 1, pids
    ((old_actor, pid),) = pids.items()
    with cf.ThreadPoolExecutor(CLIENTS) as pool:
        futures = [pool.submit(client, i) for i in range(CLIENTS)]
        try:
            time.sleep(3.0)  # load established
            with lock:
                assert log and all(e[2] == 200 for e in log), log[:5]
                old_replica = log[-1][3]
            killed_at = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            deadline = killed_at + 120
            while time.monotonic() < deadline:  # until the new replica has answered for a while
                with lock:
                    new = [e for e in log if e[2] == 200 and e[0] > killed_at and e[3] != old_replica]
                if len(new) >= 4 * CLIENTS:
                    break
                time.sleep(0.2)
        finally:
            stop.set()
            for f in futures:
                f.result(timeout=CLIENT_TIMEOUT_S + 30)
    after = [e for e in log if e[1] > killed_at]
    errors = [e for e in after if e[2] != 200]
    recovered = [e for e in after if e[2] == 200 and e[3] != old_replica]
    assert recovered, f"serving did not resume within 120 s of the kill: {errors[-5:]}"
    recovery_s = min(e[1] for e in recovered) - killed_at
    slowest = max(e[1] - e[0] for e in log)
    kinds: dict[str, int] = {}
    for e in errors:
        kinds[str(e[2])] = kinds.get(str(e[2]), 0) + 1
    print(
        f"\nreplica killed under {CLIENTS} clients: {len(log)} requests, {len(errors)} errors {kinds}, recovery "
        f"(kill -> first answer of the new replica) {recovery_s:.1f} s, slowest request {slowest:.1f} s"
    )
    assert slowest < CLIENT_TIMEOUT_S, "a request hung"
    assert all(isinstance(e[2], int) for e in errors), f"dropped connections / client timeouts: {errors[:5]}"
    assert {e[2] for e in errors} <= {503}, f"the kill must answer 503 (retry), not {kinds}: {errors[:5]}"
    assert all(e[3].startswith("1|") and "model_unavailable" in e[3] for e in errors), errors[:5]
    assert old_actor not in _replica_pids(), "the killed replica is still listed"
    ok = requests.post(f"{url}/v1/models/gen/generate", json={"n": 1, "seed": 1}, timeout=CLIENT_TIMEOUT_S)
    assert ok.status_code == 200 and ok.headers["X-Replica"] != old_replica


def _proxy_callback_installed(ray_stack: local.StackState) -> bool:
    """Serve's proxy reads RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH from the Ray head's environment (Linux /proc)."""
    try:
        environ = Path(f"/proc/{ray_stack.ray_pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=gansvc.serve.errors:proxy_middlewares" in environ


@pytest.mark.timeout(600)
def test_one_hop_replica_killed_answers_503(url: str, ray_stack: local.StackState) -> None:
    """One hop (a model application with its own route): no gansvc code runs between Serve's proxy and the killed
    replica, so the requests in flight get the proxy's answer; with gansvc.serve.errors:proxy_middlewares installed
    in the proxy it is the same 503 model_unavailable + Retry-After as on the two-hop path (without it: a bare 500)."""
    if not _proxy_callback_installed(ray_stack):
        pytest.skip(
            "the Ray head was started without RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH="
            "gansvc.serve.errors:proxy_middlewares (serve/README.md, 'One hop or two')"
        )
    from ray.util.state import list_actors

    from gansvc.serve.__main__ import declarative_apps, deploy, wait_running

    running, details = declarative_apps(ray_stack.dashboard_url)
    gen = next(a for a in running if a["name"] == "gen")
    deploy(
        ray_stack.dashboard_url,
        {
            "proxy_location": details.get("proxy_location") or "HeadOnly",
            "http_options": details.get("http_options") or {},
            "applications": [{**gen, "name": "gen1", "route_prefix": "/v1/models/gen1"}],
        },
    )
    wait_running(ray_stack.dashboard_url, ["gen1"], timeout=240)

    def gen1_pid() -> int:
        """The PID of gen1's one live replica (a killed one can stay listed ALIVE for a moment: wait it out)."""
        deadline = time.monotonic() + 60
        while True:
            pids = [
                a.pid
                for a in list_actors(filters=[("state", "=", "ALIVE")], limit=1000, raise_on_missing_output=False)
                if a.class_name.startswith("ServeReplica:gen1:")
            ]
            if len(pids) == 1 or time.monotonic() > deadline:
                assert len(pids) == 1, f"gen1 should have one live replica: {pids}"
                return int(pids[0])
            time.sleep(0.5)

    stop, lock = threading.Event(), threading.Lock()
    log: list[tuple[int | str, str, str]] = []

    def client(i: int) -> None:
        session = requests.Session()
        while not stop.is_set():
            try:
                r = session.post(f"{url}/v1/models/gen1/generate", json={"n": 4, "seed": i}, timeout=CLIENT_TIMEOUT_S)
                entry = (r.status_code, r.headers.get("Retry-After", ""), r.text[:200] if r.status_code != 200 else "")
            except requests.RequestException as err:
                entry = (type(err).__name__, "", str(err)[:200])
            with lock:
                log.append(entry)

    # A SIGKILL that lands while no request has been accepted by the replica fails nothing (Serve's router retries a
    # request whose replica died before accepting it): on a loaded 2-core machine that happens now and then, so the
    # kill is repeated, on the replacement replica, until it has hit requests in flight (at most 3 kills).
    with cf.ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(client, i) for i in range(16)]
        try:
            time.sleep(2.0)
            with lock:
                first = len(log)
                assert first and all(e[0] == 200 for e in log), log[:5]
            for _ in range(3):
                with lock:
                    mark = len(log)
                os.kill(gen1_pid(), signal.SIGKILL)
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:  # until the new replica has answered for a while
                    with lock:
                        if sum(1 for e in log[mark:] if e[0] == 200) >= 64:
                            break
                    time.sleep(0.2)
                with lock:
                    if any(e[0] != 200 for e in log[mark:]):
                        break
                wait_running(ray_stack.dashboard_url, ["gen1"], timeout=240)
        finally:
            stop.set()
            for f in futures:
                f.result(timeout=CLIENT_TIMEOUT_S + 30)
    after = log[first:]
    errors = [e for e in after if e[0] != 200]
    assert sum(1 for e in log[mark:] if e[0] == 200) >= 64, f"serving did not resume: {errors[-5:]}"
    assert errors, "three kills hit no request in flight: nothing was checked"
    assert all(e[0] == 503 and e[1] == "1" and "model_unavailable" in e[2] for e in errors), errors[:5]
