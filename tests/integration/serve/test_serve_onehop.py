"""One hop (issue 15): model applications with their own route (route_prefix /v1/models/<name>) answer the same HTTP
API as through the front door, from the replica that runs the model, without touching the front door.

Real parts: the embedded stack's Ray and S3, a real Serve instance (front door + an acgan and a ugatit smoke model,
each with its own route), real HTTP. Serve is shut down at the end of the module.
"""

from __future__ import annotations

import base64
import concurrent.futures as cf
import time
from typing import Any

import numpy as np
import pytest
import requests

from gansvc import local
from gansvc.registry import register
from tests.support.serve import (
    MAX_BYTES,
    PAIRS,
    Poller,
    chunked_post,
    deploy_config,
    front_door,
    image,
    model_bytes,
    png,
    routed_app,
    scrape,
    serving,
    smoke_registry,
    value,
)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("stack")]


@pytest.fixture(scope="module")
def url(ray_stack: local.StackState) -> Any:
    registry = smoke_registry(ray_stack, "t-1hop")
    with serving(
        ray_stack,
        deploy_config(
            ray_stack,
            [
                front_door(max_request_bytes=MAX_BYTES, expect_models=["gen", "ugat"]),
                routed_app("gen", registry),
                routed_app("ugat", registry),
            ],
        ),
    ) as base:
        yield base


def _gen(url: str, name: str = "gen", **body: Any) -> requests.Response:
    return requests.post(f"{url}/v1/models/{name}/generate", json=body, timeout=120)


def _tr(url: str, data: bytes, name: str = "ugat", **query: Any) -> requests.Response:
    return requests.post(
        f"{url}/v1/models/{name}/translate", params=query, data=data, headers={"Content-Type": "image/png"}, timeout=120
    )


@pytest.mark.timeout(420)  # the first test also waits for the module fixture's deploy (up to 240 s)
def test_model_requests_never_touch_the_front_door(url: str, ray_stack: local.StackState) -> None:
    """The model replica counts the requests (deployment GanModel); the front door's counters of those routes do not
    move: the request went proxy -> model replica. The front door still answers its own routes."""

    def counts(text: str) -> tuple[list[float], list[float]]:
        """(model replicas' counts of their routes, the front door's counts of the same routes); the series are
        cumulative over the session (earlier modules' Serve instances): compare before and after"""
        routes = (("gen", "generate"), ("ugat", "translate"))
        return (
            [
                value(
                    text,
                    "ray_gansvc_http_requests_total",
                    model=m,
                    endpoint=e,
                    status="200",
                    deployment="GanModel",
                    application=m,
                )
                for m, e in routes
            ],
            [value(text, "ray_gansvc_http_requests_total", endpoint=e, deployment="Ingress") for _, e in routes],
        )

    n = 6
    model0, front0 = counts(scrape(ray_stack.metrics_url))
    for i in range(n):
        assert _gen(url, n=1, seed=i).status_code == 200
        assert _tr(url, png(16, 16, seed=i)).status_code == 200
    assert requests.get(f"{url}/healthz", timeout=30).json() == {"status": "ok"}
    models = {m["name"] for m in requests.get(f"{url}/v1/models", timeout=30).json()["models"]}
    assert models == {"gen", "ugat"}
    deadline, model, front = time.monotonic() + 60, model0, front0
    while time.monotonic() < deadline:  # Ray exports custom metrics every few seconds
        text = scrape(ray_stack.metrics_url)
        model, front = counts(text)
        healthz = value(text, "ray_gansvc_http_requests_total", endpoint="healthz", deployment="Ingress")
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
    assert np.array_equal(np.asarray(image(base64.b64decode(js["images"][0]))), np.asarray(image(one.content)))
    both = _tr(url, png(20, 28, seed=1), heatmap="true")
    assert both.status_code == 200 and both.json()["width"] == 28 and both.json()["height"] == 20
    noise = np.random.default_rng(0).integers(0, 256, MAX_BYTES + 10, dtype=np.uint8).tobytes()
    cases = [  # the front door's contract, with the front door's limits (max_request_bytes = MAX_BYTES)
        (_gen(url, n=65), 422, "n_out_of_range", "at most 64"),
        (_gen(url, n=True), 422, "invalid_request", "n"),
        (_gen(url, labels={"hair_color": "pink"}), 422, "invalid_labels", "allowed: blue, red, green"),
        (_gen(url, n=1, uri="file:///etc/passwd"), 422, "invalid_request", "Extra inputs are not permitted"),
        (_gen(url, "ugat", n=1), 400, "wrong_task", "/v1/models/ugat/translate"),
        (_tr(url, png(16, 16), name="gen"), 400, "wrong_task", "/v1/models/gen/generate"),
        (_tr(url, png(70, 70)), 413, "image_too_large", f"limit is {4 * 32 * 32}"),
        (_tr(url, png(4, 40)), 400, "image_too_small", "at least 8"),
        (_tr(url, noise), 413, "payload_too_large", str(MAX_BYTES)),
        (_tr(url, png(16, 16), direction="c2d"), 422, "invalid_request", "direction"),
        (
            requests.post(f"{url}/v1/models/ugat/translate", data=png(16, 16), timeout=30),
            415,
            "unsupported_media_type",
            "image/png",
        ),
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
    status, sent, answer = chunked_post(url, "/v1/models/ugat/translate", "image/png", 400 * MAX_BYTES)
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
def test_one_hop_model_replaced_by_redeploy_while_serving(url: str, ray_stack: local.StackState) -> None:
    """A new revision of a one-hop model: its old replicas answer on its route until the new ones have loaded (the
    route stays), the other model keeps its replica."""
    from gansvc.serve.__main__ import declarative_apps, deploy, wait_running

    running, details = declarative_apps(ray_stack.dashboard_url)
    ugat = next(a for a in running if a["name"] == "ugat")
    register("ugat", model_bytes("ugatit", PAIRS, 9), "test", {}, root=ugat["args"]["registry"])  # v2
    upload = png(18, 26, seed=4)
    with Poller({"gen": lambda: _gen(url, n=1, seed=3), "ugat": lambda: _tr(url, upload)}) as poller:
        polls = poller.polls
        time.sleep(0.5)
        new = {**ugat, "args": {**ugat["args"], "revision": "2"}}
        deploy(
            ray_stack.dashboard_url,
            {
                "proxy_location": details.get("proxy_location") or "HeadOnly",
                "http_options": details.get("http_options") or {},
                "applications": [new],
            },
        )
        wait_running(ray_stack.dashboard_url, ["ugat"], timeout=240)
        deadline = time.monotonic() + 60
        while not (polls["ugat"] and polls["ugat"][-1][2] == "2"):
            assert time.monotonic() < deadline, "the new version never answered"
            time.sleep(0.3)
        time.sleep(0.5)
    poller.assert_served_throughout(kept="gen", replaced="ugat")
