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
import hashlib
import io
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gansvc import storage
from gansvc.data.spec import DataSpec
from gansvc.families import get_family
from gansvc.families.base import FamilyConfig, FamilySpec, GanState, unwrap

MODEL_FILE = "model.pt"
TRAIN_FILE = "train_state.pt"
META_FILE = "meta.json"
FORMAT = "gansvc-model/1"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or does not fit; the message says which and what to do."""


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

def inference_payload(spec: FamilySpec, fam_cfg: FamilyConfig, data: DataSpec, state: GanState,
                      extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "family": spec.name,
        "task": spec.task,
        "config": fam_cfg.model_dump_json(),
        "data_spec": json.dumps(data.to_dict()),
        "nets": {k: {n: t.detach().cpu() for n, t in v.state_dict().items()} for k, v in state.inference_nets().items()},
        "extra": json.dumps(extra or {}),
    }


def save_checkpoint(directory: Path, spec: FamilySpec, fam_cfg: FamilyConfig, data: DataSpec, state: GanState,
                    step: int, position: dict[str, int], experiment_json: str, metrics: dict[str, float]) -> None:
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
    meta = {"family": spec.name, "step": step, "metrics": metrics,
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "files": {name: sha256_file(directory / name) for name in (MODEL_FILE, TRAIN_FILE)}}
    (directory / META_FILE).write_text(json.dumps(meta, indent=2))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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


CHECKPOINT_DIR = re.compile(r"^checkpoint-(\d{8})(?:-[a-z0-9]+)?$")


def checkpoint_step(name: str) -> int | None:
    """The step of a checkpoint directory name (checkpoint-00000020, or checkpoint-00000020-<suffix>), else None."""
    m = CHECKPOINT_DIR.match(name)
    return int(m.group(1)) if m else None


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
            raise CheckpointError(f"{name} does not match the SHA-256 in {META_FILE} (truncated or corrupted: "
                                  f"{path.stat().st_size} bytes)")
    rng = directory / f"rng-rank{rank}.pt"
    if rng.exists():  # absent when the run now has more workers than when it was written: fresh noise then
        _load_bytes(rng.read_bytes(), rng.name)
    return meta


def restore_training(directory: Path, spec: FamilySpec, state: GanState, rank: int) -> tuple[int, dict[str, int]]:
    """Load everything into `state` (nets may be DDP-wrapped); returns (step, data position). Refuses misfits."""
    train = _read(directory, TRAIN_FILE)
    if train.get("format") != FORMAT:
        raise CheckpointError(f"{directory}: unknown checkpoint format {train.get('format')!r}")
    if train["family"] != spec.name:
        raise CheckpointError(f"the checkpoint in {directory} was written by family {train['family']!r}; this run is "
                              f"{spec.name!r}. Use another --name for a new run")
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
        raise CheckpointError(f"the checkpoint in {directory} does not fit this config (different architecture, image "
                              f"size or channels?): {first}. Resume with the run's own config, or use another "
                              "--name for a new run") from None
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
    return _read(directory, TRAIN_FILE)["experiment"]


# ------------------------------------------------------------------------------------------------------------- best
# RUN/best/ holds the inference part of the run's best evaluation: `model-<step>-<hash>.pt` (a new object name per
# best, never overwritten) and `meta.json` naming it with its SHA-256. meta.json is written last and is the commit
# point: a reader takes the model meta.json names and checks its hash, so a crash between the two writes leaves the
# previous best readable (or, for a first best, none), never a model of one step with the metrics of another. The
# previous model file is kept one round, for a reader that read the previous meta.json just before the switch.
# Old runs (meta.json without "model") used best/model.pt: still read.

BEST_DIR = "best"


def read_best(run_uri: str) -> tuple[dict[str, Any], str] | None:
    """(meta, model URI) of a run's committed best, or None when it has none (or it is inconsistent)."""
    run = storage.parse_uri(run_uri)
    meta_uri = run.join(BEST_DIR, META_FILE).uri()
    if not storage.exists(meta_uri):
        return None
    meta = storage.read_json(meta_uri)
    name = str(meta.get("model", MODEL_FILE))
    if not re.fullmatch(r"model(-\d{8}-[0-9a-f]{12})?\.pt", name):  # a file of best/, never a path out of it
        return None
    model_uri = run.join(BEST_DIR, name).uri()
    if not storage.exists(model_uri):
        return None
    if "sha256" in meta and hashlib.sha256(storage.read_bytes(model_uri)).hexdigest() != meta["sha256"]:
        return None
    return meta, model_uri


def write_best(run_uri: str, model_bytes: bytes, meta: dict[str, Any]) -> dict[str, Any]:
    """Commit a new best (model first, then meta.json); returns the committed meta."""
    run = storage.parse_uri(run_uri)
    digest = hashlib.sha256(model_bytes).hexdigest()
    name = f"model-{int(meta['step']):08d}-{digest[:12]}.pt"
    previous = read_best(run_uri)
    storage.write_bytes(run.join(BEST_DIR, name).uri(), model_bytes)
    committed = {**meta, "model": name, "sha256": digest}
    storage.write_json(run.join(BEST_DIR, META_FILE).uri(), committed)  # the commit point
    keep = {META_FILE, name, previous[1].rsplit("/", 1)[-1] if previous else ""}
    for obj in list(storage.list_objects(run.join(BEST_DIR).uri())):
        if "/" not in obj.rel and obj.rel not in keep:
            storage.delete(run.join(BEST_DIR, obj.rel).uri())
    return committed


def drop_best(run_uri: str) -> None:
    """Remove a run's best: meta.json first (readers then see none), then the model files."""
    run = storage.parse_uri(run_uri)
    storage.delete(run.join(BEST_DIR, META_FILE).uri())
    for obj in list(storage.list_objects(run.join(BEST_DIR).uri())):
        storage.delete(run.join(BEST_DIR, obj.rel).uri())


# -------------------------------------------------------------------------------------------------------- inference

@dataclass
class InferenceModel:
    spec: FamilySpec
    config: FamilyConfig
    data: DataSpec
    nets: dict[str, nn.Module]
    extra: dict[str, Any]


def load_inference_payload(payload: dict[str, Any], where: str, device: str | torch.device = "cpu") -> InferenceModel:
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{where} is not a gansvc model file (format {FORMAT})")
    try:
        spec = get_family(payload["family"])
    except ValueError as err:
        raise CheckpointError(f"{where}: {err}") from None
    cfg = spec.config.model_validate_json(payload["config"])
    data = DataSpec.from_dict(json.loads(payload["data_spec"]))
    built = spec.build(cfg, data)
    nets = {}
    for name in built.inference:
        net = built.nets[name]
        try:
            net.load_state_dict(payload["nets"][name])
        except (KeyError, RuntimeError) as err:
            raise CheckpointError(f"{where}: weights of {name} do not fit the {spec.name} network: "
                                  f"{str(err).splitlines()[0][:300]}") from None
        nets[name] = net.to(device).eval().requires_grad_(False)
    return InferenceModel(spec, cfg, data, nets, json.loads(payload.get("extra") or "{}"))


def load_inference(uri: str, device: str | torch.device = "cpu") -> InferenceModel:
    """The inference nets of a checkpoint directory (or a model.pt) at a local path or s3:// URI."""
    loc = storage.parse_uri(uri)
    file_uri = loc.uri() if loc.uri().endswith(".pt") else loc.join(MODEL_FILE).uri()
    try:
        data = storage.read_bytes(file_uri)
    except storage.StorageError as err:
        raise CheckpointError(f"no model at {uri}: {err}") from None
    return load_inference_payload(_load_bytes(data, file_uri), file_uri, device)
