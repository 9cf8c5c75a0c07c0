"""Ray Serve: the HTTP API over real HTTP on a real Serve instance of the embedded stack, models in a real S3 registry.

One module-scoped deployment (front door + an acgan and a ugatit smoke model, deployed declaratively through the
dashboard's Serve REST API as `serve deploy` does); a cyclegan one-way import is added later by `python -m
gansvc.serve` while the acgan model is polled. Serve is shut down at the end of the module.
"""

from __future__ import annotations

import base64
import concurrent.futures as cf
import io
import re
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import numpy as np
import pytest
import requests
import torch
import yaml
from PIL import Image

from gansvc import local
from gansvc.registry import register
from gansvc.serve.uploads import ApiError, multipart_file
from tests.support.serve import MAX_BYTES, PAIRS, Poller, deploy_config, front_door, serving, smoke_registry
from tests.support.serve import chunked_post as _chunked_post
from tests.support.serve import image as _image
from tests.support.serve import model_app as _model_app
from tests.support.serve import model_bytes as _model_bytes
from tests.support.serve import png as _png
from tests.support.serve import scrape as _scrape
from tests.support.serve import value as _value

# Every test runs with the stack's environment: Ray reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER (keep 127.0.0.1) when it is
# first imported, so nothing here imports Ray (gansvc.serve.app / .model) before the `stack` fixture has set it.
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("stack")]
ROOT = Path(__file__).resolve().parents[3]
MAX_PIXELS = 4 * PAIRS.height * PAIRS.width  # the default translate limit: 4 x the model's training pixels


# ------------------------------------------------------------------------------------------- no cluster needed


def test_config_file_validates_and_builds() -> None:
    from gansvc.serve.app import build_app, check_config, deploy_config, load_config

    config = load_config(ROOT / "serve" / "gansvc.yaml")
    schema = check_config(config)  # ServeDeploySchema + our strict args schemas
    assert schema.http_options.host == "127.0.0.1"
    apps = {a.name: a for a in schema.applications}
    assert apps["gansvc"].route_prefix == "/"
    models = [a for a in schema.applications if "model" in (a.args or {})]
    # one hop by default: each model application answers its own route
    assert models and all(a.route_prefix == f"/v1/models/{a.name}" and a.args["num_gpus"] == 0 for a in models)
    for app in schema.applications:
        built = build_app(app.args)
        assert type(built).__name__ == "Application"
    derived = deploy_config(config, ["shapes-dcgan", "new-model"], port=12345, registry="s3://b/reg")
    names = [a["name"] for a in derived["applications"]]
    assert names == ["gansvc", "shapes-dcgan", "new-model"] and derived["http_options"]["port"] == 12345
    new = derived["applications"][-1]["args"]
    assert new["model"] == "new-model" and new["registry"] == "s3://b/reg"
    bad = {**config, "applications": [{**config["applications"][0], "args": {"max_pixles": 10}}]}
    with pytest.raises(ValueError, match="max_pixles"):
        check_config(bad)


def test_model_route_is_its_name_or_none() -> None:
    """One hop: a model application may have its own route, /v1/models/<its name> (Serve's proxy sends its requests
    straight to the model replica), or none (through the front door); any other route is refused before deploying,
    and the CLI's derived config keeps each entry's choice, re-derived for the models it copies."""
    from gansvc.serve.app import check_config, deploy_config, model_route

    config = yaml.safe_load((ROOT / "serve" / "gansvc.yaml").read_text())
    front, first = config["applications"][0], config["applications"][1]
    routed = {**config, "applications": [front, {**first, "route_prefix": model_route(first["name"])}]}
    check_config(routed)
    for bad in ("/v1/models/other", "/models/" + first["name"]):
        wrong = {**config, "applications": [front, {**first, "route_prefix": bad}]}
        with pytest.raises(ValueError, match=f"served at '/v1/models/{first['name']}'"):
            check_config(wrong)
    derived = deploy_config(routed, [first["name"], "new-model"])
    routes = {a["name"]: a["route_prefix"] for a in derived["applications"]}
    assert routes == {"gansvc": "/", first["name"]: model_route(first["name"]), "new-model": "/v1/models/new-model"}
    unrouted = {**config, "applications": [front, {**first, "route_prefix": None}]}  # two hops, kept as chosen
    assert all(a["route_prefix"] is None for a in deploy_config(unrouted, [first["name"], "x"])["applications"][1:])
    assert (
        deploy_config({**config, "applications": [front]}, ["y"])["applications"][1]["route_prefix"] == "/v1/models/y"
    )  # no model entry to copy: one hop


def test_serve_never_imports_training_or_ingestion() -> None:
    check = (
        "import sys; import gansvc.serve.app, gansvc.serve.ingress, gansvc.serve.model, gansvc.serve.__main__; "
        "print(sorted(m for m in sys.modules if m.startswith(('gansvc.train', 'gansvc.tune', "
        "'gansvc.data.pipeline', 'gansvc.data.ingest'))))"
    )
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr


def test_pixel_limit_follows_the_training_size() -> None:
    from gansvc.serve.schemas import IngressArgs, ModelArgs

    assert ModelArgs(model="m").pixel_limit(256, 256) == 4 * 256 * 256, "default: 4 x the training pixels"
    assert ModelArgs(model="m").pixel_limit(32, 48) == 4 * 32 * 48
    assert ModelArgs(model="m", max_pixels=5000).pixel_limit(256, 256) == 5000, "configurable per model"
    assert IngressArgs().max_pixels is None, "no fixed 1 M default at the front door: each model's own limit"


def _rgba_png(h: int, w: int) -> tuple[bytes, bytes]:
    """An RGBA PNG whose transparent half hides black pixels, and the same image composited on white (RGB PNG)."""
    rng = np.random.default_rng(5)
    rgba = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
    rgba[:, : w // 2, :3] = 0  # black under full transparency: dropping alpha shows black, compositing shows white
    rgba[:, : w // 2, 3] = 0
    rgba[: h // 2, w // 2 :, 3] = 128  # half transparent
    rgba[h // 2 :, w // 2 :, 3] = 255
    a = rgba[..., 3:].astype(np.float64) / 255
    white = np.clip(np.round(rgba[..., :3] * a + 255 * (1 - a)), 0, 255).astype(np.uint8)
    out = []
    for arr, mode in ((rgba, "RGBA"), (white, "RGB")):
        buf = io.BytesIO()
        Image.fromarray(arr, mode).save(buf, "PNG")
        out.append(buf.getvalue())
    return out[0], out[1]


def test_uploads_composite_transparency_like_training() -> None:
    from gansvc.data.pipeline import decode
    from gansvc.serve.uploads import decode_image

    rgba, on_white = _rgba_png(16, 20)
    served = decode_image(rgba, 3, 1 << 20, 8)
    trained = np.asarray(decode(rgba, 3))
    assert np.array_equal(served, trained), "serving decodes a transparent upload exactly as training decodes it"
    assert (served[:, :10] == 255).all(), "fully transparent pixels are white, not the black beneath"
    assert np.abs(served.astype(int) - decode_image(on_white, 3, 1 << 20, 8).astype(int)).max() <= 1
    gray = decode_image(rgba, 1, 1 << 20, 8)
    assert np.array_equal(gray[..., 0], np.asarray(decode(rgba, 1)))


def test_truncation_and_multipart_helpers() -> None:
    from gansvc.serve.model import truncate

    z = torch.randn(64, 16, generator=torch.Generator().manual_seed(0)) * 3
    t = truncate(z, 0.5, seed=3)
    assert t.abs().max() <= 0.5 and torch.equal(t, truncate(z, 0.5, seed=3))
    kept = z.abs() <= 0.5
    assert torch.equal(t[kept], z[kept]), "components inside the threshold are kept"
    png = _png(9, 9)
    body = (
        b'--XyZ\r\nContent-Disposition: form-data; name="note"\r\n\r\nhi\r\n--XyZ\r\n'
        b'Content-Disposition: form-data; name="image"; filename="a.png"\r\nContent-Type: image/png\r\n\r\n'
        + png
        + b"\r\n--XyZ--\r\n"
    )
    assert multipart_file(body, "multipart/form-data; boundary=XyZ") == png
    with pytest.raises(ApiError) as err:
        multipart_file(body.replace(b"image/png", b"text/html"), "multipart/form-data; boundary=XyZ")
    assert err.value.status == 415


# ------------------------------------------------------------------------------------------------ on Serve


class Served:
    def __init__(self, url: str, dashboard: str, metrics_url: str, config_path: Path, registry: str) -> None:
        self.url, self.dashboard, self.metrics_url = url, dashboard, metrics_url
        self.config_path, self.registry = config_path, registry

    def gen(self, name: str = "gen", **body: Any) -> requests.Response:
        return requests.post(f"{self.url}/v1/models/{name}/generate", json=body, timeout=120)

    def tr(self, data: bytes, name: str = "ugat", ctype: str = "image/png", **query: Any) -> requests.Response:
        return requests.post(
            f"{self.url}/v1/models/{name}/translate",
            params=query,
            data=data,
            headers={"Content-Type": ctype},
            timeout=120,
        )


@pytest.fixture(scope="module")
def served(ray_stack: local.StackState, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from gansvc.serve.app import check_config

    registry = smoke_registry(ray_stack, "t-serve", gen_metrics={"fid": 12.5})
    one_way = {"directions": ["a2b"]}
    register("cyc1", _model_bytes("cyclegan", PAIRS, 2, one_way), "test", {}, root=registry, extra=one_way)
    config = deploy_config(
        ray_stack,
        [
            front_door(max_request_bytes=MAX_BYTES, expect_models=["gen", "ugat"]),
            _model_app("gen", registry),
            _model_app("ugat", registry),
        ],
    )
    # the redeploy: cyc1 (a copy of the file's first model app) added, ugat replaced (a new revision), gen untouched
    path = tmp_path_factory.mktemp("serve") / "gansvc-test.yaml"
    apps = [config["applications"][0], _model_app("cyc1", registry), _model_app("ugat", registry, revision="2")]
    path.write_text(yaml.safe_dump({**config, "applications": apps}))
    check_config(config)
    with serving(ray_stack, config) as url:
        deadline = time.monotonic() + 60
        while requests.get(f"{url}/readyz", timeout=30).status_code != 200:
            assert time.monotonic() < deadline, requests.get(f"{url}/readyz", timeout=30).text
            time.sleep(0.5)
        yield Served(url, ray_stack.dashboard_url, ray_stack.metrics_url, path, registry)


def test_health_models_and_docs(served: Served) -> None:
    assert requests.get(f"{served.url}/healthz", timeout=30).json() == {"status": "ok"}
    ready = requests.get(f"{served.url}/readyz", timeout=30)
    assert ready.status_code == 200 and ready.json()["models"] == {"gen": "RUNNING", "ugat": "RUNNING"}
    models = {m["name"]: m for m in requests.get(f"{served.url}/v1/models", timeout=30).json()["models"]}
    assert set(models) == {"gen", "ugat"}
    gen, ugat = models["gen"], models["ugat"]
    assert gen["family"] == "acgan" and gen["task"] == "generate" and gen["conditional"]
    assert gen["attributes"] == {"hair_color": ["blue", "red", "green"], "eye_color": ["brown", "blue"]}
    assert gen["image"] == {"height": 16, "width": 16, "channels": 3} and gen["metrics"] == {"fid": 12.5}
    assert gen["version"] == 1 and gen["max_n"] == 64
    assert ugat["task"] == "translate" and ugat["directions"] == ["a2b", "b2a"] and ugat["heatmap"]
    docs = requests.get(f"{served.url}/docs", timeout=30)
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    paths = requests.get(f"{served.url}/openapi.json", timeout=30).json()["paths"]
    assert {"/v1/models", "/v1/models/{name}/generate", "/v1/models/{name}/translate", "/healthz", "/readyz"} <= set(
        paths
    )


class _Refs(HTMLParser):
    """The URLs an HTML page makes a browser load: <script src>, <link href>, <img src> (and ReDoc's spec-url)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value and (name, tag) in (("src", "script"), ("href", "link"), ("src", "img"), ("spec-url", "redoc")):
                self.urls.append(value)


def test_docs_pages_load_nothing_from_other_hosts(served: Served) -> None:
    """/docs (Swagger UI) and /redoc work offline: every script, style and icon they load is served by the front door
    itself (clusters are often offline; FastAPI's default pages load a CDN), with its content type."""
    types = {".js": "text/javascript", ".css": "text/css", ".png": "image/png", ".json": "application/json"}
    for page, needed in (("/docs", {".js", ".css", ".json"}), ("/redoc", {".js", ".json"})):
        html = requests.get(f"{served.url}{page}", timeout=30)
        assert html.status_code == 200 and html.headers["content-type"].startswith("text/html"), (page, html.text)
        refs = _Refs()
        refs.feed(html.text)
        urls = refs.urls + re.findall(r"url: '([^']+)'", html.text)  # Swagger UI's OpenAPI document URL
        assert {Path(u).suffix for u in urls} >= needed, (page, urls)
        assert not re.findall(r"(?:https?:)?//[\w.-]+", " ".join(urls)), f"{page} loads from another host: {urls}"
        assert not re.search(r"https?://(?!127\.0\.0\.1|localhost)", html.text), f"{page} names another host"
        for url in urls:
            asset = requests.get(urljoin(f"{served.url}{page}", url), timeout=30)
            assert asset.status_code == 200 and asset.content, (page, url, asset.status_code)
            assert asset.headers["content-type"].split(";")[0] == types[Path(url).suffix], (url, asset.headers)
    assert requests.get(f"{served.url}/docs/assets/nope.js", timeout=30).json()["error"]["code"] == "not_found"


def test_generate_is_seeded(served: Served) -> None:
    one = served.gen(n=1, seed=7)
    assert one.status_code == 200 and one.headers["content-type"] == "image/png", one.text
    assert _image(one.content).size == (16, 16) and one.headers["X-Seed"] == "7"
    assert served.gen(n=1, seed=7).content == one.content, "same seed, same model: same image"
    assert served.gen(n=1, seed=8).content != one.content
    free = served.gen(n=1)  # no seed: the server picks one and says which
    assert served.gen(n=1, seed=int(free.headers["X-Seed"])).content == free.content
    grid = served.gen(n=4, seed=7)
    assert grid.headers["content-type"] == "image/png" and _image(grid.content).size == (2 + 2 * 18, 2 + 2 * 18)
    js = served.gen(n=3, seed=7, format="json").json()
    assert js["seed"] == 7 and js["model"] == "gen" and len(js["images"]) == 3
    first = base64.b64decode(js["images"][0])
    assert np.array_equal(np.asarray(_image(first)), np.asarray(_image(one.content))), "image 0 of seed 7 = n=1 image"
    blue = served.gen(n=2, seed=5, labels={"hair_color": "blue", "eye_color": "brown"}, format="json").json()
    red = served.gen(n=2, seed=5, labels={"hair_color": "red", "eye_color": "brown"}, format="json").json()
    assert blue["images"] != red["images"], "labels condition the images"
    per_image = served.gen(
        n=2,
        seed=5,
        format="json",
        labels=[{"hair_color": "blue", "eye_color": "brown"}, {"hair_color": "red", "eye_color": "brown"}],
    ).json()
    assert per_image["images"] == [blue["images"][0], red["images"][1]]
    trunc = served.gen(n=1, seed=7, truncation=0.5)
    assert trunc.status_code == 200 and trunc.content != one.content
    assert served.gen(n=1, seed=7, truncation=0.5).content == trunc.content


def test_translate_sizes_directions_heatmap(served: Served) -> None:
    png = _png(20, 28, seed=1)  # non-square, not a multiple of 4
    a2b, b2a = served.tr(png, direction="a2b"), served.tr(png, direction="b2a")
    for r in (a2b, b2a):
        assert r.status_code == 200 and r.headers["content-type"] == "image/png", r.text
        assert _image(r.content).size == (28, 20)
    assert a2b.content != b2a.content
    form = requests.post(
        f"{served.url}/v1/models/ugat/translate", files={"image": ("x.png", png, "image/png")}, timeout=120
    )
    assert form.status_code == 200 and form.content == a2b.content, "multipart and raw uploads agree"
    jpeg = served.tr(_png(33, 17, seed=2, fmt="JPEG"), ctype="image/jpeg", direction="b2a")
    assert jpeg.status_code == 200 and _image(jpeg.content).size == (17, 33)
    both = served.tr(png, direction="a2b", heatmap="true")
    assert both.status_code == 200 and both.headers["content-type"] == "application/json"
    body = both.json()
    assert (body["width"], body["height"]) == (28, 20)
    assert base64.b64decode(body["image"]) == a2b.content
    heat = _image(base64.b64decode(body["heatmap"]))
    assert heat.size == (28, 20) and heat.mode == "L"


def _chunks(data: bytes) -> Any:
    for i in range(0, len(data), 8192):
        yield data[i : i + 8192]


def test_bad_input_gets_clear_4xx(served: Served) -> None:
    big = _png(70, 70)  # 4900 pixels > MAX_PIXELS, small in bytes
    noise = np.random.default_rng(0).integers(0, 256, MAX_BYTES + 10, dtype=np.uint8).tobytes()
    cases = [
        (served.gen("nope", n=1), 404, "unknown_model", "gen, ugat"),
        (served.tr(_png(16, 16), name="nope"), 404, "unknown_model", "no model named 'nope'"),
        (requests.post(f"{served.url}/v1/models/..%2F..%2Fetc%2Fpasswd/generate", json={}, timeout=30), 404, None, ""),
        (served.gen(n=65), 422, "n_out_of_range", "at most 64"),
        (served.gen(n=0), 422, "invalid_request", "greater than or equal to 1"),
        (served.gen(labels={"hair_color": "pink"}), 422, "invalid_labels", "allowed: blue, red, green"),
        (served.gen(labels={"size": "big"}), 422, "invalid_labels", "attributes: hair_color, eye_color"),
        (served.gen(labels=[{"hair_color": "blue"}], n=2), 422, "invalid_labels", "n=2"),
        (served.gen(n=2, format="png"), 422, "invalid_format", "n=1"),
        (served.gen(n=1, uri="file:///etc/passwd"), 422, "invalid_request", "uri: Extra inputs are not permitted"),
        (served.gen("ugat", n=1), 400, "wrong_task", "/v1/models/ugat/translate"),
        (served.tr(_png(16, 16), name="gen"), 400, "wrong_task", "/v1/models/gen/generate"),
        (served.tr(b"\x89PNG\r\n\x1a\n" + b"\0" * 64), 400, "invalid_image", "PNG or JPEG"),
        (served.tr(_png(16, 16)[:120]), 400, "invalid_image", "corrupt or truncated"),
        (served.tr(b"hello, not an image"), 400, "invalid_image", "PNG or JPEG"),
        (served.tr(_png(4, 40)), 400, "image_too_small", "at least 8"),
        (served.tr(big), 413, "image_too_large", f"limit is {MAX_PIXELS}"),
        (served.tr(noise), 413, "payload_too_large", str(MAX_BYTES)),
        (
            requests.post(
                f"{served.url}/v1/models/ugat/translate",
                data=_chunks(noise),  # no Content-Length
                headers={"Content-Type": "image/png"},
                timeout=60,
            ),
            413,
            "payload_too_large",
            str(MAX_BYTES),
        ),
        (served.tr(_png(16, 16), ctype="text/plain"), 415, "unsupported_media_type", "image/png"),
        (served.tr(b'{"path": "/etc/passwd"}', ctype="application/json"), 415, "unsupported_media_type", ""),
        (
            requests.post(f"{served.url}/v1/models/ugat/translate", files={"path": (None, "/etc/passwd")}, timeout=30),
            400,
            "invalid_multipart",
            "field named 'image'",
        ),
        (served.tr(_png(16, 16), direction="c2d"), 422, "invalid_request", "direction"),
        (served.tr(_png(16, 16), heatmap="maybe"), 422, "invalid_request", "heatmap"),
        (
            requests.post(
                f"{served.url}/v1/models/gen/generate",
                data=b'{"n": 1,',
                timeout=30,
                headers={"Content-Type": "application/json"},
            ),
            422,
            "invalid_request",
            "the body is not valid JSON at character",
        ),
    ]
    for i, (resp, status, code, text) in enumerate(cases):
        assert resp.status_code == status, (i, resp.status_code, resp.text)
        if code is not None:
            err = resp.json()["error"]
            assert err["code"] == code and text in err["message"], (i, err)
    # the replicas keep serving
    assert served.gen(n=1, seed=1).status_code == 200 and served.tr(_png(16, 16)).status_code == 200


def _burst(served: Served, threads: int = 16, rounds: int = 2) -> tuple[list[int], list[int]]:
    """Concurrent generate (different n) and translate (two sizes) requests; returns their X-Batch-Size values."""

    def gen(i: int) -> tuple[int, list[str]]:
        r = served.gen(n=1 + i % 3, seed=100 + i, format="json")
        assert r.status_code == 200 and len(r.json()["images"]) == 1 + i % 3, r.text
        return int(r.headers["X-Batch-Size"]), r.json()["images"]

    def tr(i: int) -> int:
        h, w = (16, 24) if i % 2 else (20, 12)
        r = served.tr(_png(h, w, seed=i), direction="a2b" if i % 3 else "b2a")
        assert r.status_code == 200 and _image(r.content).size == (w, h), r.text
        return int(r.headers["X-Batch-Size"])

    with cf.ThreadPoolExecutor(threads) as pool:
        gens = list(pool.map(gen, range(threads * rounds)))
        trs = list(pool.map(tr, range(threads * rounds)))
    alone = served.gen(n=2, seed=101, format="json")  # request 1 of the burst, unbatched
    assert alone.headers["X-Batch-Size"] == "1"
    for batched, single in zip(gens[1][1], alone.json()["images"], strict=True):
        a, b = (np.asarray(_image(base64.b64decode(x)), dtype=int) for x in (batched, single))
        assert np.abs(a - b).max() <= 1, "batching with other requests must not change a request's images"
    return [g[0] for g in gens], trs


def test_concurrent_requests_are_batched(served: Served) -> None:
    gens, trs = _burst(served)
    assert max(gens) > 1, f"16 concurrent generate requests never shared a forward pass: {gens}"
    assert max(trs) > 1, f"16 concurrent translate requests never shared a batch: {trs}"


def test_metrics_are_exported_for_prometheus(served: Served) -> None:
    gens, _ = _burst(served, threads=8, rounds=1)
    served.gen("nope")
    want = {
        ("ray_gansvc_http_requests_total", (("model", "gen"), ("endpoint", "generate"), ("status", "200"))): 8,
        ("ray_gansvc_http_errors_total", (("endpoint", "generate"), ("kind", "unknown_model"))): 1,
        ("ray_gansvc_http_request_seconds_count", (("model", "ugat"), ("endpoint", "translate"))): 8,
        ("ray_gansvc_images_total", (("model", "gen"), ("deployment", "GanModel"), ("application", "gen"))): 16,
        ("ray_gansvc_batch_size_count", (("model", "gen"), ("task", "generate"))): 1,
        ("ray_gansvc_forward_seconds_count", (("model", "ugat"), ("task", "translate"))): 1,
        ("ray_gansvc_model_requests_total", (("model", "ugat"),)): 8,
    }

    def batched(text: str) -> bool:
        """The batch-size histogram saw batches above 1 (when the burst made some)."""
        single = _value(text, "ray_gansvc_batch_size_bucket", model="gen", le="1.0")
        return max(gens) == 1 or _value(text, "ray_gansvc_batch_size_count", model="gen") > single

    deadline, text, missing = time.monotonic() + 60, "", list(want)
    while time.monotonic() < deadline:  # Ray exports custom metrics every few seconds, not all in the same round
        text = _scrape(served.metrics_url)
        missing = [k for k, v in want.items() if _value(text, k[0], **dict(k[1])) < v]
        if not batched(text):
            missing.append(("ray_gansvc_batch_size_bucket", (("le", "> 1"),)))
        if not missing:
            break
        time.sleep(2)
    assert not missing, f"not (yet) exported: {missing}"
    assert re.search(r'ray_gansvc_http_request_seconds_bucket\{[^}]*deployment="Ingress"', text)


def test_models_added_and_replaced_by_redeploy_while_serving(served: Served) -> None:
    register("ugat", _model_bytes("ugatit", PAIRS, 9), "test", {}, root=served.registry)  # promoted again: v2
    png = _png(18, 26, seed=4)
    with Poller({"gen": lambda: served.gen(n=1, seed=3), "ugat": lambda: served.tr(png)}) as poller:
        polls = poller.polls
        time.sleep(0.5)
        cli = subprocess.run(
            [
                sys.executable,
                "-m",
                "gansvc.serve",
                "--config",
                str(served.config_path),
                "--models",
                "cyc1,ugat",
                "--detach",
                "--timeout",
                "240",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert cli.returncode == 0, cli.stderr
        assert f"serves cyc1, ugat at {served.url}" in cli.stdout
        deadline = time.monotonic() + 60
        while not (
            polls["ugat"]
            and polls["ugat"][-1][2] == "2"
            and "cyc1" in [m["name"] for m in requests.get(f"{served.url}/v1/models", timeout=30).json()["models"]]
        ):
            assert time.monotonic() < deadline, "the new model or the new version never became reachable"
            time.sleep(0.3)
        time.sleep(0.5)
    poller.assert_served_throughout(kept="gen", replaced="ugat")
    ready = requests.get(f"{served.url}/readyz", timeout=30).json()
    assert ready["ready"] and set(ready["models"]) == {"gen", "ugat", "cyc1"}
    ok = served.tr(png, name="cyc1", direction="a2b")
    assert ok.status_code == 200 and _image(ok.content).size == (26, 18)
    one_way = served.tr(png, name="cyc1", direction="b2a")
    assert one_way.status_code == 400 and one_way.json()["error"]["code"] == "unsupported_direction"
    assert "a2b only" in one_way.json()["error"]["message"]
    no_heat = served.tr(png, name="cyc1", heatmap="true")
    assert no_heat.status_code == 400 and no_heat.json()["error"]["code"] == "no_heatmap"


def test_chunked_body_is_limited_while_read_on_every_route(served: Served) -> None:
    total = 400 * MAX_BYTES  # 25 MiB, paced: about 1.5 s or more to send whole
    for path, ctype in (
        ("/v1/models/gen/generate", "application/json"),
        ("/v1/models/ugat/translate", "image/png"),
        ("/healthz", "application/json"),
    ):
        status, sent, answer = _chunked_post(served.url, path, ctype, total)
        assert status == 413 and b"payload_too_large" in answer, (path, status, answer)
        # the answer came while the body was still being sent: the server stopped reading at the limit (plus what
        # the proxy and the sockets had buffered meanwhile), it did not read the whole body first
        assert sent < total // 4, f"{path}: 413 only after {sent} of {total} bytes: the body was read whole"
    assert served.gen(n=1, seed=1).status_code == 200


def test_translate_limit_is_the_model_size_and_listed(served: Served) -> None:
    models = {m["name"]: m for m in requests.get(f"{served.url}/v1/models", timeout=30).json()["models"]}
    assert models["ugat"]["max_pixels"] == 4 * 32 * 32 and models["ugat"]["min_side"] == 8
    assert models["gen"]["max_pixels"] == 0
    just = served.tr(_png(64, 64))  # exactly 4 x 32 x 32
    assert just.status_code == 200, just.text
    over = served.tr(_png(64, 65))
    assert over.status_code == 413 and "limit is 4096" in over.json()["error"]["message"]


def test_expired_jobs_are_not_computed(served: Served) -> None:
    from ray import serve

    from gansvc.serve.schemas import GenJob, TranslateJob

    handle = serve.get_deployment_handle("GanModel", "gen")
    before = handle.info.remote().result(timeout_s=60)["counters"]
    past = time.time() - 1
    late = [handle.generate.remote(GenJob(1, i, None, None, "png", deadline=past)) for i in range(3)]
    live = handle.generate.remote(GenJob(2, 9, None, None, "grid", deadline=time.time() + 60))
    assert live.result(timeout_s=60).pngs
    for response in late:
        with pytest.raises(Exception, match="deadline passed"):
            response.result(timeout_s=60)
    after = handle.info.remote().result(timeout_s=60)["counters"]
    assert after["skipped_jobs"] - before["skipped_jobs"] == 3
    assert after["computed_jobs"] - before["computed_jobs"] == 1, (before, after)
    assert after["forward_passes"] - before["forward_passes"] == 1
    ugat = serve.get_deployment_handle("GanModel", "ugat")
    before = ugat.info.remote().result(timeout_s=60)["counters"]
    image = np.zeros((16, 16, 3), np.uint8)
    with pytest.raises(Exception, match="deadline passed"):
        ugat.translate.remote(TranslateJob(image, "a2b", False, deadline=past)).result(timeout_s=60)
    after = ugat.info.remote().result(timeout_s=60)["counters"]
    assert after["forward_passes"] == before["forward_passes"] and after["skipped_jobs"] == before["skipped_jobs"] + 1


def test_transparent_upload_translates_as_composited_on_white(served: Served) -> None:
    rgba, on_white = _rgba_png(16, 20)
    a, b = served.tr(rgba), served.tr(on_white)
    assert a.status_code == 200 and b.status_code == 200, (a.text, b.text)
    x, y = (np.asarray(_image(r.content), dtype=int) for r in (a, b))
    assert np.abs(x - y).max() <= 2, "an RGBA upload translates as the same image on white (training's rule)"


def test_contract_strict_numbers_bounds_and_allow(served: Served) -> None:
    for body, field in (
        ({"n": 1, "seed": False}, "seed"),
        ({"n": 1, "seed": "7"}, "seed"),
        ({"n": True}, "n"),
        ({"n": "2"}, "n"),
        ({"n": 1, "truncation": True}, "truncation"),
    ):
        r = served.gen(**body)
        assert r.status_code == 422 and field in r.json()["error"]["message"], (body, r.text)
    for path, allow in (
        ("/v1/models/gen/generate", "POST"),
        ("/v1/models/ugat/translate", "POST"),
        ("/v1/models", "GET"),
    ):
        r = requests.request("DELETE" if allow == "GET" else "GET", served.url + path, timeout=30)
        assert r.status_code == 405 and r.headers.get("Allow") == allow, (path, r.status_code, r.headers)
    doc = requests.get(f"{served.url}/openapi.json", timeout=30).json()
    req = doc["components"]["schemas"]["GenerateRequest"]["properties"]
    assert req["n"]["maximum"] == 4096 and req["n"]["minimum"] == 1
    assert "max_request_bytes" in doc["info"]["description"] and "min_side" in doc["info"]["description"]
    gen_200 = doc["paths"]["/v1/models/{name}/generate"]["post"]["responses"]["200"]["content"]
    assert {"image/png", "application/json"} <= set(gen_200)
