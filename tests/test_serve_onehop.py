"""One hop (issue 15): model applications with their own route (route_prefix /v1/models/<name>) answer the same HTTP
API as through the front door, from the replica that runs the model, without touching the front door.

Real parts: the embedded stack's Ray and S3, a real Serve instance (front door + an acgan and a ugatit smoke model,
each with its own route), real HTTP. Serve is shut down at the end of the module.
"""

from __future__ import annotations

import base64
import concurrent.futures as cf
import threading
import time
import uuid
from typing import Any

import numpy as np
import pytest
import requests

from gansvc.registry import register
from tests.test_serve import (ATTRS, MAX_BYTES, PAIRS, _chunked_post, _image, _model_app, _model_bytes, _png, _scrape,
                              _value)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("stack")]


def _routed(name: str, registry: str, **args: Any) -> dict[str, Any]:
    return {**_model_app(name, registry, **args), "route_prefix": f"/v1/models/{name}"}


@pytest.fixture(scope="module")
def url(ray_stack: Any) -> Any:
    from ray import serve

    from gansvc.serve.__main__ import deploy, wait_running

    registry = f"s3://{ray_stack.bucket}/t-1hop-{uuid.uuid4().hex[:10]}/registry"
    register("gen", _model_bytes("acgan", ATTRS, 0), "test", {}, root=registry)
    register("ugat", _model_bytes("ugatit", PAIRS, 1), "test", {}, root=registry)
    port = ray_stack.ports.serve_http
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    config = {"proxy_location": "HeadOnly", "http_options": {"host": "127.0.0.1", "port": port},
              "applications": [
                  {"name": "gansvc", "route_prefix": "/", "import_path": "gansvc.serve.app:build_app",
                   "args": {"num_cpus": 0.1, "max_request_bytes": MAX_BYTES, "expect_models": ["gen", "ugat"]}},
                  _routed("gen", registry), _routed("ugat", registry)]}
    try:
        deploy(ray_stack.dashboard_url, config)
        wait_running(ray_stack.dashboard_url, ["gansvc", "gen", "ugat"], timeout=240)
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()


def _gen(url: str, name: str = "gen", **body: Any) -> requests.Response:
    return requests.post(f"{url}/v1/models/{name}/generate", json=body, timeout=120)


def _tr(url: str, data: bytes, name: str = "ugat", **query: Any) -> requests.Response:
    return requests.post(f"{url}/v1/models/{name}/translate", params=query, data=data,
                         headers={"Content-Type": "image/png"}, timeout=120)


@pytest.mark.timeout(420)  # the first test also waits for the module fixture's deploy (up to 240 s)
def test_model_requests_never_touch_the_front_door(url: str, ray_stack: Any) -> None:
    """The model replica counts the requests (deployment GanModel); the front door's counters of those routes do not
    move: the request went proxy -> model replica. The front door still answers its own routes."""
    def counts(text: str) -> tuple[list[float], list[float]]:
        """(model replicas' counts of their routes, the front door's counts of the same routes); the series are
        cumulative over the session (earlier modules' Serve instances): compare before and after"""
        routes = (("gen", "generate"), ("ugat", "translate"))
        return ([_value(text, "ray_gansvc_http_requests_total", model=m, endpoint=e, status="200",
                        deployment="GanModel", application=m) for m, e in routes],
                [_value(text, "ray_gansvc_http_requests_total", endpoint=e, deployment="Ingress") for _, e in routes])

    n = 6
    model0, front0 = counts(_scrape(ray_stack.metrics_url))
    for i in range(n):
        assert _gen(url, n=1, seed=i).status_code == 200
        assert _tr(url, _png(16, 16, seed=i)).status_code == 200
    assert requests.get(f"{url}/healthz", timeout=30).json() == {"status": "ok"}
    models = {m["name"] for m in requests.get(f"{url}/v1/models", timeout=30).json()["models"]}
    assert models == {"gen", "ugat"}
    deadline, model, front = time.monotonic() + 60, model0, front0
    while time.monotonic() < deadline:  # Ray exports custom metrics every few seconds
        text = _scrape(ray_stack.metrics_url)
        model, front = counts(text)
        healthz = _value(text, "ray_gansvc_http_requests_total", endpoint="healthz", deployment="Ingress")
        if min(b - a for a, b in zip(model0, model, strict=True)) >= n and healthz >= 1:
            break
        time.sleep(2)
    assert min(b - a for a, b in zip(model0, model, strict=True)) >= n, f"the replicas did not count: {model}"
    assert front == front0, f"model requests went through the front door: {front0} -> {front}"


@pytest.mark.timeout(420)  # the first test also waits for the module fixture's deploy (up to 240 s)
def test_one_hop_serves_the_same_api(url: str) -> None:
    from ray import serve

    from gansvc.serve.schemas import GenJob

    one = _gen(url, n=1, seed=7)
    assert one.status_code == 200 and one.headers["content-type"] == "image/png", one.text
    assert one.headers["X-Seed"] == "7" and one.headers["X-Model-Version"] == "1" and one.headers["X-Replica"]
    direct = serve.get_deployment_handle("GanModel", "gen").generate.remote(GenJob(1, 7, None, None, "png"))
    assert direct.result(timeout_s=60).pngs[0] == one.content, "the same job as through a handle: the same image"
    js = _gen(url, n=3, seed=7, format="json").json()
    assert js["model"] == "gen" and len(js["images"]) == 3
    assert np.array_equal(np.asarray(_image(base64.b64decode(js["images"][0]))), np.asarray(_image(one.content)))
    both = _tr(url, _png(20, 28, seed=1), heatmap="true")
    assert both.status_code == 200 and both.json()["width"] == 28 and both.json()["height"] == 20
    noise = np.random.default_rng(0).integers(0, 256, MAX_BYTES + 10, dtype=np.uint8).tobytes()
    cases = [  # the front door's contract, with the front door's limits (max_request_bytes = MAX_BYTES)
        (_gen(url, n=65), 422, "n_out_of_range", "at most 64"),
        (_gen(url, n=True), 422, "invalid_request", "n"),
        (_gen(url, labels={"hair_color": "pink"}), 422, "invalid_labels", "allowed: blue, red, green"),
        (_gen(url, n=1, uri="file:///etc/passwd"), 422, "invalid_request", "Extra inputs are not permitted"),
        (_gen(url, "ugat", n=1), 400, "wrong_task", "/v1/models/ugat/translate"),
        (_tr(url, _png(16, 16), name="gen"), 400, "wrong_task", "/v1/models/gen/generate"),
        (_tr(url, _png(70, 70)), 413, "image_too_large", f"limit is {4 * 32 * 32}"),
        (_tr(url, _png(4, 40)), 400, "image_too_small", "at least 8"),
        (_tr(url, noise), 413, "payload_too_large", str(MAX_BYTES)),
        (_tr(url, _png(16, 16), direction="c2d"), 422, "invalid_request", "direction"),
        (requests.post(f"{url}/v1/models/ugat/translate", data=_png(16, 16), timeout=30), 415,
         "unsupported_media_type", "image/png"),
        (_gen(url, "gen2", n=1), 404, "unknown_model", "gen, ugat"),  # not a prefix match of /v1/models/gen
        (requests.post(f"{url}/v1/models/gen/other", json={}, timeout=30), 404, "not_found", ""),
    ]
    for i, (resp, status, code, text) in enumerate(cases):
        assert resp.status_code == status, (i, resp.status_code, resp.text)
        err = resp.json()["error"]
        assert err["code"] == code and text in err["message"], (i, err)
        assert resp.headers["X-Error-Code"] == code
    get = requests.get(f"{url}/v1/models/gen/generate", timeout=30)
    assert get.status_code == 405 and get.headers.get("Allow") == "POST"
    status, sent, answer = _chunked_post(url, "/v1/models/ugat/translate", "image/png", 400 * MAX_BYTES)
    assert status == 413 and b"payload_too_large" in answer and sent < 100 * MAX_BYTES, (status, sent)


@pytest.mark.timeout(420)  # the first test also waits for the module fixture's deploy (up to 240 s)
def test_one_hop_requests_are_batched(url: str) -> None:
    def gen(i: int) -> int:
        r = _gen(url, n=1 + i % 2, seed=i, format="json")
        assert r.status_code == 200, r.text
        return int(r.headers["X-Batch-Size"])

    with cf.ThreadPoolExecutor(16) as pool:
        sizes = list(pool.map(gen, range(48)))
    assert max(sizes) > 1, f"16 concurrent requests never shared a forward pass: {sizes}"


@pytest.mark.timeout(420)  # the first test also waits for the module fixture's deploy (up to 240 s)
def test_one_hop_model_replaced_by_redeploy_while_serving(url: str, ray_stack: Any) -> None:
    """A new revision of a one-hop model: its old replicas answer on its route until the new ones have loaded (the
    route stays), the other model keeps its replica."""
    from gansvc.serve.__main__ import declarative_apps, deploy, wait_running

    running, details = declarative_apps(ray_stack.dashboard_url)
    ugat = next(a for a in running if a["name"] == "ugat")
    register("ugat", _model_bytes("ugatit", PAIRS, 9), "test", {}, root=ugat["args"]["registry"])  # v2
    stop, polls = threading.Event(), {"gen": [], "ugat": []}
    png = _png(18, 26, seed=4)

    def poll() -> None:
        while not stop.is_set():
            for name, call in (("gen", lambda: _gen(url, n=1, seed=3)), ("ugat", lambda: _tr(url, png))):
                try:
                    r = call()
                    polls[name].append((r.status_code, r.headers.get("X-Replica"), r.headers.get("X-Model-Version")))
                except requests.RequestException as err:
                    polls[name].append((str(err), None, None))
            time.sleep(0.05)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        time.sleep(0.5)
        new = {**ugat, "args": {**ugat["args"], "revision": "2"}}
        deploy(ray_stack.dashboard_url, {"proxy_location": details.get("proxy_location") or "HeadOnly",
                                         "http_options": details.get("http_options") or {}, "applications": [new]})
        wait_running(ray_stack.dashboard_url, ["ugat"], timeout=240)
        deadline = time.monotonic() + 60
        while not (polls["ugat"] and polls["ugat"][-1][2] == "2"):
            assert time.monotonic() < deadline, "the new version never answered"
            time.sleep(0.3)
        time.sleep(0.5)
    finally:
        stop.set()
        poller.join()
    for name in ("gen", "ugat"):
        assert len(polls[name]) > 5 and all(p[0] == 200 for p in polls[name]), (name, polls[name])
    assert len({p[1] for p in polls["gen"]}) == 1, f"gen's replica was restarted: {set(polls['gen'])}"
    versions = [p[2] for p in polls["ugat"]]
    assert versions[0] == "1" and versions[-1] == "2", versions
