"""The web playground (issue 17 #1), driven in a real headless Chromium as a person would use it: the page loads from
the front door (GET /), lists the served models with their cards, generates a grid with seed, n, truncation and a
label dropdown, walks the latent space as an animation, translates an uploaded (and a dropped) PNG with its attention
heatmap in both directions, downloads results, and shows the API's errors (a text file uploaded as an image, an image
over the model's pixel limit, a label the model does not know) as readable messages. Keyboard only and a phone-width
screen are covered too. Every image the page shows is compared with what the API answers for the same request.

Real parts: the embedded stack's Ray and S3, one Serve instance (front door, the acgan smoke model `faces` on its own
route, the ugatit smoke model `zebra` through the front door), real HTTP, Debian's Chromium (tests/support/browser.py:
skipped with the reason where it is not installed; CI installs it). Screenshots of each state are written to
test-output/playground/ (or $GANSVC_TEST_OUTPUT/playground/).
"""

from __future__ import annotations

import base64
import io
import re
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import requests
from PIL import Image, ImageDraw

from gansvc import local
from gansvc.registry import register
from tests.support import browser as chromium
from tests.support.serve import ATTRS, PAIRS, deploy_config, front_door, model_app, model_bytes, routed_app, serving

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("stack")]

PROTOCOL = {
    "extractor": "fid-inception-v3",
    "weights_sha256": "f58cb9b6ec323ed63459aa4fb441fe750cfe39fafad6da5cb504a16f19e958f4",
    "weights_are_published": True,
    "resize": "bilinear 299 (torch-fidelity)",
    "n_generated": 10000,
    "n_real": 50000,
    "reference": {"split": "train"},
}


@pytest.fixture(scope="module")
def site(ray_stack: local.StackState) -> Iterator[str]:
    registry = f"s3://{ray_stack.bucket}/t-play-{uuid.uuid4().hex[:10]}/registry"
    data = f"s3://{ray_stack.bucket}/datasets"
    register(
        "faces",
        model_bytes("acgan", ATTRS, 0, vivid=True),
        "test",
        {"fid": 41.27, "kid": 0.0312, "is": 2.113},
        f"{data}/anime-faces",
        registry,
        {"step": 12000, "metric_protocol": PROTOCOL},
    )
    register("zebra", model_bytes("ugatit", PAIRS, 1), "test", {}, f"{data}/horse2zebra", registry, {"step": 800})
    apps = [
        front_door(expect_models=["faces", "zebra"], max_request_bytes=96 * 1024),
        routed_app("faces", registry),  # one hop
        model_app("zebra", registry),  # two hops
    ]
    with serving(ray_stack, deploy_config(ray_stack, apps)) as base:
        yield base


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium, launched before `site` deploys anything: without it the browser tests skip (or fail in CI) at once."""
    yield from chromium.browser()


class Page:
    """A page of the playground and what it did: requests to other hosts, uncaught script errors."""

    def __init__(self, browser: Any, base: str, **context: Any) -> None:
        self.base = base
        self.context = browser.new_context(accept_downloads=True, **context)
        self.page = self.context.new_page()
        self.foreign: list[str] = []
        self.script_errors: list[str] = []
        self.page.on("request", self._request)
        self.page.on("pageerror", lambda err: self.script_errors.append(str(err)))
        self.page.goto(base + "/")
        self.page.wait_for_selector("#model option[value=faces]", state="attached")

    def _request(self, request: Any) -> None:
        if not (request.url.startswith(self.base + "/") or request.url.startswith(("blob:", "data:"))):
            self.foreign.append(request.url)

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(chromium.output_dir("playground") / f"{name}.png"), full_page=True)

    def pixels(self, selector: str) -> np.ndarray:
        """The RGBA pixels of an <img> as the page decoded it (drawn on a canvas at its own size). The page's
        Content-Security-Policy (connect-src 'self') keeps even a script of its own from fetching the blob: URL."""
        w, h, data = self.page.evaluate(
            """(sel) => {
                const img = document.querySelector(sel);
                const c = document.createElement("canvas");
                c.width = img.naturalWidth; c.height = img.naturalHeight;
                const ctx = c.getContext("2d");
                ctx.drawImage(img, 0, 0);
                return [c.width, c.height, Array.from(ctx.getImageData(0, 0, c.width, c.height).data)];
            }""",
            selector,
        )
        return np.array(data, dtype=np.uint8).reshape(h, w, 4)

    def download(self, selector: str) -> tuple[str, bytes]:
        """Click a download link or button: the file name the browser was given and the bytes it saved."""
        with self.page.expect_download() as info:
            self.page.click(selector)
        with open(info.value.path(), "rb") as f:
            return info.value.suggested_filename, f.read()

    def error(self, panel: str, code: str = "") -> str:
        """The message a panel shows next to its form (the API's error, as the page words it), once it names `code`."""
        self.page.wait_for_function(
            "([panel, code]) => { const e = document.querySelector(panel + ' .error'); "
            "return !e.hidden && e.textContent.includes(code) }",
            arg=[panel, code],
        )
        return str(self.page.inner_text(f"{panel} .error"))

    def shown_while_hidden(self) -> list[str]:
        """Elements the page marks `hidden` that a style sheet still displays (a class's `display` beats the
        attribute unless the page's CSS says otherwise)."""
        found: list[str] = self.page.evaluate(
            "() => [...document.querySelectorAll('[hidden]')].filter(e => getComputedStyle(e).display !== 'none')"
            ".map(e => e.id || e.className)"
        )
        return found

    def close(self) -> None:
        assert not self.shown_while_hidden(), self.shown_while_hidden()
        assert not self.script_errors, f"uncaught script errors: {self.script_errors}"
        assert not self.foreign, f"the page loaded something from another host: {self.foreign}"
        self.context.close()


@pytest.fixture
def page(browser: Any, site: str) -> Iterator[Page]:  # browser first: see `browser`
    p = Page(browser, site, viewport={"width": 1280, "height": 900})
    yield p
    p.close()


def _rgba(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"))


def _png(w: int, h: int) -> bytes:
    """A picture a person might upload: a gradient with a disc and a bar (not noise, so the screenshots read)."""
    x = np.linspace(0, 255, w, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 255, h, dtype=np.float32)[:, None, None]
    arr = np.concatenate([np.broadcast_to(x, (h, w, 1)), np.broadcast_to(y, (h, w, 1)), np.full((h, w, 1), 120)], 2)
    img = Image.fromarray(arr.astype(np.uint8))
    draw = ImageDraw.Draw(img)
    draw.ellipse((w // 5, h // 5, w // 2, h // 2), fill=(250, 250, 250))
    draw.rectangle((w // 2, h * 2 // 3, w - 4, h * 2 // 3 + 4), fill=(10, 10, 10))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def test_the_page_and_its_files_are_served_from_this_server(site: str) -> None:
    r = requests.get(site + "/", timeout=30)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp and "default-src 'none'" in csp
    assets = re.findall(r'(?:src|href)="(playground/[^"]+)"', r.text)
    assert {a.split("/")[1] for a in assets} == {"playground.js", "playground.css", "favicon.svg"}
    types = {"js": "text/javascript", "css": "text/css", "svg": "image/svg+xml"}
    for asset in assets:
        a = requests.get(f"{site}/{asset}", timeout=30)
        assert a.status_code == 200 and a.headers["content-type"].startswith(types[asset.rsplit(".", 1)[1]]), asset
        # nothing from another host (clusters are often offline): no absolute URL in any file (SVG's xmlns is a name)
        text = a.text.replace('xmlns="http://www.w3.org/2000/svg"', "")
        assert not re.search(r"https?://", text), asset
    assert not re.search(r"https?://", r.text)
    missing = requests.get(site + "/playground/nope.js", timeout=30)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert "/" not in requests.get(site + "/openapi.json", timeout=30).json()["paths"]  # not part of the API


def test_lists_models_and_shows_the_card(page: Page) -> None:
    p = page.page
    options = p.eval_on_selector_all("#model option", "os => os.map(o => o.value)")
    assert options == ["faces", "zebra"]
    p.select_option("#model", "faces")
    card = p.inner_text("#card")
    for fact in (
        "acgan",
        "generate (noise → image)",
        "/datasets/anime-faces",
        "12,000",
        "hair_color: blue, red, green",
    ):
        assert fact in card, (fact, card)
    assert (
        "41.27" in card
        and "0.0312" in card
        and "2.113" in card
        and "fid-inception-v3" in card
        and "f58cb9b6ec32" in card
    )
    assert "10000 generated vs 50000 real images" in card and "reference split: train" in card
    page.shot("01-model-card")
    p.select_option("#model", "zebra")
    card = p.inner_text("#card")
    assert "ugatit" in card and "horse2zebra" in card and "A → B, B → A" in card and "No metrics" in card
    assert p.is_hidden("#generate-panel") and p.is_visible("#translate-panel")
    assert p.is_visible("#tr-heatmap-field")  # an attention model
    for name in ("faces", "zebra"):
        p.select_option("#model", name)
        assert not page.shown_while_hidden(), (name, page.shown_while_hidden())
    p.evaluate("() => { document.getElementById('tr-heatmap-field').hidden = true }")  # as for a model without one
    assert p.is_hidden("#tr-heatmap-field")
    assert "model=zebra" in p.url  # a link to this model
    p.reload()
    p.wait_for_selector("#translate-panel:not([hidden])")
    assert p.input_value("#model") == "zebra"


def test_generates_a_grid_with_labels_and_downloads_it(page: Page) -> None:
    p = page.page
    p.select_option("#model", "faces")
    p.fill("#gen-seed", "7")
    p.fill("#gen-n", "6")
    p.check("#gen-truncate")
    p.fill("#gen-truncation", "0.8")
    p.select_option("#gen-label-hair_color", "red")
    p.click("#generate-form button[type=submit]")
    p.wait_for_function("() => { const i = document.getElementById('gen-image'); return i && i.naturalWidth > 0 }")
    body = {"n": 6, "seed": 7, "format": "grid", "truncation": 0.8, "labels": {"hair_color": "red"}}
    api = requests.post(f"{page.base}/v1/models/faces/generate", json=body, timeout=60)
    assert api.status_code == 200 and (api.headers["X-Grid-Columns"], api.headers["X-Grid-Pad"]) == ("3", "2")
    assert np.array_equal(page.pixels("#gen-image"), _rgba(api.content))  # the page shows what the API makes
    assert "seed 7" in p.inner_text("#gen-result") and "hair_color red" in p.inner_text("#gen-result")
    assert page.download("#gen-result a[download]") == ("faces-v1-seed7-n6.png", api.content)
    page.shot("02-generate")


def test_walks_the_latent_space_as_an_animation(page: Page) -> None:
    p = page.page
    p.select_option("#model", "faces")
    p.fill("#walk-a", "3")
    p.fill("#walk-b", "11")
    p.fill("#walk-steps", "6")
    p.select_option("#walk-b-label-eye_color", "blue")
    p.click("#walk-form button[type=submit]")
    p.wait_for_selector("#walk-result:not([hidden])")
    labels = [{}, {"eye_color": "blue"}]
    grid = requests.post(
        f"{page.base}/v1/models/faces/interpolate",
        json={"seeds": [3, 11], "steps": 6, "method": "slerp", "format": "grid", "labels": labels},
        timeout=60,
    )
    assert grid.status_code == 200
    assert page.download("#walk-download-grid") == ("faces-v1-walk-3-11-6.png", grid.content)
    # it plays by itself: the frame counter moves
    first = p.inner_text("#walk-frame-out")
    p.wait_for_function("(t) => document.getElementById('walk-frame-out').textContent !== t", arg=first)
    page.shot("03-walk-playing")
    # pause and scrub with the keyboard; the canvas shows each frame of the API's grid exactly
    p.click("#walk-play")
    assert p.get_attribute("#walk-play", "aria-pressed") == "false"
    sheet = np.asarray(Image.open(io.BytesIO(grid.content)).convert("RGB"))
    cols, pad = int(grid.headers["X-Grid-Columns"]), int(grid.headers["X-Grid-Pad"])
    p.focus("#walk-frame")
    for key, frame in (("Home", 0), ("ArrowRight", 1), ("End", 5)):
        p.keyboard.press(key)
        assert p.inner_text("#walk-frame-out") == f"{frame + 1} / 6"
        pixels = p.evaluate(
            "() => { const c = document.getElementById('walk-canvas'); "
            "return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data) }"
        )
        canvas = np.array(pixels, dtype=np.uint8).reshape(16, 16, 4)[..., :3]
        r, c = divmod(frame, cols)
        y, x = pad + r * (16 + pad), pad + c * (16 + pad)
        assert np.array_equal(canvas, sheet[y : y + 16, x : x + 16]), f"frame {frame}"
    page.shot("03-walk-paused")
    name, data = page.download("button[data-walk-format=webp]")
    assert data[:4] == b"RIFF" and data[8:12] == b"WEBP" and b"ANIM" in data[:64]
    webp = requests.post(
        f"{page.base}/v1/models/faces/interpolate",
        json={"seeds": [3, 11], "steps": 6, "method": "slerp", "format": "webp", "labels": labels},
        timeout=60,
    )
    assert (name, data) == ("faces-v1-walk-3-11-6.webp", webp.content)


def test_translates_an_upload_both_ways_with_heatmaps(page: Page) -> None:
    p = page.page
    p.select_option("#model", "zebra")
    photo = _png(40, 32)
    p.set_input_files("#tr-file", files=[{"name": "horse.png", "mimeType": "image/png", "buffer": photo}])
    p.select_option("#tr-direction", "a2b,b2a")
    assert p.is_checked("#tr-heatmap")
    p.click("#translate-form button[type=submit]")
    p.wait_for_function("() => document.querySelectorAll('#tr-result img').length === 6")
    p.wait_for_function("() => [...document.querySelectorAll('#tr-result img')].every(i => i.naturalWidth > 0)")
    captions = p.eval_on_selector_all("#tr-result figcaption", "fs => fs.map(f => f.textContent)")
    assert captions == ["Input", "Output A → B", "Heatmap A → B", "Input", "Output B → A", "Heatmap B → A"]
    for row, direction in enumerate(("a2b", "b2a"), start=1):
        api = requests.post(
            f"{page.base}/v1/models/zebra/translate",
            params={"direction": direction, "heatmap": "true"},
            data=photo,
            headers={"Content-Type": "image/png"},
            timeout=60,
        ).json()
        out = page.pixels(f"#tr-result .row:nth-child({row}) figure:nth-child(2) img")
        heat = page.pixels(f"#tr-result .row:nth-child({row}) figure:nth-child(3) img")
        assert np.array_equal(out, _rgba(base64.b64decode(api["image"]))), direction
        assert np.array_equal(heat, _rgba(base64.b64decode(api["heatmap"]))), direction
        assert out.shape == (32, 40, 4)
        if direction == "b2a":
            saved = page.download(f"#tr-result .row:nth-child({row}) figure:nth-child(3) a[download]")
            assert saved == ("horse-zebra-v1-b2a-heatmap.png", base64.b64decode(api["heatmap"]))
    assert np.array_equal(page.pixels("#tr-result .row:nth-child(1) figure:nth-child(1) img"), _rgba(photo))
    page.shot("04-translate-both-ways")
    # dropped instead of chosen: the same
    p.evaluate(
        """(b64) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], "dropped.png", { type: "image/png" }));
            document.getElementById("drop").dispatchEvent(new DragEvent("drop", { dataTransfer: dt, bubbles: true }));
        }""",
        base64.b64encode(photo).decode(),
    )
    assert "dropped.png" in p.inner_text("#tr-file-name")


def test_api_errors_are_readable_messages(page: Page) -> None:
    p = page.page
    p.select_option("#model", "zebra")
    p.set_input_files("#tr-file", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"not a picture"}])
    p.click("#translate-form button[type=submit]")
    text = page.error("#translate-panel", "unsupported_media_type")
    assert "Could not translate" in text and "text/plain" in text and "PNG or JPEG" in text, text
    assert "unsupported_media_type, HTTP 415" in text and "Traceback" not in text
    page.shot("05-error-text-file")
    # over the model's pixel limit (4 x its 32 x 32 training size): the API's 413
    p.set_input_files("#tr-file", files=[{"name": "big.png", "mimeType": "image/png", "buffer": _png(100, 100)}])
    p.click("#translate-form button[type=submit]")
    text = page.error("#translate-panel", "image_too_large")
    assert "100x100 = 10000 pixels" in text and "the limit is 4096" in text and "HTTP 413" in text, text
    page.shot("06-error-image-too-large")
    # a body over max_request_bytes is refused before it is sent, with the server's limit
    noise = np.random.default_rng(0).integers(0, 256, (200, 200, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, "PNG")
    assert len(buf.getvalue()) > 96 * 1024
    p.set_input_files("#tr-file", files=[{"name": "huge.png", "mimeType": "image/png", "buffer": buf.getvalue()}])
    p.click("#translate-form button[type=submit]")
    text = page.error("#translate-panel", "payload_too_large")
    assert "huge.png is" in text and "at most 98,304 bytes per request (max_request_bytes)" in text, text
    # a label the model does not know (as a page loaded before the model was replaced would send): the API's 422
    p.select_option("#model", "faces")
    p.evaluate("() => { document.querySelector('#gen-label-hair_color option:last-child').value = 'purple'; }")
    p.select_option("#gen-label-hair_color", index=3)
    p.click("#generate-form button[type=submit]")
    text = page.error("#generate-panel", "invalid_labels")
    assert "unknown value 'purple' for attribute 'hair_color'" in text and "blue, red, green" in text, text
    page.shot("07-error-unknown-label")
    # a fixed request clears the message
    p.select_option("#gen-label-hair_color", "")
    p.click("#generate-form button[type=submit]")
    p.wait_for_function("() => document.querySelector('#generate-panel .status').textContent.startsWith('Generated')")
    assert p.is_hidden("#generate-panel .error")


def test_keyboard_only(page: Page) -> None:
    """Every control has a label; a person without a mouse picks a model, generates (Enter) and reaches the result."""
    p = page.page
    unlabelled = p.evaluate(
        """() => [...document.querySelectorAll('input, select, button')].filter(e =>
            !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim()).map(e => e.id)"""
    )
    assert unlabelled == [], unlabelled
    p.focus("#model")
    p.keyboard.press("ArrowDown")  # zebra -> then back up to faces
    p.keyboard.press("ArrowUp")
    assert p.input_value("#model") == "faces"
    order = []
    for _ in range(8):
        p.keyboard.press("Tab")
        order.append(
            p.evaluate(
                "() => { const e = document.activeElement; "
                "return e.id || e.getAttribute('aria-label') || e.textContent.trim() }"
            )
        )
    # the reading order: the model's controls and card, then the generate form (the disabled truncation value and
    # nothing hidden in between)
    assert order == [
        "reload",
        "How the metrics were computed (full record)",
        "gen-seed",
        "New random seed",
        "gen-n",
        "gen-truncate",
        "gen-label-hair_color",
        "gen-label-eye_color",
    ], order
    p.focus("#gen-seed")
    p.keyboard.type("123")
    p.keyboard.press("Enter")  # submits the form
    p.wait_for_function("() => { const i = document.getElementById('gen-image'); return i && i.naturalWidth > 0 }")
    assert "seed" in p.inner_text("#gen-result")


def test_phone_width(browser: Any, site: str) -> None:
    phone = Page(browser, site, viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True)
    try:
        p = phone.page
        p.select_option("#model", "faces")
        p.click("#generate-form button[type=submit]")
        p.wait_for_function("() => { const i = document.getElementById('gen-image'); return i && i.naturalWidth > 0 }")
        overflow = p.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"the page is {overflow} px wider than a 390 px screen"
        assert p.evaluate("() => document.getElementById('gen-image').getBoundingClientRect().right") <= 390
        phone.shot("08-phone-generate")
        p.select_option("#model", "zebra")
        p.set_input_files("#tr-file", files=[{"name": "horse.png", "mimeType": "image/png", "buffer": _png(40, 32)}])
        p.click("#translate-form button[type=submit]")
        p.wait_for_function("() => document.querySelectorAll('#tr-result img').length === 3")
        assert p.evaluate("() => document.documentElement.scrollWidth - window.innerWidth") <= 0
        phone.shot("09-phone-translate")
    finally:
        phone.close()
