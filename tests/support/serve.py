"""What the Serve tests share (tests/integration/serve/: test_serve*.py, test_faults_serve.py): smoke model files in a
fresh S3
registry, application entries, one Serve instance per module deployed declaratively (as `serve deploy` does), the
metrics scrape, a raw chunked POST and a poller that watches models while they are redeployed.

Nothing here imports Ray at module level: Ray reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER (keep 127.0.0.1) when it is
first imported, so it must not be imported before the `stack` fixture has set the environment.
"""

from __future__ import annotations

import contextlib
import io
import select
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import requests
import torch
from PIL import Image

from gansvc import local
from gansvc.checkpoint import inference_payload
from gansvc.data.spec import DataSpec
from gansvc.families import FAMILIES
from gansvc.families.sampling import encode_labels
from gansvc.registry import register

ATTRS = DataSpec("single", 16, 16, 3, {"hair_color": ("blue", "red", "green"), "eye_color": ("brown", "blue")})
PAIRS = DataSpec("unpaired", 32, 32, 3)
MAX_BYTES = 64 * 1024


def model_bytes(
    family: str, data: DataSpec, seed: int, extra: dict[str, Any] | None = None, vivid: bool = False
) -> bytes:
    """A model file as training writes it, from freshly built smoke nets. `vivid`: the generators' output layer is
    scaled so its images vary visibly (a fresh DCGAN-initialised generator draws near-uniform grey: N(0, 0.02)
    weights), for the screenshots of the page tests; what the model computes is otherwise unchanged."""
    spec = FAMILIES[family]
    cfg = spec.make_config("smoke")
    torch.manual_seed(seed)
    state = spec.build(cfg, data)
    if vivid:
        assert spec.generate is not None, "vivid: generation families only"
        nets = state.inference_nets()
        for net in nets.values():
            net.eval()
        last = [m for m in nets["G"].modules() if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d)][-1]
        seen: list[torch.Tensor] = []
        hook = last.register_forward_hook(lambda _m, _i, out: seen.append(out))
        labels = encode_labels(data, [{}] * 16, seed=0) if spec.conditional else None
        spec.generate(nets, torch.randn(16, cfg.latent_dim), labels, cfg)
        hook.remove()
        with torch.no_grad():  # the output layer's values (before tanh) to a standard deviation of 1.5
            last.weight.mul_(1.5 / float(seen[0].std()))
            if last.bias is not None:
                last.bias.zero_()
    buf = io.BytesIO()
    torch.save(inference_payload(spec, cfg, data, state, extra), buf)
    return buf.getvalue()


def png(h: int, w: int, seed: int = 0, fmt: str = "PNG") -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, fmt)
    return buf.getvalue()


def image(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


def model_app(name: str, registry: str, **args: Any) -> dict[str, Any]:
    """A model application reached through the front door (no route of its own: two hops)."""
    return {
        "name": name,
        "route_prefix": None,
        "import_path": "gansvc.serve.app:build_app",
        "args": {
            "model": name,
            "registry": registry,
            "num_cpus": 0.2,
            "max_batch_size": 16,
            "batch_wait_timeout_s": 0.05,
            "torch_threads": 1,
            **args,
        },
    }


def routed_app(name: str, registry: str, **args: Any) -> dict[str, Any]:
    """A model application answering its own route /v1/models/<name> (one hop)."""
    return {**model_app(name, registry, **args), "route_prefix": f"/v1/models/{name}"}


def front_door(**args: Any) -> dict[str, Any]:
    return {
        "name": "gansvc",
        "route_prefix": "/",
        "import_path": "gansvc.serve.app:build_app",
        "args": {"num_cpus": 0.1, **args},
    }


def smoke_registry(ray_stack: local.StackState, tag: str, gen_metrics: dict[str, float] | None = None) -> str:
    """A fresh registry in the stack's bucket with `gen` (acgan, ATTRS) and `ugat` (ugatit, PAIRS), version 1 each."""
    registry = f"s3://{ray_stack.bucket}/{tag}-{uuid.uuid4().hex[:10]}/registry"
    register("gen", model_bytes("acgan", ATTRS, 0), "test", gen_metrics or {}, root=registry)
    register("ugat", model_bytes("ugatit", PAIRS, 1), "test", {}, root=registry)
    return registry


def deploy_config(ray_stack: local.StackState, applications: list[dict[str, Any]]) -> dict[str, Any]:
    port = ray_stack.ports.serve_http
    return {
        "proxy_location": "HeadOnly",
        "http_options": {"host": "127.0.0.1", "port": port},
        "applications": applications,
    }


@contextlib.contextmanager
def serving(ray_stack: local.StackState, config: dict[str, Any], timeout: float = 240) -> Iterator[str]:
    """Serve started on the stack's Serve port, `config` deployed through the dashboard's REST API (as `serve deploy`
    does) and running; yields the base URL; Serve is shut down at the end."""
    from ray import serve  # not at module level: see the module docstring

    from gansvc.serve.__main__ import deploy, wait_running

    port = ray_stack.ports.serve_http
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        deploy(ray_stack.dashboard_url, config)
        wait_running(ray_stack.dashboard_url, [a["name"] for a in config["applications"]], timeout=timeout)
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()


def scrape(url: str) -> str:
    try:
        return requests.get(url, timeout=10).text
    except requests.RequestException:
        return ""


def value(text: str, name: str, **labels: str) -> float:
    """The sum of a Prometheus metric's samples whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def chunked_post(
    url: str, path: str, ctype: str, total: int, chunk: int = 64 * 1024, pace_s: float = 0.002
) -> tuple[int, int, bytes]:
    """POST `total` bytes with Transfer-Encoding: chunked (no Content-Length), paced, reading the answer as soon as
    there is one. Returns (status, bytes sent when the answer came, answer head)."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=60)
    sent, answer = 0, b""
    try:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {ctype}\r\n"
            "Transfer-Encoding: chunked\r\n\r\n".encode()
        )
        piece = f"{chunk:x}\r\n".encode() + b"{" * chunk + b"\r\n"
        deadline = time.monotonic() + 90
        while sent < total and time.monotonic() < deadline:
            if select.select([sock], [], [], 0)[0]:
                break  # the server answered before the body ended
            try:
                sock.sendall(piece)
            except OSError:  # the server answered and closed: read what it said
                break
            sent += chunk
            time.sleep(pace_s)
        else:
            if sent >= total:
                sock.sendall(b"0\r\n\r\n")
        while b"\r\n\r\n" not in answer:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    finally:
        sock.close()
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0
    return status, sent, answer[:2000]


# one poll's answer: (status code or the request's error, X-Replica, X-Model-Version)
Poll = tuple[int | str, str | None, str | None]


class Poller:
    """Calls each named request in turn, every 50 ms in a background thread, while the `with` block runs; `polls`
    holds each one's answers in order (what a client saw while models were redeployed)."""

    def __init__(self, calls: dict[str, Callable[[], requests.Response]]) -> None:
        self.calls = calls
        self.polls: dict[str, list[Poll]] = {name: [] for name in calls}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, call in self.calls.items():
                try:
                    r = call()
                    self.polls[name].append(
                        (r.status_code, r.headers.get("X-Replica"), r.headers.get("X-Model-Version"))
                    )
                except requests.RequestException as err:
                    self.polls[name].append((str(err), None, None))
            time.sleep(0.05)

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join()

    def assert_served_throughout(self, kept: str, replaced: str) -> None:
        """Every poll of both models answered 200; `kept` by one replica throughout (never restarted); `replaced`
        first by version 1 and last by version 2 (old and new replicas overlap during the surge)."""
        for name in (kept, replaced):
            assert len(self.polls[name]) > 5 and all(p[0] == 200 for p in self.polls[name]), (name, self.polls[name])
        assert len({p[1] for p in self.polls[kept]}) == 1, f"{kept}'s replica was restarted: {set(self.polls[kept])}"
        versions = [p[2] for p in self.polls[replaced]]
        assert versions[0] == "1" and versions[-1] == "2", versions
