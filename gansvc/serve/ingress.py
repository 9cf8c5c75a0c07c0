"""The HTTP front door: a FastAPI app (OpenAPI at /docs) served by the `Ingress` deployment.

Models are discovered, not configured: every Serve application holding a `GanModel` deployment is a model, served
under its application name. Adding a model = deploying one more application (`serve deploy` with an updated config);
the ingress and the other models' replicas are untouched and keep answering, and the new model is reachable within
`discovery_ttl_s` of its application existing (requests wait while its replicas load).
"""
# No `from __future__ import annotations` here: FastAPI must resolve the route methods' annotations (Request, bodies)
# when Serve rebuilds the routes, which string annotations break.

import asyncio
import base64
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from ray import serve
from ray.exceptions import RayActorError, WorkerCrashedError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError
from ray.serve.metrics import Counter, Histogram
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gansvc.data.spec import DataSpec
from gansvc.families.sampling import encode_labels
from gansvc.serve.model import SECONDS_BOUNDS, DeadlineExpired
from gansvc.serve.schemas import (MAX_N_CAP, MODEL_DEPLOYMENT, ErrorBody, GenerateRequest, GenJob, ImagesBody,
                                  IngressArgs, JobResult, ModelInfo, ModelList, TranslateJob, TranslationBody)
from gansvc.serve.uploads import ApiError, decode_image, read_body, upload_bytes

DESCRIPTION = """Generation (noise / labels -> image) and translation (image -> image) with the promoted GAN models.
Errors are JSON `{"error": {"code": ..., "message": ...}}` with a 4xx/5xx status. Responses carry `X-Model-Version`,
`X-Batch-Size` (requests in the forward pass this request shared) and `X-Replica`.

Limits (this document is the whole contract; per-model values are in `GET /v1/models`):
- every request body: at most `max_request_bytes` (deploy config, default 8 MiB), counted while it is read, with or
  without Content-Length -> 413 `payload_too_large`;
- generate: `n` at most the model's `max_n` (never more than %d) -> 422 `n_out_of_range`; `labels` only for
  label-conditioned models, with the attributes and values listed in `GET /v1/models` -> 422 `invalid_labels`;
- translate: the image at most the model's `max_pixels` (width x height; default 4 x its training pixels) -> 413
  `image_too_large`, both sides at least `min_side` (default 8) -> 400 `image_too_small`;
- a model call longer than `request_timeout_s` -> 504 `timeout` (the work is dropped, not finished); a model replica
  that died or is restarting -> 503 `model_unavailable` with `Retry-After`.""" % MAX_N_CAP
ERRORS = {s: {"model": ErrorBody} for s in (400, 404, 413, 415, 422, 503, 504)}
PNG = {"content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}}
GENERATED = {"description": "image/png (format png or grid), or JSON with base64 PNGs (format json)", "content": {
    "image/png": {"schema": {"type": "string", "format": "binary"}},
    "application/json": {"schema": ImagesBody.model_json_schema()}}}
RETRY_AFTER_S = 1  # a dead replica is replaced in seconds (tests/test_faults_serve.py measures it)

app = FastAPI(title="gansvc", version="1", description=DESCRIPTION)


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status, headers={"X-Error-Code": code})


@app.exception_handler(ApiError)
async def _api_error(_: Request, err: ApiError) -> JSONResponse:
    response = error_response(err.status, err.code, err.message)
    response.headers.update(err.headers)
    return response


@app.exception_handler(RequestValidationError)
async def _invalid(_: Request, err: RequestValidationError) -> JSONResponse:
    parts = [f"{'.'.join(str(p) for p in e['loc'] if p != 'body') or 'body'}: {e['msg']}" for e in err.errors()]
    return error_response(422, "invalid_request", "; ".join(parts))


@app.exception_handler(StarletteHTTPException)
async def _http(_: Request, err: StarletteHTTPException) -> JSONResponse:
    codes = {404: "not_found", 405: "method_not_allowed"}
    response = error_response(err.status_code, codes.get(err.status_code, "http_error"), str(err.detail))
    response.headers.update(err.headers or {})  # e.g. the `Allow` of a 405 (RFC 9110 15.5.6: MUST)
    return response


_ROUTE = re.compile(r"^/v1/models/([^/]+)/(generate|translate)$")


class BodyLimit:
    """Every request body, on every route, read at most `max_request_bytes`: counted chunk by chunk as it arrives
    (a chunked body has no Content-Length to trust), answered 413 as soon as it passes the limit, with
    `Connection: close` so the rest is not read. A body within the limit is handed to the route unchanged."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = getattr(getattr(scope.get("app"), "state", None), "args", None)
        if scope["type"] != "http" or limit is None:
            await self.app(scope, receive, send)
            return
        max_bytes = limit.max_request_bytes
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
        response = error_response(413, "payload_too_large", f"the request body exceeds {max_bytes} bytes "
                                                            "(max_request_bytes)")
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


app.add_middleware(BodyLimit)  # added before _observe: _observe wraps it, so its 413s are counted


@app.middleware("http")
async def _observe(request: Request, call_next: Any) -> Response:
    """Request count, latency and errors per model and endpoint."""
    state = request.app.state
    t0 = time.perf_counter()
    response: Response = await call_next(request)
    if hasattr(state, "metrics"):
        m = _ROUTE.match(request.url.path)
        endpoint = m.group(2) if m else request.url.path.strip("/").replace("/", "_") or "root"
        if endpoint not in ("generate", "translate", "v1_models", "healthz", "readyz", "docs", "openapi.json"):
            endpoint = "other"
        name = m.group(1) if m else ""
        known = state.catalog.known() if hasattr(state, "catalog") else set()
        model = name if name in known else "-"  # only served names: clients cannot blow up the tag cardinality
        req, lat, err = state.metrics
        req.inc(tags={"model": model, "endpoint": endpoint, "status": str(response.status_code)})
        lat.observe(time.perf_counter() - t0, tags={"model": model, "endpoint": endpoint})
        if response.status_code >= 400:
            err.inc(tags={"model": model, "endpoint": endpoint,
                          "kind": response.headers.get("x-error-code", str(response.status_code))})
    return response


@dataclass
class AppState:
    status: str
    message: str
    is_model: bool
    deployed: float


class Catalog:
    """The Serve applications (from serve.status(), cached for `ttl` s) and the info of each model application."""

    def __init__(self, ttl: float, own_app: str, timeout: float) -> None:
        self.ttl, self.own_app, self.timeout = ttl, own_app, timeout
        self._apps: dict[str, AppState] = {}
        self._at = -1e9
        self._lock = asyncio.Lock()
        self._infos: dict[str, tuple[float, dict[str, Any]]] = {}
        self._handles: dict[str, Any] = {}

    async def apps(self, force: bool = False) -> dict[str, AppState]:
        if force or time.monotonic() - self._at > self.ttl:
            async with self._lock:
                if force or time.monotonic() - self._at > self.ttl:
                    status = await asyncio.to_thread(serve.status)
                    apps = {}
                    for name, a in status.applications.items():
                        # while Serve rebuilds an updated application it lists no deployments, but the old
                        # replicas still answer: a model stays a model
                        was = self._apps.get(name)
                        is_model = MODEL_DEPLOYMENT in a.deployments or (
                            not a.deployments and was is not None and was.is_model)
                        if name != self.own_app:
                            apps[name] = AppState(str(getattr(a.status, "value", a.status)), a.message, is_model,
                                                  a.last_deployed_time_s)
                    self._apps, self._at = apps, time.monotonic()
        return self._apps

    def known(self) -> set[str]:
        return {n for n, a in self._apps.items() if a.is_model}

    async def models(self) -> list[str]:
        return sorted(n for n, a in (await self.apps()).items() if a.is_model)

    async def handle(self, name: str) -> Any:
        if name not in self._handles:
            self._handles[name] = await asyncio.to_thread(serve.get_deployment_handle, MODEL_DEPLOYMENT, name)
        return self._handles[name]

    async def info(self, name: str) -> dict[str, Any]:
        """What a model accepts (from one of its replicas); cached per deployment, kept while an update rolls out."""
        app_state = (await self.apps()).get(name)
        if app_state is None or not app_state.is_model:
            known = ", ".join(await self.models()) or "none"
            raise ApiError(404, "unknown_model", f"no model named {name!r}; served models: {known} (GET /v1/models)")
        cached = self._infos.get(name)
        if cached and (cached[0] == app_state.deployed or app_state.status != "RUNNING"):
            return cached[1]
        if app_state.status in ("DEPLOY_FAILED", "UNHEALTHY"):
            raise ApiError(503, "model_unavailable", f"model {name!r} failed to load: {app_state.message[:300]}")
        info = await call(await self.handle(name), "info", None, self.timeout, name)
        if app_state.status == "RUNNING":
            self._infos[name] = (app_state.deployed, info)
        return info


# a replica died (killed, OOM, node lost) or none can take the request now: the model is briefly unavailable,
# Serve replaces the replica; the client should retry (503 + Retry-After), it did nothing wrong and the server did not
# fail on its input (500)
UNAVAILABLE = (RayActorError, WorkerCrashedError, BackPressureError, DeploymentUnavailableError,
               ReplicaUnavailableError)


async def call(handle: Any, method: str, job: Any, timeout: float, name: str) -> Any:
    """A model replica's method, bounded by `timeout`. A call given up (timeout, or the HTTP client went away and
    Serve cancelled this request) is cancelled at the replica too: queued, it never reaches a forward pass."""
    method_handle = getattr(handle, method)
    response = method_handle.remote(job) if job is not None else method_handle.remote()
    try:
        return await asyncio.wait_for(_result(response), timeout)
    except TimeoutError:
        response.cancel()
        raise ApiError(504, "timeout", f"model {name!r} did not answer within {timeout:g} s; retry later") from None
    except asyncio.CancelledError:
        response.cancel()
        raise
    except ApiError:
        raise
    except DeadlineExpired:
        raise ApiError(504, "timeout", f"model {name!r} did not start within {timeout:g} s; retry later") from None
    except UNAVAILABLE as err:
        raise ApiError(503, "model_unavailable", f"model {name!r} is restarting ({type(err).__name__}); retry in "
                                                 f"{RETRY_AFTER_S} s", {"Retry-After": str(RETRY_AFTER_S)}) from None
    except Exception as err:  # noqa: BLE001 - a replica failure must not leak a traceback to the client
        first = (str(err).strip().splitlines() or [type(err).__name__])[-1][:300]
        raise ApiError(500, "model_error", f"model {name!r} failed: {first}") from None


async def _result(response: Any) -> Any:
    return await response


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _headers(info: dict[str, Any], res: JobResult, **extra: Any) -> dict[str, str]:
    return {"X-Model-Version": str(res.version or info["version"]), "X-Batch-Size": str(res.batch_requests),
            "X-Batch-Images": str(res.batch_images), "X-Replica": res.replica, **{k: str(v) for k, v in extra.items()}}


@serve.ingress(app)
class Ingress:
    def __init__(self, args: dict[str, Any]) -> None:
        self.args = IngressArgs.model_validate(args)
        try:
            own = serve.get_replica_context().app_name
        except Exception:  # noqa: BLE001
            own = ""
        self.catalog = Catalog(self.args.discovery_ttl_s, own, self.args.request_timeout_s)
        tags = ("model", "endpoint")
        app.state.args, app.state.catalog = self.args, self.catalog
        app.state.metrics = (
            Counter("gansvc_http_requests", "HTTP requests by model, endpoint and status", (*tags, "status")),
            Histogram("gansvc_http_request_seconds", "HTTP request latency", SECONDS_BOUNDS, tags),
            Counter("gansvc_http_errors", "HTTP errors by model, endpoint and kind (error code)", (*tags, "kind")))

    @app.get("/healthz", summary="liveness: the HTTP front door answers")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="readiness: every configured model application is running (its replicas loaded)",
             responses={503: {"description": "some model is not loaded yet"}})
    async def readyz(self) -> JSONResponse:
        apps = await self.catalog.apps(force=True)
        models = {n: a.status for n, a in apps.items() if a.is_model}
        pending = {n: f"{a.status}: {a.message}".strip(": ") for n, a in apps.items() if a.status != "RUNNING"}
        missing = [m for m in self.args.expect_models if m not in models]
        ready = not pending and not missing
        return JSONResponse({"ready": ready, "models": models, "pending": pending, "missing": missing},
                            200 if ready else 503)

    @app.get("/v1/models", response_model=ModelList, summary="the served models and what they accept")
    async def list_models(self) -> ModelList:
        out = []
        for name in await self.catalog.models():
            try:
                info = await self.catalog.info(name)
            except ApiError:
                continue  # being deleted or failing: not listed
            limits = {"max_pixels": self._max_pixels(info), "min_side": self.args.min_side} \
                if info["task"] != "generate" else {}
            fields = {k: v for k, v in info.items() if k in ModelInfo.model_fields}
            out.append(ModelInfo(name=name, **{**fields, **limits}))
        return ModelList(models=out)

    @app.post("/v1/models/{name}/generate", response_model=None, responses={200: GENERATED, **ERRORS},
              summary="images from noise (and labels): image/png (png, grid) or JSON (json)",
              description="Per model (GET /v1/models): `n` at most its `max_n` (422 n_out_of_range); `labels` only for "
                          "a `conditional` model, with its `attributes` and their values (422 invalid_labels), as one "
                          "mapping or a list of n mappings; format `png` needs n = 1 (422 invalid_format). A "
                          "translate model answers 400 wrong_task.")
    async def generate(self, name: str, body: GenerateRequest) -> Response:
        info = await self.catalog.info(name)
        if info["task"] != "generate":
            raise ApiError(400, "wrong_task", f"{name!r} is an image-to-image model ({info['family']}): POST an image "
                                              f"to /v1/models/{name}/translate")
        if body.n > info["max_n"]:
            raise ApiError(422, "n_out_of_range", f"n={body.n}: {name!r} makes at most {info['max_n']} images per "
                                                  "request")
        fmt: Literal["png", "grid", "json"] = body.format or ("png" if body.n == 1 else "grid")
        if fmt == "png" and body.n != 1:
            raise ApiError(422, "invalid_format", 'format "png" returns one image: use n=1, or "grid" / "json"')
        seed = body.seed if body.seed is not None else secrets.randbits(62)
        labels = self._labels(name, info, body)
        job = GenJob(body.n, seed, labels, body.truncation, fmt, deadline=self._deadline())
        res: JobResult = await call(await self.catalog.handle(name), "generate", job, self.args.request_timeout_s, name)
        headers = _headers(info, res, **{"X-Seed": seed})
        if fmt == "json":
            payload = ImagesBody(images=[_b64(p) for p in res.pngs], seed=seed, model=name,
                                 version=res.version or info["version"])
            return JSONResponse(payload.model_dump(), headers=headers)
        return Response(res.pngs[0], media_type="image/png", headers=headers)

    def _deadline(self) -> float:
        """After this time.time() the ingress has answered 504: a replica that gets the job later skips it."""
        return time.time() + self.args.request_timeout_s

    def _max_pixels(self, info: dict[str, Any]) -> int:
        own = int(info.get("max_pixels") or 0) or (1 << 20)  # a replica of an older version reports none
        return min(own, self.args.max_pixels) if self.args.max_pixels else own

    @staticmethod
    def _labels(name: str, info: dict[str, Any], body: GenerateRequest) -> list[dict[str, str]] | None:
        if not info["conditional"]:
            if body.labels:
                raise ApiError(422, "invalid_labels", f"{name!r} is not label-conditioned: drop labels")
            return None
        items = body.labels if isinstance(body.labels, list) else [body.labels or {}] * body.n
        if len(items) != body.n:
            raise ApiError(422, "invalid_labels", f"labels is a list of {len(items)} mappings; give n={body.n} of "
                                                  "them, or one mapping for every image")
        try:
            encode_labels(DataSpec.from_dict(info["data_spec"]), items, seed=0)
        except ValueError as err:
            raise ApiError(422, "invalid_labels", str(err).replace("labels item 0: ", "")) from None
        return items

    @app.post("/v1/models/{name}/translate", response_model=None, summary="translate one image (PNG out, same size)",
              description="The body: one PNG or JPEG (raw, or a multipart file field `image`) of at most "
                          "`max_request_bytes`; width x height at most the model's `max_pixels` (413) and both sides "
                          "at least `min_side` (400), both listed per model in GET /v1/models. Transparent images are "
                          "composited on white, as in training. `direction` must be one of the model's `directions`, "
                          "`heatmap=true` needs a model with `heatmap` (400 otherwise).",
              responses={200: {"content": {"image/png": {"schema": {"type": "string", "format": "binary"}},
                                           "application/json": {"schema": TranslationBody.model_json_schema()}},
                               "description": "image/png, or with heatmap=true JSON with the image and its heatmap"},
                         **ERRORS},
              openapi_extra={"requestBody": {"required": True, "content": {
                  "image/png": {"schema": {"type": "string", "format": "binary"}},
                  "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
                  "multipart/form-data": {"schema": {"type": "object", "properties": {
                      "image": {"type": "string", "format": "binary"}}}}}}})
    async def translate(self, name: str, request: Request,
                        direction: Literal["a2b", "b2a"] = Query("a2b", description="a2b (domain A -> B) or b2a"),
                        heatmap: bool = Query(False, description="attention models (ugatit): answer JSON with "
                                                                 "base64 PNGs of the image and its attention heatmap")
                        ) -> Response:
        info = await self.catalog.info(name)
        if info["task"] == "generate":
            raise ApiError(400, "wrong_task", f"{name!r} is a generation model ({info['family']}): POST JSON to "
                                              f"/v1/models/{name}/generate")
        if direction not in info["directions"]:
            raise ApiError(400, "unsupported_direction", f"{name!r} translates {', '.join(info['directions'])} only "
                                                         "(imported without the other generator)")
        if heatmap and not info["heatmap"]:
            raise ApiError(400, "no_heatmap", f"{name!r} ({info['family']}) has no attention heatmap: drop heatmap")
        if info["image"]["channels"] not in (1, 3):
            raise ApiError(400, "unsupported_model", f"{name!r} works on {info['image']['channels']}-channel images")
        body = await read_body(request.stream(), request.headers.get("content-length"), self.args.max_request_bytes)
        data = upload_bytes(request.headers.get("content-type"), body)
        image = decode_image(data, info["image"]["channels"], self._max_pixels(info), self.args.min_side)
        job = TranslateJob(image, direction, heatmap, deadline=self._deadline())
        res: JobResult = await call(await self.catalog.handle(name), "translate", job, self.args.request_timeout_s,
                                    name)
        headers = _headers(info, res)
        if heatmap:
            body_out = TranslationBody(image=_b64(res.pngs[0]), heatmap=_b64(res.heatmaps[0]), width=image.shape[1],
                                       height=image.shape[0])
            return JSONResponse(body_out.model_dump(), headers=headers)
        return Response(res.pngs[0], media_type="image/png", headers=headers)
