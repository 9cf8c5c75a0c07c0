"""`python -m gansvc.serve --models a,b [--config serve/gansvc.yaml] [--port P] [--detach]`: serve registered models.

Deploys declaratively through the Ray dashboard's Serve REST API, exactly as `serve deploy` does, so a later
`serve deploy` of an updated config (or this command with more models) adds models without restarting the ones that
run. Applications already deployed declaratively that this command does not name are kept. The cluster is $RAY_ADDRESS
($RAY_DASHBOARD_ADDRESS for the REST API), else the embedded stack (`python -m gansvc.local up`). Prints the URL, then
stays up until Ctrl-C, which removes the applications it deployed (--detach: return at once and leave them running).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from typing import Any

import requests

from gansvc.serve.app import DEFAULT_CONFIG, INGRESS_APP, deploy_config, load_config

BUILTIN = {
    "proxy_location": "HeadOnly",
    "http_options": {"host": "127.0.0.1", "port": 29320},
    "applications": [
        {"name": INGRESS_APP, "route_prefix": "/", "import_path": "gansvc.serve.app:build_app", "args": {}}
    ],
}
API = "/api/serve/applications/"


class ServeCliError(RuntimeError):
    pass


def dashboard_address() -> tuple[str, int | None]:
    """(dashboard URL, Serve port hint) of the current cluster."""
    if os.environ.get("RAY_DASHBOARD_ADDRESS"):
        port = os.environ.get("GANSVC_SERVE_PORT")
        return os.environ["RAY_DASHBOARD_ADDRESS"].rstrip("/"), int(port) if port else None
    if os.environ.get("RAY_ADDRESS"):
        import ray

        ctx = ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False)
        url = ctx.dashboard_url
        ray.shutdown()
        if not url:
            raise ServeCliError("the cluster at $RAY_ADDRESS has no dashboard: set RAY_DASHBOARD_ADDRESS")
        return (url if url.startswith("http") else f"http://{url}"), None
    from gansvc import local

    state = local.load_state(local.default_state_dir())
    if state is None or not local.running(state)["ray"]:
        raise ServeCliError(
            "no cluster: set RAY_ADDRESS (and RAY_DASHBOARD_ADDRESS), or start the embedded stack "
            "with `python -m gansvc.local up`"
        )
    for key, value in state.env().items():
        os.environ.setdefault(key, value)
    return state.dashboard_url, state.ports.serve_http


def check_models(config: dict[str, Any]) -> None:
    """Fail fast on names the registry does not know (when this machine can read the registry; replicas re-check)."""
    from gansvc import storage
    from gansvc.registry import RegistryError, get_entry

    for app in config["applications"]:
        args = app.get("args") or {}
        if "model" not in args:
            continue
        try:
            get_entry(args["model"], args.get("registry"))
        except RegistryError as err:
            raise ServeCliError(f"{app['name']}: {err}") from None
        except (storage.StorageError, OSError) as err:
            print(
                f"warning: cannot read the registry from here ({err}); the replicas will check {args['model']!r}",
                file=sys.stderr,
            )


def auth_headers() -> dict[str, str]:
    """`Authorization` for the dashboard when the cluster uses Ray's token auth (RAY_AUTH_MODE=token), as `serve
    deploy` sends it; {} when auth is off."""
    from gansvc import local

    try:
        return local.ray_auth_headers()
    except local.StackError as err:
        raise ServeCliError(str(err)) from None


def _rest(method: str, url: str, **kw: Any) -> requests.Response:
    try:
        resp = requests.request(method, url, timeout=60, headers=auth_headers(), **kw)
    except requests.RequestException as err:
        raise ServeCliError(f"the Ray dashboard at {url} does not answer: {err}") from None
    if resp.status_code in (401, 403):
        raise ServeCliError(
            f"{method} {url} -> {resp.status_code}: the Ray dashboard wants its auth token: set "
            'RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH (eval "$(python -m gansvc.local env)" for '
            f"the embedded stack) ({resp.text[:200]})"
        )
    if resp.status_code >= 400:
        raise ServeCliError(f"{method} {url} -> {resp.status_code}: {resp.text[:1000]}")
    return resp


def declarative_apps(dashboard: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(configs of the applications deployed through the REST API, Serve's details)."""
    details = _rest("GET", dashboard + API).json()
    apps = [
        a["deployed_app_config"] for a in (details.get("applications") or {}).values() if a.get("deployed_app_config")
    ]
    return apps, details


def deploy(dashboard: str, config: dict[str, Any]) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """PUT `config` merged with the declarative applications it does not name.
    Returns (the names it deployed, the configs those names had before, for `restore`)."""
    ours = [a["name"] for a in config["applications"]]
    running, _ = declarative_apps(dashboard)
    before = {a["name"]: a for a in running if a["name"] in ours}
    merged = dict(config)
    merged["applications"] = [a for a in running if a["name"] not in ours] + config["applications"]
    _rest("PUT", dashboard + API, json=merged)
    return ours, before


def wait_running(dashboard: str, names: list[str], timeout: float) -> dict[str, Any]:
    deadline, last = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        _, details = declarative_apps(dashboard)
        apps = details.get("applications") or {}
        states = {n: (apps.get(n) or {}).get("status", "NOT_STARTED") for n in names}
        failed = [n for n, s in states.items() if s in ("DEPLOY_FAILED", "UNHEALTHY")]
        if failed:
            raise ServeCliError(
                "; ".join(f"{n}: {_why(apps[n])}" for n in failed) + " (full tracebacks: "
                "`serve status`; after fixing code, change the config or remove the application)"
            )
        if all(s == "RUNNING" for s in states.values()):
            return details
        line = ", ".join(f"{n} {s}" for n, s in states.items())
        if line != last:
            print(f"  {line}", file=sys.stderr, flush=True)
            last = line
        time.sleep(1.0)
    raise ServeCliError(f"not running after {timeout:g} s: see `serve status` or the Ray dashboard")


def _why(app: dict[str, Any]) -> str:
    """The last line of each failing deployment's message (the exception), else the application's message."""
    lines = [(d.get("message") or "").strip().splitlines() for d in (app.get("deployments") or {}).values()]
    found = [ls[-1] for ls in lines if ls]
    return " | ".join(found) or (app.get("message") or "failed").strip()


def restore(dashboard: str, names: list[str], before: dict[str, dict[str, Any]]) -> None:
    """Undo `deploy`: applications it added go away, applications it replaced get their previous config back."""
    running, details = declarative_apps(dashboard)
    apps = [before.get(a["name"]) if a["name"] in names else a for a in running]
    apps = [a for a in apps if a is not None]
    if apps:
        _rest(
            "PUT",
            dashboard + API,
            json={
                "proxy_location": details.get("proxy_location") or "HeadOnly",
                "http_options": details.get("http_options") or {},
                "applications": apps,
            },
        )
    else:
        _rest("DELETE", dashboard + API)  # nothing else runs: shut Serve down


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gansvc.serve", description=__doc__.strip().splitlines()[0])
    p.add_argument("--models", default=None, help="comma-separated served names (default: every model in --config)")
    p.add_argument("--config", default=None, help=f"Serve deploy config (default {DEFAULT_CONFIG} when present)")
    p.add_argument(
        "--port",
        type=int,
        default=None,
        help="Serve HTTP port (default $GANSVC_SERVE_PORT, else the config's); fixed once Serve runs on the cluster",
    )
    p.add_argument("--registry", default=None, help="registry root for every model (default: the config's)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the models to load")
    p.add_argument("--detach", action="store_true", help="return once running; leave the applications deployed")
    args = p.parse_args(argv)
    try:
        dashboard, port_hint = dashboard_address()
        path = args.config or (DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None)
        base = load_config(path) if path else BUILTIN
        models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
        port = args.port or (int(os.environ["GANSVC_SERVE_PORT"]) if os.environ.get("GANSVC_SERVE_PORT") else port_hint)
        config = deploy_config(base, models, port, args.registry)
        check_models(config)
        names, before = deploy(dashboard, config)
        print(f"deploying {', '.join(names)} through {dashboard} ...", file=sys.stderr, flush=True)
    except (ServeCliError, OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        details = wait_running(dashboard, names, args.timeout)
    except (ServeCliError, KeyboardInterrupt) as err:
        print(f"error: {err or 'interrupted'}", file=sys.stderr)
        try:  # leave the service as it was: drop what was added, restore what was replaced
            restore(dashboard, names, before)
            print("rolled back: the applications are as before this command", file=sys.stderr)
        except ServeCliError as undo:
            print(f"error: could not roll back: {undo}", file=sys.stderr)
        return 2
    http = details.get("http_options") or {}
    url = f"http://{http.get('host', '127.0.0.1')}:{http.get('port', port)}"
    served = [a["name"] for a in config["applications"] if a["name"] != INGRESS_APP]
    print(
        f"gansvc serves {', '.join(served) or 'no models'} at {url}  (playground {url}/ in a browser, API docs "
        f"{url}/docs, models {url}/v1/models)",
        flush=True,
    )
    if args.detach:
        return 0
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass
    for sig in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not cut the clean-up short
        signal.signal(sig, signal.SIG_IGN)
    added = [n for n in names if n not in before]
    print(
        f"stopping: removing {', '.join(added) or 'nothing'}" + (f", restoring {', '.join(before)}" if before else ""),
        file=sys.stderr,
        flush=True,
    )
    try:
        restore(dashboard, names, before)
    except ServeCliError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
