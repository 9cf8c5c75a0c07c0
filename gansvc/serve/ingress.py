"""The HTTP front door: a FastAPI app (OpenAPI at /docs) served by the `Ingress` deployment.

Models are discovered, not configured: every Serve application holding a `GanModel` deployment is a model, served
under its application name. Adding a model = deploying one more application (`serve deploy` with an updated config);
the ingress and the other models' replicas are untouched and keep answering, and the new model is reachable within
`discovery_ttl_s` of its application existing (requests wait while its replicas load). A model application with its
own route (/v1/models/<name>, see model_ingress) gets its requests from Serve's proxy directly; the front door still
lists it, documents its routes (this OpenAPI document) and answers for it while the proxy has no route for it yet.
The request handling itself (validation, errors, limits, metrics) is gansvc.serve.api's, shared with model_ingress.
"""
# No `from __future__ import annotations` here: FastAPI must resolve the route methods' annotations (Request, bodies)
# when Serve rebuilds the routes, which string annotations break.

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import Query, Request
from fastapi.responses import JSONResponse, Response
from ray import serve

from gansvc.serve.api import (
    Runner,
    generate_response,
    guarded,
    http_metrics,
    interpolate_response,
    make_api,
    max_pixels,
    translate_response,
)
from gansvc.serve.playground import add_playground
from gansvc.serve.schemas import (
    MAX_N_CAP,
    MODEL_DEPLOYMENT,
    ErrorBody,
    GenerateRequest,
    ImagesBody,
    IngressArgs,
    InterpolateRequest,
    JobResult,
    ModelInfo,
    ModelList,
    TranslationBody,
)
from gansvc.serve.uploads import ApiError

DESCRIPTION = f"""Generation (noise / labels -> image) and translation (image -> image) with the promoted GAN models.
Errors are JSON `{{"error": {{"code": ..., "message": ...}}}}` with a 4xx/5xx status. Responses carry `X-Model-Version`,
`X-Batch-Size` (requests in the forward pass this request shared) and `X-Replica`.

Limits (this document is the whole contract; per-model values are in `GET /v1/models`):
- every request body: at most `max_request_bytes` (deploy config, default 8 MiB), counted while it is read, with or
  without Content-Length -> 413 `payload_too_large`;
- generate: `n` at most the model's `max_n` (never more than {MAX_N_CAP}) -> 422 `n_out_of_range`; `labels` only for
  label-conditioned models, with the attributes and values listed in `GET /v1/models` -> 422 `invalid_labels`;
- interpolate: `steps` (frames) at least 2 and at most the model's `max_n` -> 422 `steps_out_of_range`; `labels` as
  for generate;
- translate: the image at most the model's `max_pixels` (width x height; default 4 x its training pixels) -> 413
  `image_too_large`, both sides at least `min_side` (default 8) -> 400 `image_too_small`;
- a model call longer than `request_timeout_s` -> 504 `timeout` (the work is dropped, not finished); a model replica
  that died or is restarting -> 503 `model_unavailable` with `Retry-After`."""
ERRORS: dict[int | str, dict[str, Any]] = {s: {"model": ErrorBody} for s in (400, 404, 413, 415, 422, 503, 504)}
PNG = {"content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}}
GENERATED = {
    "description": "image/png (format png or grid), or JSON with base64 PNGs (format json)",
    "content": {
        "image/png": {"schema": {"type": "string", "format": "binary"}},
        "application/json": {"schema": ImagesBody.model_json_schema()},
    },
}
WALK = {
    "description": "format grid: image/png; webp: animated image/webp; gif: animated image/gif",
    "content": {
        media: {"schema": {"type": "string", "format": "binary"}} for media in ("image/png", "image/webp", "image/gif")
    },
}
app = make_api(title="gansvc", version="1", description=DESCRIPTION)
add_playground(app)  # GET /: the web playground (its files from gansvc/serve/static)


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
                            not a.deployments and was is not None and was.is_model
                        )
                        if name != self.own_app:
                            apps[name] = AppState(
                                str(getattr(a.status, "value", a.status)), a.message, is_model, a.last_deployed_time_s
                            )
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
        info: dict[str, Any] = await call(await self.handle(name), "info", None, self.timeout, name)
        if app_state.status == "RUNNING":
            self._infos[name] = (app_state.deployed, info)
        return info


async def call(handle: Any, method: str, job: Any, timeout: float, name: str) -> Any:
    """A model replica's method through its deployment handle (the front door's path to a model application without
    a route of its own), bounded and mapped as `api.guarded`; a call given up is cancelled at the replica too."""
    method_handle = getattr(handle, method)
    response = method_handle.remote(job) if job is not None else method_handle.remote()
    return await guarded(_result(response), timeout, name, response.cancel)


async def _result(response: Any) -> Any:
    return await response


@serve.ingress(app)
class Ingress:
    def __init__(self, args: dict[str, Any]) -> None:
        self.args = IngressArgs.model_validate(args)
        try:
            own = serve.get_replica_context().app_name
        except Exception:  # noqa: BLE001
            own = ""
        self.catalog = Catalog(self.args.discovery_ttl_s, own, self.args.request_timeout_s)
        app.state.settings, app.state.known = self.http_args_async, self.catalog.known
        app.state.metrics = http_metrics()

    async def http_args_async(self) -> IngressArgs:
        return self.args

    def http_args(self) -> dict[str, Any]:
        """The HTTP limits (body size, pixels, side, timeout): model applications with their own route fetch them
        here, so the front door's config stays the one place they are set."""
        return self.args.model_dump()

    @app.get("/healthz", summary="liveness: the HTTP front door answers")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        summary="readiness: every configured model application is running (its replicas loaded)",
        responses={503: {"description": "some model is not loaded yet"}},
    )
    async def readyz(self) -> JSONResponse:
        apps = await self.catalog.apps(force=True)
        models = {n: a.status for n, a in apps.items() if a.is_model}
        pending = {n: f"{a.status}: {a.message}".strip(": ") for n, a in apps.items() if a.status != "RUNNING"}
        missing = [m for m in self.args.expect_models if m not in models]
        ready = not pending and not missing
        return JSONResponse(
            {"ready": ready, "models": models, "pending": pending, "missing": missing}, 200 if ready else 503
        )

    @app.get("/v1/models", response_model=ModelList, summary="the served models and what they accept")
    async def list_models(self) -> ModelList:
        out = []
        for name in await self.catalog.models():
            try:
                info = await self.catalog.info(name)
            except ApiError:
                continue  # being deleted or failing: not listed
            limits = (
                {
                    "max_pixels": max_pixels(info, self.args),
                    "min_side": self.args.min_side,
                    "max_request_bytes": self.args.max_request_bytes,
                }
                if info["task"] != "generate"
                else {}
            )
            fields = {k: v for k, v in info.items() if k in ModelInfo.model_fields}
            out.append(ModelInfo(name=name, **{**fields, **limits}))
        return ModelList(models=out)

    @app.post(
        "/v1/models/{name}/generate",
        response_model=None,
        responses={200: GENERATED, **ERRORS},
        summary="images from noise (and labels): image/png (png, grid) or JSON (json)",
        description="Per model (GET /v1/models): `n` at most its `max_n` (422 n_out_of_range); `labels` only for "
        "a `conditional` model, with its `attributes` and their values (422 invalid_labels), as one "
        "mapping or a list of n mappings; format `png` needs n = 1 (422 invalid_format). A "
        "translate model answers 400 wrong_task.",
    )
    async def generate(self, name: str, body: GenerateRequest) -> Response:
        return await generate_response(name, body, await self.catalog.info(name), self.args, self._runner(name))

    @app.post(
        "/v1/models/{name}/interpolate",
        response_model=None,
        response_class=Response,  # binary only: no default application/json 200 in the document
        responses={200: WALK, **ERRORS},
        summary="a latent walk between two seeds: grid PNG or animated WebP / GIF",
        description="`steps` frames from seed A's image to seed B's (the first and last frames are generate's images "
        "for n=1 and each seed), their latents interpolated by `method` (slerp: Shoemake 1985, as in White 2016 "
        "'Sampling Generative Networks'; or lerp), all frames in one forward pass. Deterministic: the same body gives "
        "the same bytes. Per model (GET /v1/models): `steps` at most its `max_n` (422 steps_out_of_range); `labels` "
        "[A's, B's] only for a `conditional` model (422 invalid_labels); attributes are categorical, so frames "
        "before the midpoint take A's labels and the others B's. A translate model answers 400 wrong_task.",
    )
    async def interpolate(self, name: str, body: InterpolateRequest) -> Response:
        return await interpolate_response(name, body, await self.catalog.info(name), self.args, self._runner(name))

    def _runner(self, name: str) -> Runner:
        """How the front door runs a job of a model without its own route: through the model's deployment handle."""

        async def run(method: str, job: Any) -> JobResult:
            res: JobResult = await call(await self.catalog.handle(name), method, job, self.args.request_timeout_s, name)
            return res

        return run

    @app.post(
        "/v1/models/{name}/translate",
        response_model=None,
        summary="translate one image (PNG out, same size)",
        description="The body: one PNG or JPEG (raw, or a multipart file field `image`) of at most "
        "`max_request_bytes`; width x height at most the model's `max_pixels` (413) and both sides "
        "at least `min_side` (400), both listed per model in GET /v1/models. Transparent images are "
        "composited on white, as in training. `direction` must be one of the model's `directions`, "
        "`heatmap=true` needs a model with `heatmap` (400 otherwise).",
        responses={
            200: {
                "content": {
                    "image/png": {"schema": {"type": "string", "format": "binary"}},
                    "application/json": {"schema": TranslationBody.model_json_schema()},
                },
                "description": "image/png, or with heatmap=true JSON with the image and its heatmap",
            },
            **ERRORS,
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "image/png": {"schema": {"type": "string", "format": "binary"}},
                    "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
                    "multipart/form-data": {
                        "schema": {"type": "object", "properties": {"image": {"type": "string", "format": "binary"}}}
                    },
                },
            }
        },
    )
    async def translate(
        self,
        name: str,
        request: Request,
        direction: Literal["a2b", "b2a"] = Query("a2b", description="a2b (domain A -> B) or b2a"),
        heatmap: bool = Query(
            False,
            description="models with `heatmap: true` in GET /v1/models (attention models): answer JSON with "
            "base64 PNGs of the image and its attention heatmap",
        ),
    ) -> Response:
        return await translate_response(
            name, request, direction, heatmap, await self.catalog.info(name), self.args, self._runner(name)
        )
