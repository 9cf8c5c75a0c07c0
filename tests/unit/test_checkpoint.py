"""Checkpoint integrity (hashes, validation), the atomic best/ and its roll back on resume, the failure policy.

No Ray cluster: the checkpoint files are the ones the loop writes (`save_checkpoint`, `save_rng`), the evaluator runs
against the real S3 server.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from gansvc import local, storage
from gansvc.checkpoint import (
    META_FILE,
    MODEL_FILE,
    TRAIN_FILE,
    CheckpointError,
    checkpoint_step,
    drop_best,
    inference_payload,
    read_best,
    save_checkpoint,
    save_rng,
    validate_checkpoint,
    write_best,
)
from gansvc.data.spec import DataSpec
from gansvc.families import FAMILIES

DATA = DataSpec("single", 16, 16, 3)


def _write(directory: Path, step: int = 10) -> Path:
    spec = FAMILIES["dcgan"]
    cfg = spec.make_config("smoke")
    torch.manual_seed(step)
    state = spec.build(cfg, DATA)
    save_checkpoint(directory, spec, cfg, DATA, state, step, {"epoch": 0, "batch": step}, "{}", {"loss_d": 1.0})
    save_rng(directory, 0)
    return directory


def test_a_good_checkpoint_validates(tmp_path: Path) -> None:
    meta = validate_checkpoint(_write(tmp_path / "c"), rank=0)
    assert meta["step"] == 10 and set(meta["files"]) == {MODEL_FILE, TRAIN_FILE}
    assert validate_checkpoint(tmp_path / "c", rank=3)["step"] == 10, "a rank without an RNG file (more workers now)"


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / TRAIN_FILE).write_bytes((d / TRAIN_FILE).read_bytes()[:1000]), "train_state.pt does not match"),
        (lambda d: (d / MODEL_FILE).write_bytes(b"x" * (d / MODEL_FILE).stat().st_size), "model.pt does not match"),
        (lambda d: (d / TRAIN_FILE).unlink(), "has no train_state.pt"),
        (lambda d: (d / META_FILE).unlink(), "no meta.json"),
        (lambda d: (d / META_FILE).write_text('{"step": 1'), "not valid JSON"),
        (lambda d: (d / "rng-rank0.pt").write_bytes(b"\x00" * 40), "rng-rank0.pt is not a gansvc checkpoint file"),
    ],
    ids=["truncated-train-state", "corrupted-model", "missing-file", "missing-meta", "bad-meta", "bad-rng"],
)
def test_damaged_checkpoints_are_detected(tmp_path: Path, damage: Any, message: str) -> None:
    directory = _write(tmp_path / "c")
    damage(directory)
    with pytest.raises(CheckpointError, match=message):
        validate_checkpoint(directory, rank=0)


def test_checkpoint_dir_names() -> None:
    assert checkpoint_step("checkpoint-00000020") == 20
    assert checkpoint_step("checkpoint-00000020-a1b2c3") == 20, "a checkpoint written after a fall back"
    assert checkpoint_step("checkpoint_manager_snapshot.json") is None and checkpoint_step("best") is None


# ------------------------------------------------------------------------------------------------------------ best/


def _model_bytes(seed: int) -> bytes:
    spec = FAMILIES["dcgan"]
    cfg = spec.make_config("smoke")
    torch.manual_seed(seed)
    buf = io.BytesIO()
    torch.save(inference_payload(spec, cfg, DATA, spec.build(cfg, DATA), {"step": seed}), buf)
    return buf.getvalue()


def test_best_is_committed_by_its_meta(tmp_path: Path) -> None:
    run = str(tmp_path / "run")
    assert read_best(run) is None
    first = write_best(run, _model_bytes(10), {"step": 10, "metric": "swd", "value": 2.0})
    meta, uri = read_best(run)
    assert meta["step"] == 10 and Path(uri).read_bytes() == _model_bytes(10)
    # a crash after the new model object but before its meta.json: the old best is still what readers get
    (tmp_path / "run" / "best" / "model-00000020-000000000000.pt").write_bytes(_model_bytes(20))
    assert read_best(run)[0]["step"] == 10
    second = write_best(run, _model_bytes(20), {"step": 20, "metric": "swd", "value": 1.0})
    assert read_best(run)[0]["model"] == second["model"]
    kept = sorted(p.name for p in (tmp_path / "run" / "best").iterdir())
    assert kept == sorted([META_FILE, first["model"], second["model"]]), "the new and the previous model are kept"
    drop_best(run)
    assert read_best(run) is None and not any((tmp_path / "run" / "best").iterdir())


@pytest.fixture(scope="module")
def shapes(stack: local.StackState, synth_put: Callable[..., str]) -> str:
    return synth_put("shapes", f"s3://{stack.bucket}/ckpt-data/shapes", count=32, size=16, seed=0, test_count=8)


def _evaluator(shapes: str, run_uri: str, start_step: int) -> Any:
    from gansvc.config import build_config
    from gansvc.data.pipeline import ImageDataset
    from gansvc.train.evaluation import Evaluator

    cfg = build_config(
        {
            "family": "dcgan",
            "preset": "smoke",
            "data": {"uri": shapes, "cache_dir": ""},
            "loop": {"max_steps": 30, "batch_size": 8, "grid_size": 4},
            "metrics": {"samples": 16, "reference_samples": 16},
        }
    )
    spec = cfg.spec()
    return Evaluator(cfg, spec, cfg.family_config(), ImageDataset(cfg.data), run_uri, torch.device("cpu"), start_step)


def _run_with_history(run: str) -> None:
    """A run whose failed attempt evaluated steps 10, 20 (best, swd 1.0) and 30 and then died before checkpoint 20."""
    storage.write_json(
        f"{run}/history.json",
        [{"step": 10, "swd": 5.0}, {"step": 15, "loss_d": 1.0}, {"step": 20, "swd": 1.0}, {"step": 30, "swd": 3.0}],
    )
    storage.write_bytes(f"{run}/checkpoint-00000010/{MODEL_FILE}", _model_bytes(10))
    write_best(run, _model_bytes(20), {"step": 20, "metric": "swd", "value": 1.0, "metrics": {"swd": 1.0}})


def test_resumed_run_rolls_best_back_to_its_history(
    shapes: str, s3_prefix: str, one_torch_thread: None, capsys: pytest.CaptureFixture
) -> None:
    """issue 13 #16: a run resumed at step S whose best/ came from a step after S gets the best of the history up to S
    (from that step's checkpoint), and its history ends at S."""
    run = f"{s3_prefix}/run"
    _run_with_history(run)
    ev = _evaluator(shapes, run, start_step=10)
    meta, uri = read_best(run)
    assert meta["step"] == 10 and meta["value"] == 5.0 and meta["metric"] == "swd"
    assert storage.read_bytes(uri) == _model_bytes(10), "best/ holds checkpoint 10's model"
    assert ev.best == meta and [h["step"] for h in ev.history] == [10]
    assert "rolled back" in capsys.readouterr().out
    # a best from before the resume point is kept as it is
    ev = _evaluator(shapes, run, start_step=25)
    assert read_best(run)[0]["step"] == 10 and ev.best["step"] == 10


def test_resumed_run_drops_a_best_it_cannot_rebuild(shapes: str, s3_prefix: str, one_torch_thread: None) -> None:
    run = f"{s3_prefix}/run"
    _run_with_history(run)
    storage.delete(f"{run}/checkpoint-00000010/{MODEL_FILE}")  # pruned by keep_checkpoints
    ev = _evaluator(shapes, run, start_step=12)
    assert ev.best is None and read_best(run) is None, "no best from the future survives the resume"


# ------------------------------------------------------------------------------------------------ failure policy


def test_failure_policy_stops_deterministic_errors_and_retries_the_rest() -> None:
    from ray.train import FailureConfig
    from ray.train.v2._internal.execution.failure_handling import FailureDecision
    from ray.train.v2.api.exceptions import WorkerGroupError

    from gansvc.train.failures import DeterministicError, install_policy, make_policy, policy_installed

    assert install_policy() and policy_installed(), "this Ray's trainer module no longer has the policy hook"
    policy = make_policy(FailureConfig(max_failures=2))
    for err in (ValueError("has no testB split"), KeyError("G"), TypeError("bad"), DeterministicError("x")):
        assert (
            policy.make_decision(WorkerGroupError("e", {0: RuntimeError("collective aborted"), 1: err}))
            == FailureDecision.RAISE
        ), err
    for err in (RuntimeError("gloo: connection closed"), ConnectionError("reset"), OSError("S3 down")):
        policy = make_policy(FailureConfig(max_failures=2))  # a fresh budget of 2 restarts each
        assert policy.make_decision(WorkerGroupError("e", {0: err})) == FailureDecision.RETRY, err


def test_tmp_files_do_not_leak(tmp_path: Path) -> None:
    """save_checkpoint writes through temporary names: none are left behind."""
    directory = _write(tmp_path / "c")
    assert sorted(p.name for p in directory.iterdir()) == sorted([MODEL_FILE, TRAIN_FILE, META_FILE, "rng-rank0.pt"])
