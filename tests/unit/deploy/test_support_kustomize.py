"""The kustomize subset tests/unit/deploy/test_manifests.py renders k8s/ with (tests/support/kustomize.py): each field
it implements does what kustomize does, and what it does not implement fails instead of being ignored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.kustomize import json6902, render, split_image


def _pod(name: str, image: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": image}], "initContainers": [{"name": "i", "image": image}]},
    }


def test_json6902_ops() -> None:
    doc = {"a": {"b": [1, 2], "c~/d": "x"}}
    json6902(
        doc,
        [
            {"op": "test", "path": "/a/b/0", "value": 1},
            {"op": "add", "path": "/a/b/-", "value": 3},
            {"op": "add", "path": "/a/b/0", "value": 0},
            {"op": "remove", "path": "/a/b/1"},
            {"op": "replace", "path": "/a/c~0~1d", "value": "y"},
            {"op": "add", "path": "/e", "value": {}},
        ],
        "here",
    )
    assert doc == {"a": {"b": [0, 2, 3], "c~/d": "y"}, "e": {}}
    for bad, message in (
        ({"op": "test", "path": "/a/b/0", "value": 9}, "here: test /a/b/0"),
        ({"op": "replace", "path": "/a/zz", "value": 1}, "replace of missing /a/zz"),
        ({"op": "remove", "path": "/q/r"}, "no such location"),
        ({"op": "move", "path": "/a", "from": "/e"}, "'move' is not supported"),
    ):
        with pytest.raises(AssertionError, match=message):
            json6902(doc, [bad], "here")


def test_split_image() -> None:
    assert split_image("reg:5000/team/gansvc:1.0-cpu") == ("reg:5000/team/gansvc", "1.0-cpu")
    assert split_image("reg:5000/team/gansvc") == ("reg:5000/team/gansvc", None)


def test_render_resources_namespace_images_patches(tmp_path: Path) -> None:
    base, overlay = tmp_path / "base", tmp_path / "overlay"
    base.mkdir()
    overlay.mkdir()
    (base / "pods.yaml").write_text(yaml.safe_dump_all([_pod("a", "gansvc:old"), _pod("b", "other:1")]))
    (base / "ns.yaml").write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n"}}))
    (base / "kustomization.yaml").write_text(yaml.safe_dump({"resources": ["pods.yaml", "ns.yaml"]}))
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": ["../base"],
                "namespace": "team",
                "images": [{"name": "gansvc", "newName": "reg/gansvc", "newTag": "2"}],
                "patches": [
                    {
                        "target": {"kind": "Pod", "name": "b"},
                        "patch": yaml.safe_dump([{"op": "replace", "path": "/spec/containers/0/name", "value": "z"}]),
                    }
                ],
            }
        )
    )
    objs = {o["metadata"]["name"]: o for o in render(overlay)}
    assert (
        objs["a"]["spec"]["containers"][0]["image"] == "reg/gansvc:2" == objs["a"]["spec"]["initContainers"][0]["image"]
    ), "images: every container, init containers too"
    assert objs["b"]["spec"]["containers"][0] == {"name": "z", "image": "other:1"}, "patched, other image untouched"
    assert objs["a"]["metadata"]["namespace"] == "team" and "namespace" not in objs["n"]["metadata"]


@pytest.mark.parametrize(
    "kustomization, message",
    [
        ({"resources": [], "configMapGenerator": []}, "configMapGenerator"),
        ({"resources": ["p.yaml"], "patches": [{"path": "x.yaml"}]}, "only targeted patches"),
        ({"resources": ["p.yaml"], "patches": [{"target": {"kind": "Pod"}, "patch": "spec: {}"}]}, "only JSON 6902"),
        ({"resources": ["p.yaml"], "patches": [{"target": {"kind": "Service"}, "patch": "[]"}]}, "matches 0 objects"),
    ],
)
def test_render_refuses_what_it_does_not_implement(tmp_path: Path, kustomization: dict[str, Any], message: str) -> None:
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(_pod("a", "x:1")))
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    with pytest.raises(AssertionError, match=message):
        render(tmp_path)
