"""The web playground: `GET /` on the front door, a page to try the served models in a browser (issue 17).

Plain HTML, CSS and JavaScript shipped in the package (gansvc/serve/static/): no CDN, no build step, nothing loaded
from another host (clusters are often offline). The page talks to the same API as any client (GET /v1/models, POST
.../generate, .../interpolate, .../translate) through relative URLs, so it works wherever the front door is mounted,
and shows the API's JSON errors as they are written. A Content-Security-Policy holds it to this server: scripts,
styles and requests from 'self' only, images also from the blob:/data: URLs the page makes of the answers.
"""
# No `from __future__ import annotations`: FastAPI must resolve the route functions' annotations (see ingress.py).

import importlib.resources
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

PLAYGROUND_URL = "/playground"  # the page's own files: /playground/<name>
PAGE = "index.html"
ASSETS = {
    "playground.js": "text/javascript; charset=utf-8",
    "playground.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
# no-cache: the browser revalidates, so a redeployed gansvc's page never runs with an older script
HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}


def static_dir() -> Path:
    folder = Path(str(importlib.resources.files("gansvc.serve") / "static"))
    missing = [name for name in (PAGE, *ASSETS) if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{folder} lacks {', '.join(missing)} (the playground's files): reinstall gansvc (./dev setup, or "
            "pip install -e .)"
        )
    return folder


def add_playground(app: FastAPI) -> None:
    """GET / (the page) and GET /playground/<name> (its script, style sheet and icon), read once at start-up."""
    folder = static_dir()
    files = {name: (folder / name).read_bytes() for name in (PAGE, *ASSETS)}

    @app.get("/", include_in_schema=False)
    async def playground() -> Response:
        return Response(
            files[PAGE],
            media_type="text/html; charset=utf-8",
            headers={**HEADERS, "Content-Security-Policy": CSP, "Referrer-Policy": "no-referrer"},
        )

    @app.get(PLAYGROUND_URL + "/{name}", include_in_schema=False)
    async def playground_asset(name: str) -> Response:
        if name not in ASSETS:
            raise StarletteHTTPException(404, f"no playground file {name!r}; the page is at /")
        return Response(files[name], media_type=ASSETS[name], headers=HEADERS)
