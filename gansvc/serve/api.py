"""The HTTP request handling both ingresses share: the front door (`ingress.Ingress`, route "/") and each model
application's own ingress (`model_ingress.ModelIngress`, route "/v1/models/<name>").

One copy of: the JSON error contract (`errors.error_response`, the exception handlers), the body limit
(`BodyLimit`), the request metrics (`observe`), the validation of generate / interpolate / translate requests and the
response headers and bodies (`generate_response`, `interpolate_response`, `translate_response`), the mapping of a
model call's failures to 503 / 504 / 500 (`guarded`), and the documentation pages with their assets served by the app
itself (`add_local_docs`).
A model request is handled by exactly one of the two ingresses, so it is validated, limited and counted once.
"""
# No `from __future__ import annotations`: FastAPI must resolve the route functions' annotations (see ingress.py).

import asyncio
import base64
import importlib.resources
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from ray.exceptions import RayActorError, WorkerCrashedError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError
from ray.serve.metrics import Counter, Histogram
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gansvc.data.spec import DataSpec
from gansvc.families.sampling import encode_labels
from gansvc.imaging import GRID_PAD, WALK_MEDIA_TYPES, grid_columns
from gansvc.serve.errors import RETRY_AFTER_S, ROUTE, error_response
from gansvc.serve.model import SECONDS_BOUNDS, DeadlineExpired, tag_keys
from gansvc.serve.schemas import (
    GenerateRequest,
    GenJob,
    ImagesBody,
    IngressArgs,
    InterpolateRequest,
    JobResult,
    TranslateJob,
    TranslationBody,
    WalkJob,
)
from gansvc.serve.uploads import ApiError, decode_image, read_body, upload_bytes

if TYPE_CHECKING:
    from gansvc.families.base import Direction

ENDPOINTS = (
    "generate",
    "interpolate",
    "translate",
    "v1_models",
    "healthz",
    "readyz",
    "docs",
    "openapi.json",
    "root",  # the playground page (GET /)
    "playground",  # its files (/playground/<name>)
)
# a replica died (killed, OOM, node lost) or none can take the request now: the model is briefly unavailable,
# Serve replaces the replica; the client should retry (503 + Retry-After), it did nothing wrong and the server did not
# fail on its input (500)
UNAVAILABLE = (
    RayActorError,
    WorkerCrashedError,
    BackPressureError,
    DeploymentUnavailableError,
    ReplicaUnavailableError,
)

# what runs a job: (task method name "generate" | "interpolate" | "translate", job) -> the replica's result
Runner = Callable[[str, Any], Awaitable[JobResult]]


async def _api_error(_: Request, err: ApiError) -> JSONResponse:
    response = error_response(err.status, err.code, err.message)
    response.headers.update(err.headers)
    return response


def _problem(e: dict[str, Any]) -> str:
    """One validation error in words: the field path and what is wrong with it."""
    if e.get("type") == "json_invalid":  # FastAPI locates it at ("body", <char offset>): not a field
        where = next((p for p in e.get("loc", ()) if isinstance(p, int)), None)
        at = f" at character {where}" if where is not None else ""
        reason = (e.get("ctx") or {}).get("error")
        return (
            f"the body is not valid JSON{at}{f' ({reason})' if reason else ''}: send a JSON object "
            "with Content-Type application/json"
        )
    return f"{'.'.join(str(p) for p in e['loc'] if p != 'body') or 'body'}: {e['msg']}"


async def _invalid(_: Request, err: RequestValidationError) -> JSONResponse:
    return error_response(422, "invalid_request", "; ".join(_problem(e) for e in err.errors()))


async def _http(_: Request, err: StarletteHTTPException) -> JSONResponse:
    codes = {404: "not_found", 405: "method_not_allowed"}
    response = error_response(err.status_code, codes.get(err.status_code, "http_error"), str(err.detail))
    response.headers.update(err.headers or {})  # e.g. the `Allow` of a 405 (RFC 9110 15.5.6: MUST)
    return response


class BodyLimit:
    """Every request body, on every route, read at most `max_request_bytes`: counted chunk by chunk as it arrives
    (a chunked body has no Content-Length to trust), answered 413 as soon as it passes the limit, with
    `Connection: close` so the rest is not read. A body within the limit is handed to the route unchanged.
    The limit is `app.state.settings()` (awaited: a model ingress may have to fetch the front door's settings)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        settings = getattr(getattr(scope.get("app"), "state", None), "settings", None)
        if scope["type"] != "http" or settings is None:
            await self.app(scope, receive, send)
            return
        max_bytes = (await settings()).max_request_bytes
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > max_bytes:
            await self._too_large(scope, receive, send, max_bytes)
            return
        body, size, more, early = [], 0, True, None
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: let the route see it
                early = message
                break
            body.append(message.get("body", b""))
            size += len(body[-1])
            if size > max_bytes:
                await self._too_large(scope, receive, send, max_bytes)
                return
            more = message.get("more_body", False)
        await self.app(scope, _replay(b"".join(body), early, receive), send)

    @staticmethod
    async def _too_large(scope: Scope, receive: Receive, send: Send, max_bytes: int) -> None:
        response = error_response(
            413, "payload_too_large", f"the request body exceeds {max_bytes} bytes (max_request_bytes)"
        )
        response.headers["Connection"] = "close"
        await response(scope, receive, send)


def _replay(body: bytes, early: Message | None, receive: Receive) -> Receive:
    """A `receive` that gives the buffered body as one message, then defers to the real one (disconnects)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return early or {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _full_path(request: Request) -> str:
    """The path as the client sent it: a model ingress's app sees its route prefix as root_path."""
    path, root = request.url.path, request.scope.get("root_path", "")
    return path if not root or path.startswith(root) else root + path


async def observe(request: Request, call_next: Any) -> Response:
    """Request count, latency and errors per model and endpoint (the same metric names and tags on both ingresses)."""
    state = request.app.state
    t0 = time.perf_counter()
    response: Response = await call_next(request)
    if hasattr(state, "metrics"):
        path = _full_path(request)
        m = ROUTE.match(path)
        endpoint = m.group(2) if m else path.strip("/").replace("/", "_") or "root"
        if endpoint.startswith("playground_"):
            endpoint = "playground"
        if endpoint not in ENDPOINTS:
            endpoint = "other"
        name = m.group(1) if m else ""
        model = name if name in state.known() else "-"  # only served names: clients cannot blow up the tag cardinality
        req, lat, err = state.metrics
        req.inc(tags={"model": model, "endpoint": endpoint, "status": str(response.status_code)})
        lat.observe(time.perf_counter() - t0, tags={"model": model, "endpoint": endpoint})
        if response.status_code >= 400:
            err.inc(
                tags={
                    "model": model,
                    "endpoint": endpoint,
                    "kind": response.headers.get("x-error-code", str(response.status_code)),
                }
            )
    return response


# ------------------------------------------------------------------------------------------ documentation pages

# The documentation pages (/docs: Swagger UI, /redoc: ReDoc) load their scripts and styles from this app, not from
# FastAPI's default CDN (cdn.jsdelivr.net, fonts.googleapis.com): clusters are often offline. The files are the
# copies the `fastapi-offline` package ships (MIT; Swagger UI 5.32.6 and ReDoc's standalone bundle in 1.7.7).
DOCS_ASSETS_URL = "/docs/assets"
DOCS_ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "redoc.standalone.js": "text/javascript; charset=utf-8",
    "favicon.png": "image/png",
}


def docs_assets_dir() -> Path:
    try:
        folder = Path(str(importlib.resources.files("fastapi_offline") / "static"))
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            "the package fastapi-offline (the /docs page's Swagger UI files) is not installed: "
            "reinstall gansvc (./dev setup, or pip install -e .)"
        ) from None
    missing = [name for name in DOCS_ASSETS if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{folder} lacks {', '.join(missing)}: reinstall fastapi-offline (the version gansvc pins)"
        )
    return folder


def add_local_docs(app: FastAPI, docs_url: str | None, redoc_url: str | None) -> None:
    """/docs and /redoc as FastAPI serves them (same page, same Swagger UI parameters), their assets from
    DOCS_ASSETS_URL on this app; paths are under the request's root_path, as FastAPI's own pages do."""
    if docs_url is None and redoc_url is None:
        return
    folder = docs_assets_dir()

    def under_root(request: Request, path: str) -> str:
        root: str = request.scope.get("root_path", "")  # an ASGI scope's root_path is a str
        return root.rstrip("/") + path

    @app.get(DOCS_ASSETS_URL + "/{name}", include_in_schema=False)
    async def docs_asset(name: str) -> FileResponse:
        if name not in DOCS_ASSETS:
            raise StarletteHTTPException(404, f"no documentation asset {name!r}")
        return FileResponse(
            folder / name, media_type=DOCS_ASSETS[name], headers={"Cache-Control": "public, max-age=86400"}
        )

    if docs_url is not None:
        redirect = app.swagger_ui_oauth2_redirect_url

        @app.get(docs_url, include_in_schema=False)
        async def swagger_ui(request: Request) -> HTMLResponse:
            return get_swagger_ui_html(
                openapi_url=under_root(request, app.openapi_url or ""),
                title=f"{app.title} - Swagger UI",
                swagger_js_url=under_root(request, f"{DOCS_ASSETS_URL}/swagger-ui-bundle.js"),
                swagger_css_url=under_root(request, f"{DOCS_ASSETS_URL}/swagger-ui.css"),
                swagger_favicon_url=under_root(request, f"{DOCS_ASSETS_URL}/favicon.png"),
                oauth2_redirect_url=under_root(request, redirect) if redirect else None,
                init_oauth=app.swagger_ui_init_oauth,
                swagger_ui_parameters=app.swagger_ui_parameters,
            )

        if redirect:

            @app.get(redirect, include_in_schema=False)
            async def swagger_ui_redirect() -> HTMLResponse:
                return get_swagger_ui_oauth2_redirect_html()

    if redoc_url is not None:

        @app.get(redoc_url, include_in_schema=False)
        async def redoc(request: Request) -> HTMLResponse:
            return get_redoc_html(
                openapi_url=under_root(request, app.openapi_url or ""),
                title=f"{app.title} - ReDoc",
                redoc_js_url=under_root(request, f"{DOCS_ASSETS_URL}/redoc.standalone.js"),
                redoc_favicon_url=under_root(request, f"{DOCS_ASSETS_URL}/favicon.png"),
                with_google_fonts=False,
            )


def make_api(docs_url: str | None = "/docs", redoc_url: str | None = "/redoc", **fastapi_kwargs: Any) -> FastAPI:
    """A FastAPI app with the JSON error contract, the body limit and the request metrics installed, and its
    documentation pages (when it has an OpenAPI document) with their assets served locally."""
    app = FastAPI(docs_url=None, redoc_url=None, **fastapi_kwargs)  # FastAPI's own pages load a CDN: add_local_docs
    if app.openapi_url:
        add_local_docs(app, docs_url, redoc_url)
    # starlette types every handler as taking any Exception, though it only calls one with the class it is registered
    # for: a handler of ApiError (a narrower parameter) does not fit that hint
    app.add_exception_handler(ApiError, _api_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _invalid)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http)  # type: ignore[arg-type]
    app.add_middleware(BodyLimit)  # added before observe: observe wraps it, so its 413s are counted
    app.middleware("http")(observe)
    return app


def http_metrics() -> tuple[Counter, Histogram, Counter]:
    """The request metrics (created in the replica that serves the HTTP routes; Ray adds deployment tags)."""
    tags = ("model", "endpoint")
    return (
        Counter("gansvc_http_requests", "HTTP requests by model, endpoint and status", tag_keys(*tags, "status")),
        Histogram("gansvc_http_request_seconds", "HTTP request latency", SECONDS_BOUNDS, tag_keys(*tags)),
        Counter("gansvc_http_errors", "HTTP errors by model, endpoint and kind (error code)", tag_keys(*tags, "kind")),
    )


# ------------------------------------------------------------------------------------------------- model calls


async def guarded(work: Awaitable[Any], timeout: float, name: str, cancel: Callable[[], Any] | None = None) -> Any:
    """`work` (a model call, local or through a handle) bounded by `timeout`, its failures mapped to the API's
    errors. A call given up (timeout, or the HTTP client went away and Serve cancelled this request) is cancelled
    (`cancel`, for a handle call: at the replica too): queued, it never reaches a forward pass."""
    try:
        return await asyncio.wait_for(work, timeout)
    except TimeoutError:
        if cancel:
            cancel()
        raise ApiError(504, "timeout", f"model {name!r} did not answer within {timeout:g} s; retry later") from None
    except asyncio.CancelledError:
        if cancel:
            cancel()
        raise
    except ApiError:
        raise
    except DeadlineExpired:
        raise ApiError(504, "timeout", f"model {name!r} did not start within {timeout:g} s; retry later") from None
    except UNAVAILABLE as err:
        raise ApiError(
            503,
            "model_unavailable",
            f"model {name!r} is restarting ({type(err).__name__}); retry in {RETRY_AFTER_S} s",
            {"Retry-After": str(RETRY_AFTER_S)},
        ) from None
    except Exception as err:  # noqa: BLE001 - a replica failure must not leak a traceback to the client
        first = (str(err).strip().splitlines() or [type(err).__name__])[-1][:300]
        raise ApiError(500, "model_error", f"model {name!r} failed: {first}") from None


def deadline(args: IngressArgs) -> float:
    """After this time.time() the ingress has answered 504: a replica that gets the job later skips it."""
    return time.time() + args.request_timeout_s


def max_pixels(info: dict[str, Any], args: IngressArgs) -> int:
    own = int(info.get("max_pixels") or 0) or (1 << 20)  # a replica of an older version reports none
    return min(own, args.max_pixels) if args.max_pixels else own


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _headers(info: dict[str, Any], res: JobResult, **extra: Any) -> dict[str, str]:
    return {
        "X-Model-Version": str(res.version or info["version"]),
        "X-Batch-Size": str(res.batch_requests),
        "X-Batch-Images": str(res.batch_images),
        "X-Replica": res.replica,
        **{k: str(v) for k, v in extra.items()},
    }


def _grid_headers(fmt: str, n: int) -> dict[str, int]:
    """A grid PNG's layout (gansvc.imaging.grid: images row by row, X-Grid-Pad white pixels around and between them),
    so a client can cut the images back out of it."""
    return {"X-Grid-Columns": grid_columns(n), "X-Grid-Pad": GRID_PAD} if fmt == "grid" else {}


def _labels(name: str, info: dict[str, Any], body: GenerateRequest) -> list[dict[str, str]] | None:
    if not info["conditional"]:
        if body.labels:
            raise ApiError(422, "invalid_labels", f"{name!r} is not label-conditioned: drop labels")
        return None
    items = body.labels if isinstance(body.labels, list) else [body.labels or {}] * body.n
    if len(items) != body.n:
        raise ApiError(
            422,
            "invalid_labels",
            f"labels is a list of {len(items)} mappings; give n={body.n} of them, or one mapping for every image",
        )
    try:
        encode_labels(DataSpec.from_dict(info["data_spec"]), items, seed=0)
    except ValueError as err:
        raise ApiError(422, "invalid_labels", str(err).replace("labels item 0: ", "")) from None
    return items


async def generate_response(
    name: str, body: GenerateRequest, info: dict[str, Any], args: IngressArgs, run: Runner
) -> Response:
    """POST /v1/models/<name>/generate: validate against the model's info, run the job, answer PNG or JSON."""
    _generation_model(name, info)
    if body.n > info["max_n"]:
        raise ApiError(422, "n_out_of_range", f"n={body.n}: {name!r} makes at most {info['max_n']} images per request")
    fmt: Literal["png", "grid", "json"] = body.format or ("png" if body.n == 1 else "grid")
    if fmt == "png" and body.n != 1:
        raise ApiError(422, "invalid_format", 'format "png" returns one image: use n=1, or "grid" / "json"')
    seed = body.seed if body.seed is not None else secrets.randbits(62)
    labels = _labels(name, info, body)
    res = await run("generate", GenJob(body.n, seed, labels, body.truncation, fmt, deadline=deadline(args)))
    headers = _headers(info, res, **{"X-Seed": seed}, **_grid_headers(fmt, body.n))
    if fmt == "json":
        payload = ImagesBody(
            images=[_b64(p) for p in res.pngs], seed=seed, model=name, version=res.version or info["version"]
        )
        return JSONResponse(payload.model_dump(), headers=headers)
    return Response(res.pngs[0], media_type="image/png", headers=headers)


def _generation_model(name: str, info: dict[str, Any]) -> None:
    if info["task"] != "generate":
        raise ApiError(
            400,
            "wrong_task",
            f"{name!r} is an image-to-image model ({info['family']}): generate and interpolate need a generation "
            f"model; POST an image to /v1/models/{name}/translate",
        )


async def interpolate_response(
    name: str, body: InterpolateRequest, info: dict[str, Any], args: IngressArgs, run: Runner
) -> Response:
    """POST /v1/models/<name>/interpolate: a latent walk from seed A to seed B (gansvc.families.sampling.walk_inputs),
    validated as generate (steps bounded by max_n, labels by the model's attributes), run as one job of the generate
    batch queue, answered as one grid PNG or an animated WebP / GIF."""
    _generation_model(name, info)
    if body.steps > info["max_n"]:
        raise ApiError(
            422,
            "steps_out_of_range",
            f"steps={body.steps}: {name!r} makes at most {info['max_n']} images per request (its max_n)",
        )
    labels = None
    if not info["conditional"]:
        if body.labels:
            raise ApiError(422, "invalid_labels", f"{name!r} is not label-conditioned: drop labels")
    elif body.labels is not None:
        try:
            encode_labels(DataSpec.from_dict(info["data_spec"]), body.labels, seed=0)
        except ValueError as err:
            text = (
                str(err)
                .replace("labels item 0: ", "labels[0] (seed A's): ")
                .replace("labels item 1: ", "labels[1] (seed B's): ")
            )
            raise ApiError(422, "invalid_labels", text) from None
        labels = body.labels
    seeds = (body.seeds[0], body.seeds[1])
    res = await run(
        "interpolate", WalkJob(seeds, body.steps, body.method, labels, body.format, deadline=deadline(args))
    )
    walk = {"X-Seeds": f"{seeds[0]},{seeds[1]}", "X-Frames": body.steps}
    headers = _headers(info, res, **walk, **_grid_headers(body.format, body.steps))
    return Response(res.pngs[0], media_type=WALK_MEDIA_TYPES[body.format], headers=headers)


async def translate_response(
    name: str,
    request: Request,
    direction: "Direction",  # quoted: imported for type checking only (no `from __future__` here)
    heatmap: bool,
    info: dict[str, Any],
    args: IngressArgs,
    run: Runner,
) -> Response:
    """POST /v1/models/<name>/translate: validate, read and decode the upload, run the job, answer PNG or JSON."""
    if info["task"] == "generate":
        raise ApiError(
            400,
            "wrong_task",
            f"{name!r} is a generation model ({info['family']}): POST JSON to /v1/models/{name}/generate",
        )
    if direction not in info["directions"]:
        raise ApiError(
            400,
            "unsupported_direction",
            f"{name!r} translates {', '.join(info['directions'])} only (imported without the other generator)",
        )
    if heatmap and not info["heatmap"]:
        raise ApiError(400, "no_heatmap", f"{name!r} ({info['family']}) has no attention heatmap: drop heatmap")
    if info["image"]["channels"] not in (1, 3):
        raise ApiError(400, "unsupported_model", f"{name!r} works on {info['image']['channels']}-channel images")
    body = await read_body(request.stream(), request.headers.get("content-length"), args.max_request_bytes)
    data = upload_bytes(request.headers.get("content-type"), body)
    image = decode_image(data, info["image"]["channels"], max_pixels(info, args), args.min_side)
    res = await run("translate", TranslateJob(image, direction, heatmap, deadline=deadline(args)))
    headers = _headers(info, res)
    if heatmap:
        body_out = TranslationBody(
            image=_b64(res.pngs[0]), heatmap=_b64(res.heatmaps[0]), width=image.shape[1], height=image.shape[0]
        )
        return JSONResponse(body_out.model_dump(), headers=headers)
    return Response(res.pngs[0], media_type="image/png", headers=headers)
