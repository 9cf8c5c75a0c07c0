"""The gansvc model file (`model.pt`): a family's inference part, written by training and the importers, read by
Serve, the CLIs, the registry and families that take another family's model as an input (semantic-cyclegan's
segmenter).

It lives under `families/` because building its nets needs only a FamilySpec; `gansvc.checkpoint` adds the
name -> family lookup (`load_inference_payload`) and re-exports everything here, so callers above the families keep
importing from `gansvc.checkpoint`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gansvc.checkpoint_layout import FORMAT, MODEL_FILE, CheckpointError
from gansvc.data.spec import DataSpec
from gansvc.families.base import FamilyConfig, FamilySpec, GanState

__all__ = ["FORMAT", "MODEL_FILE", "CheckpointError", "InferenceModel", "inference_payload", "load_payload"]


@dataclass
class InferenceModel:
    spec: FamilySpec[Any]
    config: FamilyConfig
    data: DataSpec
    nets: dict[str, nn.Module]
    extra: dict[str, Any]


def inference_payload(
    spec: FamilySpec[Any], fam_cfg: FamilyConfig, data: DataSpec, state: GanState, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "family": spec.name,
        "task": spec.task,
        "config": fam_cfg.model_dump_json(),
        "data_spec": json.dumps(data.to_dict()),
        "nets": {
            k: {n: t.detach().cpu() for n, t in v.state_dict().items()} for k, v in state.inference_nets().items()
        },
        "extra": json.dumps(extra or {}),
    }


def load_payload(
    spec: FamilySpec[Any], payload: dict[str, Any], where: str, device: str | torch.device = "cpu"
) -> InferenceModel:
    """The inference nets of a model-file payload written by `spec`'s family (the caller checked format and family),
    in eval mode without gradients on `device`."""
    cfg = spec.config.model_validate_json(payload["config"])
    data = DataSpec.from_dict(json.loads(payload["data_spec"]))
    built = spec.build(cfg, data)
    nets = {}
    for name in built.inference:
        net = built.nets[name]
        try:
            net.load_state_dict(payload["nets"][name])
        except (KeyError, RuntimeError) as err:
            raise CheckpointError(
                f"{where}: weights of {name} do not fit the {spec.name} network: {str(err).splitlines()[0][:300]}"
            ) from None
        nets[name] = net.to(device).eval().requires_grad_(False)
    return InferenceModel(spec, cfg, data, nets, json.loads(payload.get("extra") or "{}"))
