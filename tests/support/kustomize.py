"""A small kustomize subset, enough for k8s/: `resources` (files and folders), `namespace`, `images` and targeted
JSON 6902 `patches`. Any other kustomization field, patch form or JSON patch op fails (an AssertionError naming it)
rather than being ignored, so the renderer never silently differs from `kustomize build`
(tests/unit/deploy/test_manifests.py compares the two where kustomize or kubectl is on PATH)."""

from __future__ import annotations

import copy
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]

KUSTOMIZATION_FIELDS = {"apiVersion", "kind", "resources", "namespace", "images", "patches"}
CLUSTER_SCOPED = {"Namespace"}


def _pointer(path: str) -> list[str]:
    assert path.startswith("/"), path
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _walk_to(doc: Any, parts: list[str]) -> Any:
    for p in parts:
        doc = doc[int(p)] if isinstance(doc, list) else doc[p]
    return doc


def json6902(doc: dict[str, Any], ops: list[dict[str, Any]], where: str) -> None:
    """RFC 6902 add / remove / replace / test, in place (what kustomize's JSON patches do)."""
    for op in ops:
        parts, kind = _pointer(op["path"]), op["op"]
        try:
            parent, last = _walk_to(doc, parts[:-1]), parts[-1]
            if kind == "test":
                current = parent[int(last)] if isinstance(parent, list) else parent[last]
                assert current == op["value"], f"{where}: test {op['path']}: {current!r} != {op['value']!r}"
            elif kind == "remove":
                del parent[int(last) if isinstance(parent, list) else last]
            elif kind == "replace":
                if isinstance(parent, list):
                    parent[int(last)] = copy.deepcopy(op["value"])
                else:
                    assert last in parent, f"{where}: replace of missing {op['path']}"
                    parent[last] = copy.deepcopy(op["value"])
            elif kind == "add":
                if isinstance(parent, list):
                    parent.insert(len(parent) if last == "-" else int(last), copy.deepcopy(op["value"]))
                else:
                    parent[last] = copy.deepcopy(op["value"])
            else:
                raise AssertionError(f"{where}: JSON patch op {kind!r} is not supported by this renderer")
        except (KeyError, IndexError) as err:
            raise AssertionError(f"{where}: {kind} {op['path']}: no such location ({err})") from None


def containers(node: Any) -> Iterator[dict[str, Any]]:
    """Every container of any object: kustomize's image transformer looks for containers / initContainers anywhere."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                yield from (c for c in value if isinstance(c, dict))
            else:
                yield from containers(value)
    elif isinstance(node, list):
        for item in node:
            yield from containers(item)


def split_image(image: str) -> tuple[str, str | None]:
    name, _, tag = image.rpartition(":") if ":" in image.rsplit("/", 1)[-1] else (image, "", None)
    return name, tag


def render(directory: Path) -> list[dict[str, Any]]:
    kfile = directory / "kustomization.yaml"
    k = yaml.safe_load(kfile.read_text())
    unknown = set(k) - KUSTOMIZATION_FIELDS
    assert not unknown, f"{_shown(kfile)}: fields {sorted(unknown)} are not implemented by this test's renderer"
    objs: list[dict[str, Any]] = []
    for res in k.get("resources", []):
        path = (directory / res).resolve()
        if path.is_dir():
            objs += render(path)
        else:
            objs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    for i, patch in enumerate(k.get("patches", [])):
        where = f"{_shown(kfile)} patches[{i}]"
        assert set(patch) <= {"target", "patch", "path"} and "target" in patch, f"{where}: only targeted patches"
        ops = yaml.safe_load(patch["patch"] if "patch" in patch else (directory / patch["path"]).read_text())
        assert isinstance(ops, list), f"{where}: only JSON 6902 patches (a list of ops) are implemented here"
        target = patch["target"]
        hits = [
            o
            for o in objs
            if all(
                (
                    o["metadata"].get("name")
                    if key == "name"
                    else o["apiVersion"].rpartition("/")[0]
                    if key == "group"
                    else o["apiVersion"].split("/")[-1]
                    if key == "version"
                    else o.get(key)
                )
                == value
                for key, value in target.items()
            )
        ]
        assert len(hits) == 1, f"{where}: target {target} matches {len(hits)} objects"
        json6902(hits[0], ops, where)
    for img in k.get("images", []):
        for c in (c for o in objs for c in containers(o)):
            name, tag = split_image(c["image"])
            if name == img["name"]:
                c["image"] = f"{img.get('newName', name)}:{img.get('newTag', tag)}"
    if "namespace" in k:
        for o in objs:
            if o["kind"] not in CLUSTER_SCOPED:
                o["metadata"]["namespace"] = k["namespace"]
    return objs


def _shown(path: Path) -> str:
    """A path in messages: relative to the checkout when inside it."""
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def kustomize_cmd() -> list[str] | None:
    """The real renderer's command on this machine, if there is one."""
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None
