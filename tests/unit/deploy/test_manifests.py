"""The cluster manifests (cluster/, k8s/) checked without a cluster: schemas, entry points, versions, consistency.

- KubeRay objects: every kustomization under k8s/ is rendered by a small kustomize subset (tests/support/kustomize.py:
  resources, namespace, images, JSON 6902 patches; any other kustomization field fails the test rather than being
  ignored) and every RayCluster / RayJob / RayService is validated against the openAPIV3Schema of its CRD (ray.io/v1)
  from $KUBERAY_CRDS, else ../shared/schemas/kuberay beside the checkout (skipped, with the reason, where neither
  exists). How the Kubernetes schema extensions are treated (see `k8s_to_jsonschema`, tests/support/crd_schema.py):
    * unknown fields: Kubernetes prunes them or, with kubectl's strict field validation, rejects them; here every
      object schema with `properties` and no `additionalProperties` / `x-kubernetes-preserve-unknown-fields`
      gets `additionalProperties: false`, so a misspelt field fails;
    * x-kubernetes-int-or-string: the CRDs already pair it with anyOf [integer, string] (+ the quantity pattern);
      where that anyOf were missing it is added;
    * x-kubernetes-preserve-unknown-fields: the subtree stays open (none in these CRDs' v1 schemas today);
    * x-kubernetes-list-type map (with x-kubernetes-list-map-keys) / set: checked as the API server does, no two
      items with the same keys (e.g. two containers or two ports of one name);
    * x-kubernetes-map-type and `default`: merge and defaulting semantics only, nothing to validate;
    * nullable: null accepted; format int32 / int64: range checked;
    * x-kubernetes-validations (CEL rules): not evaluated; a manifest that sets a field carrying them fails the test
      with the rule, so nothing passes unchecked (none of ours does);
    * any other x-kubernetes-* keyword appearing in a future CRD fails the test until it is handled here.
  Checks of the KubeRay operator that are not in the CRD are done by hand: rayVersion, unique group names,
  min <= replicas <= max, clusterSelector targets, Service names, and that every job / Serve replica fits a worker
  group (no GPU ask on the CPU overlay).
- Entry points: every `python -m gansvc...` command of a RayJob (base and overlays) runs in-process through runpy
  exactly as `python -m` would, with `--dry-run`, against the real S3 server of the session stack, where the
  datasets the commands name are written first (synthetic stand-ins of the same layout). The commands of
  cluster/README.md are checked by their module's own argparse parser only (the module runs as `python -m` would and
  is stopped right after parse_args returns); aws.yaml's setup command (the image check) runs in this environment.
- The Serve config embedded in the RayService: Ray's ServeDeploySchema + gansvc's strict args schemas, and its
  applications against serve/gansvc.yaml.
- cluster/aws.yaml: Ray's cluster-config schema (ray/autoscaler/ray-schema.json) and the launcher's own validation.
- Versions: every Ray version, base image tag and gansvc image tag in cluster/ and k8s/ against the pins
  (requirements.lock).
- With `kustomize` or `kubectl` on PATH, the renderer here is compared with the real one (skipped otherwise).
"""

from __future__ import annotations

import copy
import json
import re
import runpy
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from gansvc import local
from tests.support.cli import as_main, parse_only
from tests.support.crd_schema import FORMATS, HANDLED_EXTENSIONS, K8sValidator, crd_dir, extensions, k8s_to_jsonschema
from tests.support.kustomize import containers, kustomize_cmd, render, split_image

REPO = Path(__file__).resolve().parents[3]
K8S = REPO / "k8s"
CLUSTER = REPO / "cluster"
_PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
GANSVC_VERSION = _PROJECT["version"]
# The exact versions ./dev and CI install: requirements.lock (pyproject.toml gives compatible ranges) when there is one,
# else pyproject's own `name==version` pins.
_LOCK = REPO / "requirements.lock"
_PIN_LINES = (
    _LOCK.read_text().splitlines()
    if _LOCK.is_file()
    else [*_PROJECT["dependencies"], *_PROJECT["optional-dependencies"]["test"]]
)
PINS = {
    m.group(1).lower(): m.group(2)
    for d in _PIN_LINES
    if (m := re.match(r"([\w.-]+)(?:\[[^\]]*\])?==([^\s;,]+)", d.strip()))
}
RAY_VERSION = PINS["ray"]
PY_TAG = "py3" + re.search(r">=\s*3\.(\d+)", _PROJECT["requires-python"]).group(1)  # type: ignore[union-attr]
IMAGE_TAG = re.compile(rf"{re.escape(GANSVC_VERSION)}-ray{re.escape(RAY_VERSION)}-(cpu|gpu|cu\d{{3}})")
KUBERAY = {"RayCluster": "rayclusters", "RayJob": "rayjobs", "RayService": "rayservices"}
# Ray Serve's own pydantic fields warn at import (PydanticDeprecatedSince20): not ours, not interesting here
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the CRDs are 3 MB of YAML: libyaml when available
# synthetic stand-ins of the datasets the manifests name (last path component -> synthetic dataset of that layout)
DATASETS = {"horse2zebra": "stripes", "anime-faces": "shapes"}
KUSTOMIZE_DIRS = sorted(p.parent for p in K8S.rglob("kustomization.yaml"))


def _rel(p: Path) -> str:
    return str(p.relative_to(REPO))


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {_rel(d): render(d) for d in KUSTOMIZE_DIRS}


def _kuberay(objs: list[dict[str, Any]], kind: str | None = None) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] in KUBERAY and (kind is None or o["kind"] == kind)]


def _cluster_specs(obj: dict[str, Any]) -> list[dict[str, Any]]:
    spec = obj["spec"]
    return [
        s
        for s in (
            spec
            if obj["kind"] == "RayCluster"
            else spec.get("rayClusterSpec")
            if obj["kind"] == "RayJob"
            else spec["rayClusterConfig"],
        )
        if s
    ]


# -------------------------------------------------------------------------------------------- CRD schemas


@pytest.fixture(scope="module")
def crd_validators() -> dict[str, Any]:
    root = crd_dir()
    if root is None:
        pytest.skip(
            "KubeRay CRDs not found: set KUBERAY_CRDS to a folder with ray.io_{rayclusters,rayjobs,"
            "rayservices}.yaml (kuberay's ray-operator/config/crd/bases)"
        )
    out = {}
    for kind, plural in KUBERAY.items():
        crd = yaml.load((root / f"ray.io_{plural}.yaml").read_text(), Loader=LOADER)
        (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
        schema = version["schema"]["openAPIV3Schema"]
        unhandled = extensions(schema) - HANDLED_EXTENSIONS
        assert not unhandled, f"{plural} CRD uses schema extensions {unhandled} that k8s_to_jsonschema does not handle"
        out[kind] = K8sValidator(k8s_to_jsonschema(schema), format_checker=FORMATS)
    return out


def test_schema_extension_handling(crd_validators: dict[str, Any]) -> None:
    """The translation rejects what the API server would (an unknown field, a duplicate container, a bad quantity,
    a wrong type) and refuses fields guarded by CEL rules it cannot evaluate."""
    base = yaml.safe_load((K8S / "base" / "raycluster.yaml").read_text())
    assert not list(crd_validators["RayCluster"].iter_errors(base))
    bad = copy.deepcopy(base)
    bad["spec"]["headGroupSpec"]["rayStartParam"] = {}  # misspelt
    bad["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"] *= 2  # duplicate name
    bad["spec"]["workerGroupSpecs"][1]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] = "4 cores"
    bad["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0  # rayStartParams are strings
    bad["spec"]["managedBy"] = "ray.io/kuberay-operator"  # valid, but guarded by CEL rules we do not evaluate
    messages = " | ".join(e.message for e in crd_validators["RayCluster"].iter_errors(bad))
    for part in ("rayStartParam", "duplicate entry", "4 cores", "0 is not of type 'string'", "CEL rules"):
        assert part in messages, messages


@pytest.mark.parametrize("directory", [_rel(d) for d in KUSTOMIZE_DIRS])
def test_kuberay_objects_match_crds(
    directory: str, rendered: dict[str, list[dict[str, Any]]], crd_validators: dict[str, Any]
) -> None:
    objs = _kuberay(rendered[directory])
    if directory != "k8s/base/monitoring":
        assert objs, f"{directory} renders no KubeRay object"
    for obj in objs:
        assert obj["apiVersion"] == "ray.io/v1", obj["apiVersion"]
        errors = sorted(crd_validators[obj["kind"]].iter_errors(obj), key=lambda e: list(e.absolute_path))
        assert not errors, f"{directory}: {obj['kind']}/{obj['metadata']['name']}:\n" + "\n".join(
            f"  {'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message[:300]}" for e in errors
        )


# ------------------------------------------------------------------------------- KubeRay rules not in the CRD

UNITS = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def _quantity(q: Any) -> float:
    """A Kubernetes quantity ("500m", "4", "16Gi") as a number."""
    m = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(q))
    assert m and m.group(2) in ("", *UNITS), f"quantity {q!r}"
    return float(m.group(1)) * UNITS.get(m.group(2), 1)


def _groups(cluster: dict[str, Any]) -> list[dict[str, Any]]:
    """(name, CPU, GPU, max pods) per group as Ray sees it: container limits, rayStartParams num-cpus/num-gpus."""
    out = []
    workers = [
        (g["groupName"], g, g.get("maxReplicas", g.get("replicas", 1))) for g in cluster.get("workerGroupSpecs", [])
    ]
    for name, spec, max_pods in [("head", cluster["headGroupSpec"], 1), *workers]:
        limits = spec["template"]["spec"]["containers"][0].get("resources", {}).get("limits", {})
        params = spec.get("rayStartParams", {})
        cpu = float(params["num-cpus"]) if "num-cpus" in params else _quantity(limits.get("cpu", 0))
        gpu = float(params["num-gpus"]) if "num-gpus" in params else _quantity(limits.get("nvidia.com/gpu", 0))
        out.append({"name": name, "cpu": cpu, "gpu": gpu, "max": max_pods})
    return out


def _fits(groups: list[dict[str, Any]], cpu: float, gpu: float, count: int, what: str) -> None:
    fitting = [g for g in groups if g["cpu"] >= cpu and g["gpu"] >= gpu]
    assert fitting, f"{what}: a bundle of {cpu} CPU + {gpu} GPU fits no group of {groups}"
    capacity = sum(
        g["max"] * min(g["cpu"] // cpu if cpu else count, g["gpu"] // gpu if gpu else count) for g in fitting
    )
    assert capacity >= count, f"{what}: {count} bundles of {cpu} CPU + {gpu} GPU exceed the groups' maxima {groups}"


def test_kuberay_operator_rules(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for directory, objs in rendered.items():
        names = [(o["kind"], o["metadata"]["name"]) for o in objs]
        assert len(names) == len(set(names)), f"{directory}: duplicate objects {names}"
        for obj in _kuberay(objs):
            where = f"{directory}: {obj['kind']}/{obj['metadata']['name']}"
            assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", obj["metadata"]["name"]), where
            assert obj["metadata"].get("namespace") == "gansvc", f"{where}: not in namespace gansvc"
            for cluster in _cluster_specs(obj):
                assert cluster["rayVersion"] == RAY_VERSION, f"{where}: rayVersion {cluster['rayVersion']}"
                if cluster.get("enableInTreeAutoscaling"):
                    assert cluster.get("autoscalerOptions", {}).get("version") == "v2", f"{where}: autoscaler v2"
                groups = cluster.get("workerGroupSpecs", [])
                assert len({g["groupName"] for g in groups}) == len(groups), f"{where}: duplicate group names"
                for g in groups:
                    assert g["minReplicas"] <= g.get("replicas", g["minReplicas"]) <= g["maxReplicas"], where
                pods = [cluster["headGroupSpec"]["template"]] + [g["template"] for g in groups]
                for pod in pods:
                    c = pod["spec"]["containers"][0]
                    assert IMAGE_TAG.fullmatch(split_image(c["image"])[1] or ""), f"{where}: image {c['image']}"
                    assert pod["spec"].get("serviceAccountName") == "gansvc", f"{where}: serviceAccountName"
                    refs = [e.get("configMapRef", e.get("secretRef")) for e in c.get("envFrom", [])]
                    assert {"name": "gansvc-env"} in refs and {"name": "gansvc-s3", "optional": True} in refs, where
                    res = c["resources"]
                    for key, value in res.get("requests", {}).items():  # a request above its limit is invalid
                        if key in res.get("limits", {}):
                            assert _quantity(value) <= _quantity(res["limits"][key]), f"{where}: {key} request > limit"
            if obj["kind"] == "RayJob":
                spec = obj["spec"]
                assert ("clusterSelector" in spec) != ("rayClusterSpec" in spec), f"{where}: exactly one of them"
                assert spec.get("submissionMode", "K8sJobMode") in {
                    "K8sJobMode",
                    "HTTPMode",
                    "InteractiveMode",
                    "SidecarMode",
                }, where
                assert spec["entrypoint"].startswith("python -m gansvc."), f"{where}: {spec['entrypoint']}"
            if obj["kind"] == "RayService":
                assert obj["spec"].get("upgradeStrategy", {}).get("type", "NewCluster") in {
                    "NewCluster",
                    "NewClusterWithIncrementalUpgrade",
                    "None",
                }, where


def test_service_names_do_not_collide(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """KubeRay names Services <RayCluster>-head-svc, <RayService>-head-svc and <RayService>-serve-svc."""
    for overlay in ("k8s/base", "k8s/overlays/gpu", "k8s/overlays/cpu"):
        objs = rendered[overlay] + rendered[f"{overlay}/serve"]
        svcs = [f"{o['metadata']['name']}-head-svc" for o in _kuberay(objs) if o["kind"] != "RayJob"]
        svcs += [f"{o['metadata']['name']}-serve-svc" for o in _kuberay(objs, "RayService")]
        assert len(svcs) == len(set(svcs)), f"{overlay}: {svcs}"


def _entrypoint(cmd: str) -> tuple[str, list[str]]:
    argv = shlex.split(cmd)
    assert argv[:2] == ["python", "-m"] and argv[2].startswith("gansvc."), cmd
    return argv[2], argv[3:]


def _job_asks(cmd: str) -> tuple[float, float, int]:
    """(CPU, GPU) per Train worker and the number of workers a RayJob's entrypoint asks for."""
    module, argv = _entrypoint(cmd)
    ns = parse_only(module, argv)
    if module == "gansvc.train":
        return ns.cpus_per_worker or 1.0, ns.gpus_per_worker or 0.0, ns.num_workers or 1
    assert module == "gansvc.tune", cmd
    from gansvc.tune import load_spec

    spec = load_spec(str(REPO / ns.spec), ns.set)
    r = spec.resources
    return r.cpus_per_worker, r.gpus_per_worker, r.num_workers * (ns.max_concurrent or spec.max_concurrent)


@pytest.mark.parametrize("overlay", ["k8s/base", "k8s/overlays/gpu", "k8s/overlays/cpu"])
def test_jobs_and_replicas_fit_the_clusters(overlay: str, rendered: dict[str, list[dict[str, Any]]]) -> None:
    """Every job's workers and every Serve replica fit a worker group (a GPU ask on a CPU cluster never runs)."""
    clusters = {o["metadata"]["name"]: o["spec"] for o in _kuberay(rendered[overlay], "RayCluster")}
    jobs = _kuberay(rendered[f"{overlay}/jobs"], "RayJob")
    assert jobs
    for job in jobs:
        target = job["spec"]["clusterSelector"]["ray.io/cluster"]
        assert target in clusters, f"{overlay}: RayJob {job['metadata']['name']} selects unknown cluster {target}"
        cpu, gpu, workers = _job_asks(job["spec"]["entrypoint"])
        _fits(_groups(clusters[target]), cpu, gpu, workers, f"{overlay}: RayJob {job['metadata']['name']}")
        if overlay.endswith("cpu"):
            assert gpu == 0, f"{overlay}: {job['metadata']['name']} asks for GPUs"
    for svc in _kuberay(rendered[f"{overlay}/serve"], "RayService"):
        groups = _groups(svc["spec"]["rayClusterConfig"])
        for app in yaml.safe_load(svc["spec"]["serveConfigV2"])["applications"]:
            a = app["args"]
            count = a.get("autoscaling", {}).get("min_replicas", a.get("num_replicas", 1))
            _fits(groups, a.get("num_cpus", 1), a.get("num_gpus", 0), count, f"{overlay}: Serve app {app['name']}")
    if overlay.endswith("cpu"):
        text = json.dumps(rendered[overlay] + rendered[f"{overlay}/serve"])
        assert "nvidia.com/gpu" not in text, f"{overlay} still asks Kubernetes for GPUs"


def test_podmonitors_scrape_declared_ports(rendered: dict[str, list[dict[str, Any]]]) -> None:
    monitors = [o for o in rendered["k8s/base/monitoring"] if o["kind"] == "PodMonitor"]
    assert monitors and all(m["apiVersion"] == "monitoring.coreos.com/v1" for m in monitors)
    pods = []  # (labels as KubeRay sets them, declared container port names)
    for directory in ("k8s/overlays/gpu", "k8s/overlays/gpu/serve", "k8s/overlays/cpu", "k8s/overlays/cpu/serve"):
        for obj in _kuberay(rendered[directory]):
            for cluster in _cluster_specs(obj):
                for node_type, spec in [("head", cluster["headGroupSpec"])] + [
                    ("worker", g) for g in cluster.get("workerGroupSpecs", [])
                ]:
                    labels = {
                        **spec["template"].get("metadata", {}).get("labels", {}),
                        "ray.io/is-ray-node": "yes",
                        "ray.io/node-type": node_type,
                    }
                    ports = {p["name"] for p in spec["template"]["spec"]["containers"][0].get("ports", [])}
                    pods.append((labels, ports, f"{directory} {obj['metadata']['name']} {node_type}"))
    assert any(p[1] and "metrics" in p[1] for p in pods)
    for m in monitors:
        selected = [p for p in pods if m["spec"]["selector"]["matchLabels"].items() <= p[0].items()]
        assert selected, f"PodMonitor {m['metadata']['name']} selects no Ray pod"
        for endpoint in m["spec"]["podMetricsEndpoints"]:
            for _labels, ports, where in selected:
                assert endpoint["port"] in ports, f"{where}: no container port named {endpoint['port']}"
    for _labels, ports, where in pods:  # Ray's metrics-export port on every Ray pod
        assert "metrics" in ports, f"{where}: declare the metrics port (8080)"


# ------------------------------------------------------------------------------------------------ Serve config


def _serve_configs(rendered: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    out = {}
    for directory, objs in rendered.items():
        for svc in _kuberay(objs, "RayService"):
            out[directory] = yaml.safe_load(svc["spec"]["serveConfigV2"])
    return out


def test_serve_config_validates_with_serve_schema(rendered: dict[str, list[dict[str, Any]]]) -> None:
    from ray.serve.schema import ServeDeploySchema

    from gansvc.serve.app import check_config

    configs = _serve_configs(rendered)
    assert set(configs) >= {"k8s/base/serve", "k8s/overlays/gpu/serve", "k8s/overlays/cpu/serve"}
    for directory, cfg in configs.items():
        schema = ServeDeploySchema.model_validate(cfg)
        check_config(cfg)  # plus gansvc's strict builder args
        assert schema.http_options.host == "0.0.0.0" and schema.http_options.port == 8000, directory
        for svc in _kuberay(rendered[directory], "RayService"):
            head = svc["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]
            assert {"name": "serve", "containerPort": 8000} in head["ports"], directory


def _without(args: dict[str, Any], keys: set[str]) -> dict[str, Any]:
    return {k: v for k, v in args.items() if k not in keys}


def _route_shape(app: dict[str, Any]) -> str | None:
    """A model application's route with its own name factored out: /v1/models/{name} (one hop) or None."""
    route = app.get("route_prefix")
    return None if route is None else str(route).replace(app["name"], "{name}")


def test_serve_config_reuses_serve_gansvc_yaml(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """The RayService's applications are serve/gansvc.yaml's (same builder, same arguments) with cluster settings:
    model names, GPUs, device and replica maxima may differ; the front door may expect the served models."""
    ref = yaml.safe_load((REPO / "serve" / "gansvc.yaml").read_text())["applications"]
    ref_ingress = [a for a in ref if "model" not in (a.get("args") or {})]
    ref_models = [a for a in ref if "model" in (a.get("args") or {})]
    model_keys = {"model", "num_gpus", "device", "autoscaling"}
    for directory, cfg in _serve_configs(rendered).items():
        apps = cfg["applications"]
        ingress = [a for a in apps if "model" not in a["args"]]
        assert len(ingress) == len(ref_ingress) == 1, directory
        for mine, theirs in ((ingress[0], ref_ingress[0]),):
            assert _without(mine, {"args"}) == _without(theirs, {"args"}), f"{directory}: front door differs"
            assert _without(mine["args"], {"expect_models"}) == _without(theirs["args"], {"expect_models"}), (
                f"{directory}: front door args differ from serve/gansvc.yaml: update the RayService"
            )
            assert set(mine["args"]["expect_models"]) <= {a["name"] for a in apps}, directory
        for app in (a for a in apps if "model" in a["args"]):
            twins = [
                r
                for r in ref_models
                if r["import_path"] == app["import_path"]
                and _route_shape(r) == _route_shape(app)
                and set(r["args"]) - model_keys == set(app["args"]) - model_keys
                and _without(r["args"], model_keys) == _without(app["args"], model_keys)
                and _without(r["args"].get("autoscaling", {}), {"max_replicas"})
                == _without(app["args"].get("autoscaling", {}), {"max_replicas"})
            ]
            assert twins, (
                f"{directory}: application {app['name']} matches no model application of "
                "serve/gansvc.yaml (same import path, route, arguments): update the RayService"
            )


def test_cpu_serve_config_differs_only_in_devices(rendered: dict[str, list[dict[str, Any]]]) -> None:
    configs = _serve_configs(rendered)
    gpu, cpu = configs["k8s/overlays/gpu/serve"], configs["k8s/overlays/cpu/serve"]
    assert gpu == configs["k8s/base/serve"]
    assert _without(gpu, {"applications"}) == _without(cpu, {"applications"})
    assert [a["name"] for a in gpu["applications"]] == [a["name"] for a in cpu["applications"]]
    for g, c in zip(gpu["applications"], cpu["applications"], strict=True):
        assert c["args"].get("num_gpus", 0) == 0
        keys = {"num_gpus", "device", "autoscaling"}
        assert _without(g["args"], keys) == _without(c["args"], keys), g["name"]
        assert _without(g, {"args"}) == _without(c, {"args"}), g["name"]


# -------------------------------------------------------------------------------------------- entry points


@pytest.fixture(scope="module")
def manifest_datasets(stack: local.StackState, rendered: dict[str, list[dict[str, Any]]]) -> list[str]:
    """The buckets and datasets the RayJobs name, written to the session's S3 server (synthetic, same layouts)."""
    from botocore.exceptions import ClientError

    from gansvc import storage
    from gansvc.data.ingest import put
    from gansvc.data.synth import synth

    uris = sorted(
        {
            u
            for objs in rendered.values()
            for job in _kuberay(objs, "RayJob")
            for u in re.findall(r"--dataset (s3://\S+)", job["spec"]["entrypoint"])
        }
    )
    buckets = {
        storage.parse_uri(u).bucket
        for objs in rendered.values()
        for job in _kuberay(objs, "RayJob")
        for u in re.findall(r"(s3://[^\s/]+)", job["spec"]["entrypoint"])
    }
    for bucket in sorted(buckets):
        try:
            storage.s3_client().create_bucket(Bucket=bucket)
        except ClientError as err:
            if err.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise
    for uri in uris:
        name = uri.rstrip("/").rsplit("/", 1)[-1]
        assert name in DATASETS, f"dataset {uri}: add a synthetic stand-in of its layout to DATASETS"
        local = synth(DATASETS[name], count=160, size=32, seed=0, test_count=16)
        try:
            put(str(local), uri, quiet=True)
        finally:
            shutil.rmtree(local, ignore_errors=True)
    return uris


def _rayjob_commands(rendered: dict[str, list[dict[str, Any]]]) -> list[tuple[str, str]]:
    return [
        (f"{d}: {job['metadata']['name']}", job["spec"]["entrypoint"])
        for d, objs in rendered.items()
        for job in _kuberay(objs, "RayJob")
    ]


def test_rayjob_entrypoints_dry_run(
    rendered: dict[str, list[dict[str, Any]]],
    manifest_datasets: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Each distinct RayJob command, exactly as written, with --dry-run: config, dataset, storage, network build."""
    assert manifest_datasets
    monkeypatch.chdir(REPO)  # the image's working directory holds tune/ as the repository does
    seen: dict[str, str] = {}
    for where, cmd in _rayjob_commands(rendered):
        seen.setdefault(cmd, where)
    for cmd, where in seen.items():
        module, argv = _entrypoint(cmd)
        with as_main(module, [*argv, "--dry-run"]), pytest.raises(SystemExit) as exit_info:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        out = capsys.readouterr()
        assert exit_info.value.code == 0, f"{where}: {cmd} --dry-run failed:\n{out.out[-3000:]}\n{out.err[-3000:]}"
        assert "dry run" in out.out or "trial(s)" in out.out, out.out[-2000:]


def _doc_commands(text: str) -> list[str]:
    """`python -m gansvc...` commands of a text's shell snippets (continuation lines joined, comments dropped)."""
    cmds = []
    for line in text.replace("\\\n", " ").splitlines():
        m = re.search(r"python -m (gansvc\.[\w.]+)(.*)", line)
        if m and not line.lstrip().startswith(("#", "|")):
            rest = re.split(r"\s+#\s", m.group(2))[0]
            cmds.append(f"python -m {m.group(1)}{rest}".strip().strip("`"))
    return cmds


def test_documented_commands_parse() -> None:
    """cluster/README.md and cluster/aws.yaml: every gansvc command names a module whose parser accepts it."""
    readme = (CLUSTER / "README.md").read_text()
    fences = "\n".join(re.findall(r"```(?:bash|sh|console)?\n(.*?)```", readme, flags=re.S))
    cmds = _doc_commands(fences) + _doc_commands((CLUSTER / "aws.yaml").read_text())
    assert len(cmds) >= 5, cmds
    for cmd in cmds:
        module, argv = _entrypoint(cmd)
        parse_only(module, argv)


# ----------------------------------------------------------------------------------- cluster launcher config


def test_aws_yaml_validates_against_ray_schema() -> None:
    import ray.autoscaler
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((CLUSTER / "aws.yaml").read_text())
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)
    validate_config(config)  # the launcher's own checks on top of the schema (head type, min/max workers)
    validate_config(prepare_config(config))  # after the launcher merges the AWS defaults, as `ray up` does
    nodes = config["available_node_types"]
    head = nodes[config["head_node_type"]]
    assert not head["node_config"]["InstanceType"].startswith(("g", "p")), "a CPU head"
    gpu_types = {n: t for n, t in nodes.items() if t["node_config"]["InstanceType"].startswith(("g5.", "p4d.", "p5."))}
    assert {t["node_config"]["InstanceType"] for t in gpu_types.values()} >= {"g5.xlarge", "p4d.24xlarge"}
    for name, t in nodes.items():
        assert t.get("min_workers", 0) <= t.get("max_workers", 0) or t is head, name
        assert "IamInstanceProfile" in t["node_config"], f"{name}: S3 through an instance profile"
        worker_image = t.get("docker", {}).get("worker_image", config["docker"]["image"])
        variant = IMAGE_TAG.fullmatch(worker_image.rsplit(":", 1)[1])
        assert variant, worker_image
        assert (variant.group(1) != "cpu") == (name in gpu_types), f"{name}: {worker_image}"
    for cmd in config["setup_commands"]:  # the image check the launcher runs in every container, run here
        argv = shlex.split(cmd)
        assert argv[:2] == ["python", "-c"], cmd
        done = subprocess.run([sys.executable, "-c", argv[2]], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"setup command fails on the pinned environment: {cmd}\n{done.stderr[-2000:]}"
    text = (CLUSTER / "aws.yaml").read_text()
    assert not re.search(r"AWS_(SECRET_)?ACCESS_KEY", text), "no keys in the cluster config"
    assert "--metrics-export-port=8080" in " ".join(
        config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    )


# ------------------------------------------------------------------------------------- access (issue 13, point 10)

RAY_TOKEN_SECRET = "gansvc-ray-token"


def _env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def test_ray_token_auth_is_on_in_every_kuberay_cluster(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """The dashboard listens on the pod network (dashboard-host 0.0.0.0): every Ray cluster the manifests create
    (RayCluster, the RayService's, a RayJob's own) runs with Ray token auth from the one Secret, and no container
    turns it off."""
    checked = 0
    for directory, objs in rendered.items():
        for obj in _kuberay(objs):
            for spec in _cluster_specs(obj):
                where = f"{directory}: {obj['kind']} {obj['metadata']['name']}"
                auth = spec.get("authOptions") or {}
                assert auth.get("mode") == "token", f"{where}: authOptions.mode must be token"
                assert auth.get("secretName") == RAY_TOKEN_SECRET, f"{where}: the token comes from {RAY_TOKEN_SECRET}"
                assert not auth.get("enableK8sTokenAuth"), f"{where}: one mechanism (the Secret's token)"
                for container in containers(spec):
                    env = _env_of(container)
                    assert env.get("RAY_AUTH_MODE", "token") == "token", f"{where}: {container['name']} disables auth"
                    assert "RAY_AUTH_TOKEN" not in env, f"{where}: {container['name']}: the token only from the Secret"
                checked += 1
    assert checked >= 3, "RayCluster and RayService of both overlays at least"


def test_ray_token_auth_is_on_in_the_launcher_config() -> None:
    """aws.yaml: every node's container runs Ray with RAY_AUTH_MODE=token and the token file the launcher copies from
    the user's machine (never a file of this repository), readable by its owner only."""
    config = yaml.safe_load((CLUSTER / "aws.yaml").read_text())
    options = config["docker"]["run_options"]
    assert "-e RAY_AUTH_MODE=token" in options
    paths = [o.split("=", 1)[1] for o in options if o.startswith("-e RAY_AUTH_TOKEN_PATH=")]
    assert len(paths) == 1, "one token path for every Ray process"
    source = config["file_mounts"].get(paths[0])
    assert source, f"file_mounts copies the token to {paths[0]} on every node"
    assert source.startswith("~/") and not (REPO / source[2:]).exists(), "the token stays outside the repository"
    for cmds in (config["head_start_ray_commands"], config["worker_start_ray_commands"]):
        start = " ".join(cmds)
        assert f"chmod 600 {paths[0]}" in start and "RAY_AUTH_MODE=disabled" not in start
    text = (CLUSTER / "aws.yaml").read_text() + "".join(p.read_text() for p in K8S.rglob("*.yaml"))
    assert not re.search(r"RAY_AUTH_MODE[=:]\s*\"?disabled", text), "auth is never turned off"


def test_cluster_readme_documents_access() -> None:
    text = (CLUSTER / "README.md").read_text()
    for needle in ("## Access", "RAY_AUTH_MODE=token", RAY_TOKEN_SECRET, "RAY_AUTH_TOKEN_PATH", "0.0.0.0", "8080"):
        assert needle in text, needle


def test_dockerfile() -> None:
    text = (CLUSTER / "Dockerfile").read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, flags=re.M))
    assert args["RAY_VERSION"] == RAY_VERSION and args["PYTHON_TAG"] == PY_TAG and args["RAY_VARIANT"] == "cpu"
    (base,) = re.findall(r"^FROM (\S+)", text, flags=re.M)
    assert base == "rayproject/ray:${RAY_VERSION}-${PYTHON_TAG}-${RAY_VARIANT}", base
    assert not re.search(r"^USER\s+(root|0)\b", text, flags=re.M), "stays the base image's non-root user"
    assert '["project"]["dependencies"]' in text and "--no-deps ." in text, "pinned deps from pyproject, then gansvc"
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert not re.search(r"\.\[(test|dev)", code), "no dev/test extras in the image"
    for src in ("gansvc", "tune", "serve"):
        assert re.search(rf"^COPY .*\b{src} \./{src}$", text, flags=re.M), f"{src} is copied"
    ignore = (CLUSTER / "Dockerfile.dockerignore").read_text()
    assert all(f"!{p}" in ignore for p in ("pyproject.toml", "gansvc/", "tune/", "serve/"))


# ---------------------------------------------------------------------------------------------------- versions


def _text_files() -> list[Path]:
    return sorted(p for root in (CLUSTER, K8S) for p in root.rglob("*") if p.is_file())


def test_versions_match_the_pins(rendered: dict[str, list[dict[str, Any]]]) -> None:
    assert PY_TAG == "py311" and IMAGE_TAG.fullmatch(f"{GANSVC_VERSION}-ray{RAY_VERSION}-cu128")
    checked = 0
    for path in _text_files():
        text = path.read_text()
        for m in re.finditer(r"(?i)(?<!kube)ray[^\n\d]{0,12}?(\d+\.\d+\.\d+)", text):
            assert m.group(1) == RAY_VERSION, f"{_rel(path)}: {m.group(0)!r} is not Ray {RAY_VERSION}"
            checked += 1
        for m in re.finditer(r"rayproject/ray[\w-]*:(\S+)", text):
            tag = m.group(1).replace("${RAY_VERSION}", RAY_VERSION).replace("${PYTHON_TAG}", PY_TAG)
            assert tag.startswith(f"{RAY_VERSION}-{PY_TAG}-"), f"{_rel(path)}: base image {m.group(0)}"
        for m in re.finditer(r"(?<![\w:.-])gansvc:([A-Za-z0-9$][\w.${}-]*)", text):
            tag = m.group(1).rstrip(".,)`'\"")
            assert IMAGE_TAG.fullmatch(tag), f"{_rel(path)}: image tag gansvc:{tag}"
            checked += 1
        for m in re.finditer(r"newTag:\s*(\S+)", text):
            assert IMAGE_TAG.fullmatch(m.group(1)), f"{_rel(path)}: newTag {m.group(1)}"
        for m in re.finditer(r"__version__ == '([^']+)'", text):  # the launcher's setup check of the image
            assert m.group(1) in (RAY_VERSION, "${RAY_VERSION}"), f"{_rel(path)}: {m.group(0)}"
        for m in re.finditer(r"([A-Za-z][\w-]*)(?:\[[^\]]*\])?==([\w.]+)", text):  # name==version: the pin
            assert PINS.get(m.group(1).lower()) == m.group(2), f"{_rel(path)}: {m.group(0)} is not the pinned version"
        for m in re.finditer(r"(?<![\w.=])\d+\.\d+\.\d+(?![\w.])", text):  # any other x.y.z: Ray's or gansvc's
            assert m.group(0) in (RAY_VERSION, GANSVC_VERSION), (
                f"{_rel(path)}: version {m.group(0)} is neither Ray's pin {RAY_VERSION} nor gansvc's {GANSVC_VERSION}"
            )
        for m in re.finditer(r"\bpy3(\d+)\b", text):
            assert f"py3{m.group(1)}" == PY_TAG, f"{_rel(path)}: {m.group(0)}"
    assert checked >= 10
    for objs in rendered.values():
        for c in (c for o in objs for c in containers(o)):
            assert IMAGE_TAG.fullmatch(split_image(c["image"])[1] or ""), c["image"]


# ---------------------------------------------------------------------------------- parity with real kustomize


@pytest.mark.skipif(kustomize_cmd() is None, reason="neither kustomize nor kubectl on PATH")
@pytest.mark.parametrize("directory", [_rel(d) for d in KUSTOMIZE_DIRS])
def test_renderer_matches_kustomize(directory: str, rendered: dict[str, list[dict[str, Any]]]) -> None:
    out = subprocess.run(
        [*kustomize_cmd(), str(REPO / directory)],
        capture_output=True,
        text=True,  # type: ignore
        check=True,
        timeout=60,
    ).stdout
    theirs = sorted((d for d in yaml.safe_load_all(out) if d), key=lambda o: (o["kind"], o["metadata"]["name"]))
    mine = sorted(rendered[directory], key=lambda o: (o["kind"], o["metadata"]["name"]))
    assert mine == theirs
