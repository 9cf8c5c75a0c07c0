"""Checkpoint and model-file names, the checkpoint error, and the torch-free readers and writers of a run's `best/`:
what the registry's listing commands and other torch-free code need of checkpoints (`gansvc.checkpoint` re-exports all
of it; it is split out so that `python -m gansvc.registry list` starts without importing torch).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from gansvc import storage

MODEL_FILE = "model.pt"
TRAIN_FILE = "train_state.pt"
META_FILE = "meta.json"
FORMAT = "gansvc-model/1"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or does not fit; the message says which and what to do."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


CHECKPOINT_DIR = re.compile(r"^checkpoint-(\d{8})(?:-[a-z0-9]+)?$")


def checkpoint_step(name: str) -> int | None:
    """The step of a checkpoint directory name (checkpoint-00000020, or checkpoint-00000020-<suffix>), else None."""
    m = CHECKPOINT_DIR.match(name)
    return int(m.group(1)) if m else None


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
