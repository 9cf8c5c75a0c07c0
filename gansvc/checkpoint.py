"""Checkpoints: the full training state (exact resume) and the inference part (the only link to serving).

A checkpoint directory holds
- `model.pt`      the inference part: family name, family config and data spec (as JSON strings), and the state dicts
                  of the inference nets (EMA weights when the family keeps EMA). Everything Serve and the CLIs load.
- `train_state.pt` (rank 0) every net, EMA copy, optimizer, LR scheduler and extra (image pools), the step and the
                  data position, and the resolved experiment config (JSON).
- `rng-rank{R}.pt` each worker's RNG states (torch CPU/CUDA, Python), so a resumed run draws the same noise.
- `meta.json`     human-readable: family, step, metrics, time, and `files`: the SHA-256 of model.pt and
                  train_state.pt, so a truncated or corrupted checkpoint is detected on resume (`validate_checkpoint`);
                  the loop then falls back to the previous good checkpoint.
Every file holds only tensors, numbers, strings, lists and dicts: loading uses `torch.load(weights_only=True)` and
never unpickles arbitrary objects.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import random
from pathlib import Path
from typing import Any

import torch

from gansvc import storage

# re-exported here, the import path of everything above the families: file names, the error and best/ are torch-free
# (checkpoint_layout, for the registry's start-up time); the model file's payload lives with the families (a family
# may read another's model file)
from gansvc.checkpoint_layout import (
    BEST_DIR,
    FORMAT,
    META_FILE,
    MODEL_FILE,
    TRAIN_FILE,
    CheckpointError,
    checkpoint_step,
    drop_best,
    read_best,
    sha256_file,
    write_best,
)
from gansvc.data.spec import DataSpec
from gansvc.families import get_family
from gansvc.families.base import FamilyConfig, FamilySpec, GanState
from gansvc.families.model_file import InferenceModel, inference_payload, load_payload
from gansvc.nn.wrappers import unwrap

__all__ = [
    "BEST_DIR",
    "FORMAT",
    "META_FILE",
    "MODEL_FILE",
    "TRAIN_FILE",
    "CheckpointError",
    "InferenceModel",
    "checkpoint_step",
    "drop_best",
    "inference_payload",
    "load_inference",
    "load_inference_payload",
    "read_best",
    "restore_training",
    "rng_state",
    "save_checkpoint",
    "save_rng",
    "sha256_file",
    "stored_experiment",
    "validate_checkpoint",
    "write_best",
]


def _save(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def _load_bytes(data: bytes, what: str) -> Any:
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means "not our format"
        raise CheckpointError(f"{what} is not a gansvc checkpoint file (or is damaged): {err}") from None


# ------------------------------------------------------------------------------------------------------------- save


def save_checkpoint(
    directory: Path,
    spec: FamilySpec[Any],
    fam_cfg: FamilyConfig,
    data: DataSpec,
    state: GanState,
    step: int,
    position: dict[str, int],
    experiment_json: str,
    metrics: dict[str, float],
) -> None:
    """Rank 0's part of a checkpoint: model.pt, train_state.pt, meta.json."""
    directory.mkdir(parents=True, exist_ok=True)
    _save(inference_payload(spec, fam_cfg, data, state, {"step": step, "metrics": metrics}), directory / MODEL_FILE)
    train = {
        "format": FORMAT,
        "family": spec.name,
        "experiment": experiment_json,
        "step": step,
        "position": dict(position),
        "nets": {k: unwrap(v).state_dict() for k, v in state.nets.items()},
        "ema": {k: v.state_dict() for k, v in state.ema.items()},
        "optimizers": {k: v.state_dict() for k, v in state.optimizers.items()},
        "schedulers": {k: v.state_dict() for k, v in state.schedulers.items()},
        "extras": {k: v.state_dict() for k, v in state.extras.items()},
    }
    _save(train, directory / TRAIN_FILE)
    meta = {
        "family": spec.name,
        "step": step,
        "metrics": metrics,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "files": {name: sha256_file(directory / name) for name in (MODEL_FILE, TRAIN_FILE)},
    }
    (directory / META_FILE).write_text(json.dumps(meta, indent=2))


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": json.dumps(random.getstate())}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def save_rng(directory: Path, rank: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    _save(rng_state(), directory / f"rng-rank{rank}.pt")


# ---------------------------------------------------------------------------------------------------------- restore


def _read(directory: Path, name: str) -> Any:
    path = directory / name
    if not path.exists():
        raise CheckpointError(f"{directory} has no {name}: it is not a gansvc training checkpoint")
    return _load_bytes(path.read_bytes(), str(path))


def validate_checkpoint(directory: Path, rank: int) -> dict[str, Any]:
    """meta.json of a complete, undamaged checkpoint as `rank` needs it; CheckpointError saying what is wrong.

    Checks: meta.json parses; model.pt and train_state.pt exist and match the SHA-256 recorded in meta.json (checkpoints
    written before hashes were recorded: both must load); this rank's RNG file, when there is one, loads.
    """
    meta_path = directory / META_FILE
    if not meta_path.exists():
        raise CheckpointError(f"it has no {META_FILE} (incomplete upload?)")
    try:
        meta = json.loads(meta_path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise CheckpointError(f"its {META_FILE} is not valid JSON: {err}") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"its {META_FILE} is not an object")
    for name in (MODEL_FILE, TRAIN_FILE):
        path = directory / name
        if not path.exists():
            raise CheckpointError(f"it has no {name}")
        want = (meta.get("files") or {}).get(name)
        if want is None:
            _load_bytes(path.read_bytes(), name)  # an older checkpoint: at least it must load
        elif sha256_file(path) != want:
            raise CheckpointError(
                f"{name} does not match the SHA-256 in {META_FILE} (truncated or corrupted: "
                f"{path.stat().st_size} bytes)"
            )
    rng = directory / f"rng-rank{rank}.pt"
    if rng.exists():  # absent when the run now has more workers than when it was written: fresh noise then
        _load_bytes(rng.read_bytes(), rng.name)
    return meta


def restore_training(directory: Path, spec: FamilySpec[Any], state: GanState, rank: int) -> tuple[int, dict[str, int]]:
    """Load everything into `state` (nets may be DDP-wrapped); returns (step, data position). Refuses misfits."""
    train = _read(directory, TRAIN_FILE)
    if train.get("format") != FORMAT:
        raise CheckpointError(f"{directory}: unknown checkpoint format {train.get('format')!r}")
    if train["family"] != spec.name:
        raise CheckpointError(
            f"the checkpoint in {directory} was written by family {train['family']!r}; this run is "
            f"{spec.name!r}. Use another --name for a new run"
        )
    try:
        for k, net in state.nets.items():
            unwrap(net).load_state_dict(train["nets"][k])
        for k, net in state.ema.items():
            net.load_state_dict(train["ema"][k])
        for k, opt in state.optimizers.items():
            opt.load_state_dict(train["optimizers"][k])
        for k, sched in state.schedulers.items():
            sched.load_state_dict(train["schedulers"][k])
        for k, extra in state.extras.items():
            extra.load_state_dict(train["extras"][k])
    except (KeyError, RuntimeError, ValueError) as err:
        first = str(err).strip().splitlines()[0][:300]
        raise CheckpointError(
            f"the checkpoint in {directory} does not fit this config (different architecture, image "
            f"size or channels?): {first}. Resume with the run's own config, or use another "
            "--name for a new run"
        ) from None
    rng_file = directory / f"rng-rank{rank}.pt"
    if rng_file.exists():
        rng = _load_bytes(rng_file.read_bytes(), str(rng_file))
        torch.set_rng_state(rng["torch"])
        random.setstate(_tuple(json.loads(rng["python"])))
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
    return int(train["step"]), dict(train["position"])


def _tuple(x: Any) -> Any:
    return tuple(_tuple(v) for v in x) if isinstance(x, list) else x


def stored_experiment(directory: Path) -> str:
    experiment: str = _read(directory, TRAIN_FILE)["experiment"]
    return experiment


# -------------------------------------------------------------------------------------------------------- inference


def load_inference_payload(payload: dict[str, Any], where: str, device: str | torch.device = "cpu") -> InferenceModel:
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{where} is not a gansvc model file (format {FORMAT})")
    try:
        spec = get_family(payload["family"])
    except ValueError as err:
        raise CheckpointError(f"{where}: {err}") from None
    return load_payload(spec, payload, where, device)


def load_inference(uri: str, device: str | torch.device = "cpu") -> InferenceModel:
    """The inference nets of a checkpoint directory (or a model.pt) at a local path or s3:// URI."""
    loc = storage.parse_uri(uri)
    file_uri = loc.uri() if loc.uri().endswith(".pt") else loc.join(MODEL_FILE).uri()
    try:
        data = storage.read_bytes(file_uri)
    except storage.StorageError as err:
        raise CheckpointError(f"no model at {uri}: {err}") from None
    return load_inference_payload(_load_bytes(data, file_uri), file_uri, device)
