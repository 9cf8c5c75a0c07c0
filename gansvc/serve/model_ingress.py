"""One hop: a model application that answers its own HTTP routes.

A model application deployed with `route_prefix: /v1/models/<name>` (the application name) gets requests for
/v1/models/<name>/generate, /interpolate and /translate straight from Serve's proxy: the proxy matches the longest
route prefix (ray.serve._private.proxy_router.ProxyRouter.match_route: a prefix matches at a "/" boundary, so
/v1/models/gen does not catch /v1/models/gen2/...), and the front door's "/" keeps everything else (/healthz, /readyz,
/v1/models, /openapi.json, /docs, unknown models). The replica that runs the model validates the request, batches it
with @serve.batch and answers: no second deployment on the request path. Without a route_prefix the application is
reached through the front door and its deployment handle, as before (two hops).

The request handling is the front door's (gansvc.serve.api: the same validation, errors, body limit, headers and
metrics). The HTTP limits (max_request_bytes, max_pixels cap, min_side, request_timeout_s) are the front door's
config: a model replica fetches them from the front door (`Ingress.http_args`) on its first request and every
SETTINGS_TTL_S after, in the background; with no front door deployed it uses IngressArgs' defaults.
"""
# No `from __future__ import annotations`: FastAPI must resolve the route methods' annotations (see ingress.py).

import asyncio
import time
from typing import Any, Literal

from fastapi import Query, Request
from fastapi.responses import Response
from ray import serve

from gansvc.serve.api import (
    generate_response,
    guarded,
    http_metrics,
    interpolate_response,
    make_api,
    translate_response,
)
from gansvc.serve.model import GanModel
from gansvc.serve.schemas import INGRESS_DEPLOYMENT, GenerateRequest, IngressArgs, InterpolateRequest, JobResult

SETTINGS_TTL_S = 5.0  # how stale the front door's HTTP limits may be on a model replica (a front door redeploy)
# The model's own app: no /docs or /openapi.json here (the front door's document at "/" is the whole contract,
# including these routes); a request for a path it does not have answers the JSON 404 / 405 of the contract.
model_api = make_api(title="gansvc model", docs_url=None, redoc_url=None, openapi_url=None)


class FrontDoorSettings:
    """The front door's HTTP limits, fetched through its deployment handle (not on a request's path: once, then
    refreshed in the background when older than `ttl`)."""

    def __init__(self, ttl: float = SETTINGS_TTL_S) -> None:
        self.ttl, self._at = ttl, -1e9
        self.args: IngressArgs | None = None
        self._refreshing: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> IngressArgs:
        if self.args is None:
            async with self._lock:
                if self.args is None:
                    await self.refresh()
        elif time.monotonic() - self._at > self.ttl and (self._refreshing is None or self._refreshing.done()):
            self._refreshing = asyncio.create_task(self.refresh())
        assert self.args is not None
        return self.args

    async def refresh(self) -> None:
        try:
            status = await asyncio.to_thread(serve.status)
            fronts = sorted(n for n, a in status.applications.items() if INGRESS_DEPLOYMENT in a.deployments)
            if fronts:
                handle = serve.get_deployment_handle(INGRESS_DEPLOYMENT, fronts[0])
                self.args = IngressArgs.model_validate(await asyncio.wait_for(handle.http_args.remote(), 30))
        except Exception:  # noqa: BLE001 - front door restarting or gone: keep what we had, retry after ttl
            pass
        if self.args is None:
            self.args = IngressArgs()  # no front door: the documented defaults
        self._at = time.monotonic()


@serve.ingress(model_api)
class ModelIngress(GanModel):
    """GanModel (batching, handle methods `info` / `generate` / `translate` for the front door's path) plus the
    model's HTTP routes, relative to the application's route prefix /v1/models/<name>."""

    def __init__(self, args: dict[str, Any]) -> None:
        super().__init__(args)
        self._static_info = self.info()  # what validation reads (the counters in it are not used there)
        self.settings = FrontDoorSettings()
        model_api.state.settings = self.settings.get
        model_api.state.known = lambda: {self.served_as}
        model_api.state.metrics = http_metrics()

    async def _run(self, method: str, job: Any) -> JobResult:
        """The job on this replica (its @serve.batch queue), bounded like a front door call."""
        args = await self.settings.get()
        res: JobResult = await guarded(getattr(self, method)(job), args.request_timeout_s, self.served_as)
        return res

    @model_api.post("/generate", response_model=None)
    async def http_generate(self, body: GenerateRequest) -> Response:
        return await generate_response(self.served_as, body, self._static_info, await self.settings.get(), self._run)

    @model_api.post("/interpolate", response_model=None)
    async def http_interpolate(self, body: InterpolateRequest) -> Response:
        return await interpolate_response(self.served_as, body, self._static_info, await self.settings.get(), self._run)

    @model_api.post("/translate", response_model=None)
    async def http_translate(
        self, request: Request, direction: Literal["a2b", "b2a"] = Query("a2b"), heatmap: bool = Query(False)
    ) -> Response:
        return await translate_response(
            self.served_as, request, direction, heatmap, self._static_info, await self.settings.get(), self._run
        )
