"""Ray Serve deployments of promoted models: a FastAPI front door and one batched model application per model.

    python -m gansvc.serve --models NAME[,NAME...]      serve on the current cluster (the embedded stack by default)
    serve deploy serve/gansvc.yaml                      the same, declaratively (builder: gansvc.serve.app:build_app)

Modules: `app` (builders for `serve deploy`, deploy config), `ingress` (the front door), `model_ingress` (a model
application answering its own route: one hop), `api` (request handling both share), `errors` (the JSON error
contract, Serve proxy middleware), `model` (replicas, batching), `schemas` (args, bodies, jobs), `uploads` (safe
image uploads). Serve code never imports training or data ingestion.
Importing this package does not import Ray (Ray reads some settings from the environment when first imported).
"""
