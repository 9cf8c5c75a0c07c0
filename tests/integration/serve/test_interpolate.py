"""Latent walks over HTTP (issue 17 #2): POST /v1/models/<name>/interpolate on both paths (one hop: a model
application with its own route; two hops: through the front door and a deployment handle), the same frames as the
offline code (`gansvc.generate.interpolate_images`), deterministic bytes, the JSON error contract, batching with
generate requests, and the OpenAPI document.

Real parts: the embedded stack's Ray and S3, one real Serve instance for the module (front door, the acgan smoke
model `gen` on its own route, the same model as `gen2` without one, the ugatit smoke model `ugat`), real HTTP.
"""

from __future__ import annotations

import concurrent.futures as cf
import io
from typing import Any

import numpy as np
import pytest
import requests
from PIL import Image

from gansvc import local
from tests.support.serve import deploy_config, front_door, image, model_app, routed_app, serving, smoke_registry

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("stack")]

LABELS = [{"hair_color": "red", "eye_color": "blue"}, {"hair_color": "green", "eye_color": "brown"}]
PATHS = ["gen", "gen2"]  # one hop, two hops: the same registered model


@pytest.fixture(scope="module")
def served(ray_stack: local.StackState) -> Any:
    registry = smoke_registry(ray_stack, "t-walk")
    with serving(
        ray_stack,
        deploy_config(
            ray_stack,
            [
                front_door(expect_models=["gen", "gen2", "ugat"]),
                routed_app("gen", registry),
                model_app("gen2", registry, model="gen"),
                routed_app("ugat", registry),
            ],
        ),
    ) as base:
        yield base, registry


def _walk(url: str, name: str, **body: Any) -> requests.Response:
    return requests.post(f"{url}/v1/models/{name}/interpolate", json=body, timeout=120)


def _frame(grid_png: bytes, i: int, n: int, side: int = 16, pad: int = 2) -> np.ndarray:
    """Frame i of a walk's grid (gansvc.imaging.grid: ceil(sqrt(n)) per row, `pad` white pixels around each)."""
    per_row = int(np.ceil(np.sqrt(n)))
    r, c = divmod(i, per_row)
    arr = np.asarray(image(grid_png).convert("RGB")).astype(int)
    y, x = pad + r * (side + pad), pad + c * (side + pad)
    return arr[y : y + side, x : x + side]


@pytest.mark.timeout(420)  # the first test also waits for the module fixture's deploy (up to 240 s)
def test_interpolate_on_both_paths(served: tuple[str, str]) -> None:
    import torch

    from gansvc.generate import interpolate_images
    from gansvc.imaging import walk_bytes

    url, registry = served
    body = {"seeds": [3, 4], "steps": 5, "labels": LABELS}
    answers = {}
    for name in PATHS:
        r = _walk(url, name, **body)
        assert r.status_code == 200 and r.headers["content-type"] == "image/png", (name, r.text)
        assert r.headers["X-Seeds"] == "3,4" and r.headers["X-Frames"] == "5" and r.headers["X-Model-Version"] == "1"
        assert int(r.headers["X-Batch-Images"]) >= 5, "the frames ran in one forward pass"
        again = _walk(url, name, **body)
        assert again.content == r.content, f"{name}: the same body gives the same bytes"
        answers[name] = r.content
        for fmt, media in (("webp", "image/webp"), ("gif", "image/gif")):
            anim = _walk(url, name, **body, format=fmt)
            assert anim.status_code == 200 and anim.headers["content-type"] == media, anim.text
            img = Image.open(io.BytesIO(anim.content))
            assert getattr(img, "n_frames", 1) == 5 and img.size == (16, 16), (name, fmt)
            assert _walk(url, name, **body, format=fmt).content == anim.content, f"{name} {fmt}: deterministic"
        lerp = _walk(url, name, **body, method="lerp")
        assert lerp.status_code == 200 and lerp.content != r.content, "lerp's middle frames differ from slerp's"
    assert np.abs(_frame(answers["gen"], 2, 5) - _frame(answers["gen2"], 2, 5)).max() <= 1, "one model, two paths"
    # the ends are generate's images for n=1 and each seed (and its labels)
    for end, seed in ((0, 3), (4, 4)):
        one = requests.post(
            f"{url}/v1/models/gen/generate", json={"n": 1, "seed": seed, "labels": LABELS[end // 4]}, timeout=120
        )
        assert one.status_code == 200, one.text
        gen = np.asarray(image(one.content).convert("RGB")).astype(int)
        assert np.abs(_frame(answers["gen"], end, 5) - gen).max() <= 2, f"frame {end} is seed {seed}'s image"
    # the offline code makes the same frames (same latents, labels and weights; CPU float32 in both)
    with torch.inference_mode():
        frames = interpolate_images("gen", (3, 4), 5, "slerp", LABELS, registry)
    offline = walk_bytes(frames, "grid")
    for i in range(5):
        assert np.abs(_frame(offline, i, 5) - _frame(answers["gen"], i, 5)).max() <= 1, f"frame {i}: offline == HTTP"
    drawn = _walk(url, "gen", seeds=[3, 4], steps=2)  # labels left out: each end's drawn from its seed
    assert drawn.status_code == 200, drawn.text


@pytest.mark.timeout(420)
def test_interpolate_errors_follow_the_contract(served: tuple[str, str]) -> None:
    url, _ = served
    for name in PATHS:
        cases = [
            (_walk(url, name, seeds=[1, 2], steps=65), 422, "steps_out_of_range", "at most 64"),
            (_walk(url, name, seeds=[1, 2], steps=1), 422, "invalid_request", "steps"),
            (_walk(url, name, seeds=[1], steps=4), 422, "invalid_request", "seeds"),
            (_walk(url, name, seeds=[1, -2], steps=4), 422, "invalid_request", "seeds"),
            (_walk(url, name, seeds=[1, 2], method="cubic"), 422, "invalid_request", "method"),
            (_walk(url, name, seeds=[1, 2], format="mp4"), 422, "invalid_request", "format"),
            (_walk(url, name, seeds=[1, 2], fps=3), 422, "invalid_request", "Extra inputs are not permitted"),
            (
                _walk(url, name, seeds=[1, 2], labels=[{"hair_color": "pink"}, {}]),
                422,
                "invalid_labels",
                "allowed: blue, red, green",
            ),
            (_walk(url, name, seeds=[1, 2], labels=[{}]), 422, "invalid_request", "labels"),
        ]
        for i, (resp, status, code, text) in enumerate(cases):
            assert resp.status_code == status, (name, i, resp.status_code, resp.text)
            err = resp.json()["error"]
            assert err["code"] == code and text in err["message"], (name, i, err)
            assert resp.headers["X-Error-Code"] == code
    wrong = _walk(url, "ugat", seeds=[1, 2])
    assert wrong.status_code == 400 and wrong.json()["error"]["code"] == "wrong_task", wrong.text
    assert "/v1/models/ugat/translate" in wrong.json()["error"]["message"]
    unknown = _walk(url, "nope", seeds=[1, 2])
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_model"
    assert requests.get(f"{url}/v1/models/gen/interpolate", timeout=30).status_code == 405


@pytest.mark.timeout(420)
def test_interpolate_batches_with_generate_and_is_documented(served: tuple[str, str]) -> None:
    url, _ = served

    def call(i: int) -> int:
        if i % 2:
            r = _walk(url, "gen", seeds=[i, i + 1], steps=3)
        else:
            r = requests.post(f"{url}/v1/models/gen/generate", json={"n": 1, "seed": i}, timeout=120)
        assert r.status_code == 200, r.text
        return int(r.headers["X-Batch-Size"])

    with cf.ThreadPoolExecutor(16) as pool:
        sizes = list(pool.map(call, range(32)))
    assert max(sizes) > 1, f"concurrent walks and generate requests never shared a forward pass: {sizes}"
    doc = requests.get(f"{url}/openapi.json", timeout=30).json()
    op = doc["paths"]["/v1/models/{name}/interpolate"]["post"]
    assert set(op["responses"]["200"]["content"]) == {"image/png", "image/webp", "image/gif"}
    schema = doc["components"]["schemas"]["InterpolateRequest"]
    assert {"seeds", "steps", "method", "labels", "format"} <= set(schema["properties"]) and schema["required"] == [
        "seeds"
    ]
