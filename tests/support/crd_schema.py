"""Kubernetes CRD schemas (openAPIV3Schema) checked as the API server does, with jsonschema: `k8s_to_jsonschema`
turns a structural schema into a draft-4 JSON Schema, `K8sValidator` adds the x-kubernetes-* keywords that carry
checks (list types; CEL rules fail: they are not evaluated here), `FORMATS` the int32 / int64 ranges. What each
extension means and how it is treated: tests/unit/deploy/test_manifests.py's module docstring."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema

REPO = Path(__file__).resolve().parents[2]


def k8s_to_jsonschema(s: dict[str, Any]) -> dict[str, Any]:
    """A Kubernetes structural schema as a JSON Schema (draft 4) with the API server's behaviour; see module doc."""
    s = dict(s)
    for kw in ("properties", "patternProperties"):
        if kw in s:
            s[kw] = {k: k8s_to_jsonschema(v) for k, v in s[kw].items()}
    for kw in ("items", "additionalProperties", "not"):
        if isinstance(s.get(kw), dict):
            s[kw] = k8s_to_jsonschema(s[kw])
    for kw in ("anyOf", "allOf", "oneOf"):
        if kw in s:
            s[kw] = [k8s_to_jsonschema(x) for x in s[kw]]
    if s.get("x-kubernetes-int-or-string") and "anyOf" not in s and "type" not in s:
        s["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    preserve = s.get("x-kubernetes-preserve-unknown-fields")
    if "properties" in s and "additionalProperties" not in s and not preserve:
        s["additionalProperties"] = False
    if s.pop("nullable", False):
        s = {"anyOf": [{"type": "null"}, s]}
    return s


def _list_type(validator: Any, value: str, instance: Any, schema: dict[str, Any]) -> Iterator[Any]:
    if not isinstance(instance, list):
        return
    if value == "map":
        keys = schema.get("x-kubernetes-list-map-keys", [])
        seen: set[str] = set()
        for item in instance:
            key = json.dumps([item.get(k) for k in keys]) if isinstance(item, dict) else json.dumps(item)
            if key in seen:
                yield jsonschema.ValidationError(f"duplicate entry for list-map keys {keys}: {key}")
            seen.add(key)
    elif value == "set":
        dumped = [json.dumps(x, sort_keys=True) for x in instance]
        if len(set(dumped)) != len(dumped):
            yield jsonschema.ValidationError("duplicate entries in a list-type set")


def _cel(validator: Any, rules: list[dict[str, Any]], instance: Any, schema: dict[str, Any]) -> Iterator[Any]:
    yield jsonschema.ValidationError(
        f"this field carries CEL rules that the test does not evaluate: {rules}; "
        "add an explicit check to tests/unit/deploy/test_manifests.py before using it"
    )


FORMATS = jsonschema.FormatChecker()


@FORMATS.checks("int32")
def _int32(value: Any) -> bool:
    return not isinstance(value, int) or -(2**31) <= value < 2**31


@FORMATS.checks("int64")
def _int64(value: Any) -> bool:
    return not isinstance(value, int) or -(2**63) <= value < 2**63


K8sValidator = jsonschema.validators.extend(
    jsonschema.Draft4Validator, {"x-kubernetes-list-type": _list_type, "x-kubernetes-validations": _cel}
)


HANDLED_EXTENSIONS = {
    "x-kubernetes-int-or-string",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",
    "x-kubernetes-validations",
}


def extensions(node: Any) -> set[str]:
    if isinstance(node, dict):
        return {k for k in node if k.startswith("x-kubernetes-")}.union(*map(extensions, node.values()))
    if isinstance(node, list):
        return set().union(*map(extensions, node))
    return set()


def crd_dir() -> Path | None:
    beside = REPO.parent / "shared" / "schemas" / "kuberay"  # ../shared beside the checkout
    for cand in (os.environ.get("KUBERAY_CRDS"), str(beside), "/work/shared/schemas/kuberay"):
        if cand and (Path(cand) / "ray.io_rayclusters.yaml").is_file():
            return Path(cand)
    return None
