"""The JSON error contract's one home, light enough for Serve's HTTP proxy (starlette only: no torch, no Ray import).

- `error_response`: every error the API answers, `{"error": {"code", "message"}}` with `X-Error-Code`.
- `ReplicaLost` / `proxy_middlewares`: one hop has no gansvc code between Serve's proxy and the model replica, so
  when that replica dies mid-request (killed, OOM, node lost) the proxy itself answers: a bare 500 (Ray 2.60,
  ray.serve._private.http_util.send_http_response_on_exception sends nothing for a RayActorError, uvicorn then
  answers "Internal Server Error"). Installed in the proxy, this middleware answers such a model request as the
  front door does on its two-hop path: 503 `model_unavailable` with Retry-After (the replica is being replaced).
  Install it with the environment variable `RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=gansvc.serve.errors:
  proxy_middlewares` in the environment of the node that runs the proxy (`ray start` / the head pod): Serve reads
  it when the proxy starts (ray.serve._private.http_util.configure_http_middlewares).
"""

from __future__ import annotations

import re
from typing import Any

from starlette.middleware import Middleware
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

RETRY_AFTER_S = 1  # a dead replica is replaced in seconds (tests/integration/serve/test_faults_serve.py measures it)
ROUTE = re.compile(r"^/v1/models/([^/]+)/(generate|interpolate|translate)$")


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status, headers={"X-Error-Code": code})


def unavailable_response(name: str, why: str) -> JSONResponse:
    """503 model_unavailable + Retry-After: the client did nothing wrong, a replica is being replaced: retry."""
    response = error_response(
        503, "model_unavailable", f"model {name!r} is restarting ({why}); retry in {RETRY_AFTER_S} s"
    )
    response.headers["Retry-After"] = str(RETRY_AFTER_S)
    return response


class ReplicaLost:
    """Around Serve's proxy: a model request (/v1/models/<name>/generate|translate) that ended without any response
    (the replica died with the request in flight) is answered 503 model_unavailable instead of a bare 500. Any
    request that got a response start, and every other path, passes unchanged."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        m = ROUTE.match(scope.get("path", "")) if scope["type"] == "http" else None
        if m is None:
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception:
            if started:
                raise
        if not started:  # (a client that went away meanwhile just does not read it)
            await unavailable_response(m.group(1), "its replica stopped")(scope, receive, send)


def proxy_middlewares() -> list[Any]:
    """RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=gansvc.serve.errors:proxy_middlewares."""
    return [Middleware(ReplicaLost)]
