"""Application builders for `serve deploy` / `serve run` and the deploy config the CLI derives from serve/gansvc.yaml.

Design: one Serve application per model plus one front-door application.
- `gansvc.serve.app:build_app` with args that have a `model` key builds a model application (one `GanModel`
  deployment, its own replicas/autoscaling/batching; see `ModelArgs`). With `route_prefix: /v1/models/<app name>`
  it answers its own routes (one hop: proxy -> the replica that runs the model; see `model_ingress`); with
  `route_prefix: null` it is reached through the front door and a deployment handle (two hops).
- Without a `model` key it builds the front door (`Ingress`, FastAPI, route "/"; see `IngressArgs`): /healthz,
  /readyz, /v1/models, /openapi.json, /docs, 404 for unknown models, and the route-less model applications, each
  under its application name: /v1/models/<app name>/...
Redeploying a config that adds an application leaves the unchanged applications' replicas alone (Serve compares each
application's import path + args), so served models keep answering while a new one loads. Changing one model's args
(e.g. `revision`, to pick up a newly promoted version) restarts only that model's replicas, with a surge
(`max_surge_percent`): the old replicas answer until the new ones have loaded.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gansvc.serve.schemas import INGRESS_DEPLOYMENT, MODEL_DEPLOYMENT, IngressArgs, ModelArgs

if TYPE_CHECKING:
    from ray.serve import Application

DEFAULT_CONFIG = Path("serve") / "gansvc.yaml"
INGRESS_APP = "gansvc"


def model_route(name: str) -> str:
    """The route prefix of a model application that answers its own requests: /v1/models/<application name>."""
    return f"/v1/models/{name}"


def model_app(args: ModelArgs) -> Application:
    # Ray imported here, not at module level: `python -m gansvc.serve --help` (this module's deploy-config half) starts
    # in well under a second without it
    from ray import serve

    # the HTTP routes are used only when the application has a route_prefix; the handle methods in every case
    from gansvc.serve.model_ingress import ModelIngress

    a = args.autoscaling
    autoscaling = {
        "min_replicas": a.min_replicas,
        "max_replicas": a.max_replicas,
        "target_ongoing_requests": a.target_ongoing_requests,
    }
    if a.initial_replicas is not None:
        autoscaling["initial_replicas"] = a.initial_replicas
    # serve.deployment(name=...)(cls) is serve.deployment(cls, name=...), in the form its hints describe (they type
    # every call as returning the decorator)
    deployment = serve.deployment(name=MODEL_DEPLOYMENT)(ModelIngress).options(
        ray_actor_options={"num_cpus": args.num_cpus, "num_gpus": args.num_gpus},
        max_ongoing_requests=args.ongoing_limit(),
        autoscaling_config=autoscaling,
        max_surge_percent=args.max_surge_percent,
    )
    return deployment.bind(args.model_dump())


def ingress_app(args: IngressArgs) -> Application:
    from ray import serve  # deferred: see model_app

    from gansvc.serve.ingress import Ingress

    deployment = serve.deployment(name=INGRESS_DEPLOYMENT)(Ingress).options(  # see model_app
        ray_actor_options={"num_cpus": args.num_cpus},
        num_replicas=args.num_replicas,
        max_ongoing_requests=args.max_ongoing_requests,
        max_surge_percent=args.max_surge_percent,
    )
    return deployment.bind(args.model_dump())


def build_app(args: dict[str, Any]) -> Application:
    """`import_path: gansvc.serve.app:build_app`: a model application when args has `model`, else the front door."""
    args = dict(args or {})
    if "model" in args:
        return model_app(ModelArgs.model_validate(args))
    return ingress_app(IngressArgs.model_validate(args))


# ---------------------------------------------------------------------------------------------------- deploy config


def load_config(path: str | Path) -> dict[str, Any]:
    import yaml

    with open(path) as f:
        config: dict[str, Any] = yaml.safe_load(f)  # a deploy config: a YAML mapping
    return config


def check_config(config: dict[str, Any]) -> Any:
    """Validate a deploy config: Serve's own schema, then every application's args against ours (strict)."""
    from ray.serve.schema import ServeDeploySchema

    schema = ServeDeploySchema.model_validate(config)
    for app in schema.applications:
        if app.import_path.startswith("gansvc.serve.app:"):
            args = app.args or {}
            (ModelArgs if "model" in args else IngressArgs).model_validate(args)
            route = app.route_prefix if isinstance(app.route_prefix, str) else None
            if "model" in args and route is not None and route != model_route(app.name):
                raise ValueError(
                    f"application {app.name!r}: route_prefix {route!r}: a model application is served "
                    f"at {model_route(app.name)!r} (its name) or through the front door (null)"
                )
    return schema


def is_model_app(app: dict[str, Any]) -> bool:
    return str(app.get("import_path", "")).startswith("gansvc.serve.app:") and "model" in (app.get("args") or {})


def deploy_config(
    base: dict[str, Any], models: list[str] | None = None, port: int | None = None, registry: str | None = None
) -> dict[str, Any]:
    """The config to deploy: `base` (serve/gansvc.yaml) with only the `models` listed (None: all of base's), each
    from its own entry in base or, for a model base does not name, a copy of base's first model application. A model
    whose entry (or the copied one) has a route answers its own: route_prefix /v1/models/<name> (one hop)."""
    config = copy.deepcopy(base)
    apps = config.get("applications", [])
    front = [a for a in apps if not is_model_app(a)]
    by_name = {a["name"]: a for a in apps if is_model_app(a)}
    template: dict[str, Any] = next(
        iter(by_name.values()),
        {"import_path": "gansvc.serve.app:build_app", "route_prefix": model_route("template"), "args": {}},
    )  # one hop
    chosen = []
    for name in models if models is not None else list(by_name):
        app = copy.deepcopy(
            by_name.get(name) or {**template, "name": name, "args": {**template.get("args", {}), "model": name}}
        )
        # keep the entry's choice: its own route (one hop) or none (through the front door)
        app["route_prefix"] = model_route(name) if app.get("route_prefix") else None
        if registry:
            app["args"]["registry"] = registry
        chosen.append(app)
    config["applications"] = front + chosen
    if port is not None:
        config.setdefault("http_options", {})["port"] = port
    check_config(config)
    return config
