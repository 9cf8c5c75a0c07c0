"""`python -m gansvc.train` on a real Ray instance with the real S3 server: jobs, DDP sync, exact resume, failures."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from gansvc import local, storage
from gansvc.checkpoint import TRAIN_FILE, _load_bytes, load_inference
from gansvc.families import FAMILIES
from gansvc.registry import load_model, promote
from gansvc.train.__main__ import main as train_main


@pytest.fixture(scope="module")
def datasets(stack: local.StackState, synth_put: Callable[..., str]) -> dict[str, str]:
    root = f"s3://{stack.bucket}/train-data"
    uris = {
        "single": f"{root}/shapes",
        "unpaired": f"{root}/stripes",
        "other": f"{root}/shapes-1",
        "half-test": f"{root}/stripes-testA-only",
    }
    synth_put("shapes", uris["single"], count=64, size=16, seed=0, test_count=8)
    synth_put("shapes", uris["other"], count=64, size=16, seed=1, test_count=8)
    # with masks: the segmenter trains on them, the translation families ignore them
    synth_put("stripes", uris["unpaired"], count=32, size=16, seed=0, test_count=4, masks=True)
    # testA/ without testB/ (issue 13 #15b), as written by an older `data put` or another tool (today's put refuses
    # it): training must refuse it before it starts
    synth_put("stripes", uris["half-test"], count=32, size=16, seed=0, test_count=4)
    manifest = storage.read_json(f"{uris['half-test']}/manifest.json")
    del manifest["splits"]["testB"]
    storage.write_json(f"{uris['half-test']}/manifest.json", manifest)
    return uris


def _dataset_for(family: str, datasets: dict[str, str]) -> str:
    return datasets["unpaired"] if FAMILIES[family].task in ("translate", "segment") else datasets["single"]


def _args(family: str, dataset: str, runs: str, name: str, *extra: str) -> list[str]:
    return [
        family,
        "--dataset",
        dataset,
        "--storage",
        runs,
        "--name",
        name,
        "--preset",
        "smoke",
        "--batch-size",
        "8",
        *extra,
    ]


def _run_objects(runs: str, name: str) -> set[str]:
    return {o.rel for o in storage.list_objects(f"{runs}/{name}")}


def _committed_step(runs: str, name: str) -> int | None:
    """The step of the latest checkpoint Ray Train has committed for a run (its checkpoint manager writes a snapshot
    to the run folder on every commit: ray/train/v2/_internal/execution/checkpoint/checkpoint_manager.py, Ray 2.60)."""
    uri = f"{runs}/{name}/checkpoint_manager_snapshot.json"
    if not storage.exists(uri):
        return None
    latest = json.loads(storage.read_bytes(uri)).get("latest_checkpoint_result")
    return int(latest["checkpoint_dir_name"].split("-")[1]) if latest else None


def _train_state(runs: str, name: str, step: int) -> dict[str, Any]:
    uri = f"{runs}/{name}/checkpoint-{step:08d}/{TRAIN_FILE}"
    return _load_bytes(storage.read_bytes(uri), uri)


# ------------------------------------------------------------------------------------------------- no Ray needed


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--set", "model.lr_g=-1"], "model.lr_g"),
        (["--set", "model.loss=wasserstein-ish"], "model.loss"),
        (["--set", "loop.nonsense=1"], "loop.nonsense"),
        (["--set", "model.lr_g"], "key.path=value"),
        (["--batch-size", "4096"], "--batch-size"),
        (["--preset", "no-such-preset"], "no preset"),
    ],
)
def test_config_errors_name_the_field(
    datasets: dict[str, str], s3_prefix: str, capsys: pytest.CaptureFixture, extra: list[str], message: str
) -> None:
    code = train_main(_args("dcgan", datasets["single"], s3_prefix, "bad", "--max-steps", "5", *extra))
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


def test_dataset_errors(datasets: dict[str, str], s3_prefix: str, capsys: pytest.CaptureFixture) -> None:
    assert train_main(_args("dcgan", datasets["unpaired"], s3_prefix, "x", "--max-steps", "5")) == 2
    assert "single-domain" in capsys.readouterr().err
    assert train_main(_args("cyclegan", datasets["single"], s3_prefix, "x", "--max-steps", "5")) == 2
    assert "unpaired" in capsys.readouterr().err
    assert train_main(_args("dcgan", f"{s3_prefix}/nothing", s3_prefix, "x", "--max-steps", "5")) == 2
    assert "not a gansvc dataset" in capsys.readouterr().err
    # a preset without a run (smoke: tiny nets only) must be told how long to train; a family's default preset is a
    # whole run (issue 14: tests/unit/families/test_presets.py)
    assert train_main(["dcgan", "--dataset", datasets["single"], "--name", "x", "--preset", "smoke"]) == 2
    assert "max_steps" in capsys.readouterr().err


def test_dry_run_prints_resolved_config(
    datasets: dict[str, str], s3_prefix: str, capsys: pytest.CaptureFixture
) -> None:
    code = train_main(
        _args(
            "acgan",
            datasets["single"],
            s3_prefix,
            "dry",
            "--max-steps",
            "5",
            "--dry-run",
            "--set",
            "model.class_weight=2.5",
        )
    )
    out = capsys.readouterr().out
    assert code == 0 and "dry run" in out
    resolved = yaml.safe_load(out.split("resolved config:\n", 1)[1].split("dry run")[0])
    assert resolved["family"] == "acgan" and resolved["model"]["class_weight"] == 2.5
    assert resolved["run"]["storage"] == s3_prefix and resolved["loop"]["max_steps"] == 5
    assert not _run_objects(s3_prefix, "dry"), "a dry run writes nothing"


def test_config_file_and_flags(
    datasets: dict[str, str], s3_prefix: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "family": "wgan",
                "data": {"uri": datasets["single"]},
                "loop": {"max_steps": 7, "batch_size": 4},
                "model": {"n_critic": 2},
            }
        )
    )
    assert train_main(["--config", str(cfg), "--storage", s3_prefix, "--batch-size", "8", "--dry-run"]) == 0
    resolved = yaml.safe_load(capsys.readouterr().out.split("resolved config:\n", 1)[1].split("dry run")[0])
    assert resolved["loop"]["batch_size"] == 8 and resolved["model"]["n_critic"] == 2


def test_incomplete_test_split_is_refused_before_start(
    datasets: dict[str, str], s3_prefix: str, capsys: pytest.CaptureFixture
) -> None:
    """issue 13 #15b: the evaluation split is checked before start by the workers' own check (eval_dataset)."""
    code = train_main(_args("cyclegan", datasets["half-test"], s3_prefix, "half", "--max-steps", "5", "--dry-run"))
    err = capsys.readouterr().err
    assert code == 2 and "has no testB split" in err and "Traceback" not in err
    assert not _run_objects(s3_prefix, "half")


# ----------------------------------------------------------------------------------------------------- with Ray


def test_deterministic_worker_error_is_not_retried(
    ray_stack: local.StackState, datasets: dict[str, str], s3_prefix: str
) -> None:
    """issue 13 #15b: an error that repeats on every attempt (here: the dataset check, raised in the worker because
    this test skips the driver's preflight) stops the run at once instead of restarting the group max_failures
    times."""
    from ray.train import TrainingFailedError

    from gansvc.train.__main__ import build_parser, config_from_args
    from gansvc.train.failures import describe
    from gansvc.train.run import fit

    args = build_parser().parse_args(
        _args("cyclegan", datasets["half-test"], s3_prefix, "det", "--max-steps", "5", "--max-failures", "2")
    )
    cfg = config_from_args(args).resolved()
    start = time.monotonic()
    with pytest.raises(TrainingFailedError) as info:
        fit(cfg)
    elapsed = time.monotonic() - start
    assert "has no testB split" in describe(info.value)
    starts = storage.read_json(f"{s3_prefix}/det/starts.json")
    assert len(starts) == 1, f"the worker group was started {len(starts)} times for a deterministic error"
    print(f"deterministic error stopped the run after {elapsed:.1f}s (one worker group start)")


def test_resume_with_another_config_is_refused_unless_allowed(
    ray_stack: local.StackState,
    datasets: dict[str, str],
    s3_prefix: str,
    capsys: pytest.CaptureFixture,
) -> None:
    """issue 13 #15: a resume may extend a run (loop length, cadence, workers) but not silently change what it
    trains; --allow-config-change continues it and records the change as a segment of its history."""
    first, other = datasets["single"], datasets["other"]
    cadence = ("--checkpoint-every", "2", "--eval-every", "100", "--log-every", "2")
    assert train_main(_args("dcgan", first, s3_prefix, "chg", "--max-steps", "2", *cadence)) == 0
    capsys.readouterr()
    refused = [
        (["--dataset", other], f"data.uri: '{first}' -> '{other}'"),
        (["--set", "model.lr_g=0.001"], "model.lr_g: 0.0002 -> 0.001"),
        (["--batch-size", "4"], "loop.batch_size: 8 -> 4"),
        (["--seed", "7"], "loop.seed: 0 -> 7"),
    ]
    for extra, message in refused:
        code = train_main([*_args("dcgan", first, s3_prefix, "chg", "--max-steps", "4", *cadence), *extra])
        err = capsys.readouterr().err
        assert code == 2 and message in err and "--allow-config-change" in err, (extra, err)
    stored = storage.read_json(f"{s3_prefix}/chg/gansvc-config.json")
    assert stored["data"]["uri"] == first and len(stored["history"]) == 1, "a refused resume writes nothing"
    # extending the run (more steps, another cadence, more workers) needs no flag
    assert (
        train_main(
            _args("dcgan", first, s3_prefix, "chg", "--max-steps", "4", "--checkpoint-every", "4", "--num-workers", "2")
        )
        == 0
    )
    capsys.readouterr()
    assert (
        train_main([*_args("dcgan", other, s3_prefix, "chg", "--max-steps", "6", *cadence), "--allow-config-change"])
        == 0
    )
    assert f"data.uri: '{first}' -> '{other}'" in capsys.readouterr().out
    stored = storage.read_json(f"{s3_prefix}/chg/gansvc-config.json")
    assert stored["data"]["uri"] == other
    history = stored["history"]
    assert [h["resume_step"] for h in history] == [0, 2, 4] and [h["allowed_by_flag"] for h in history] == [
        False,
        False,
        True,
    ]
    assert history[1]["changed"]["loop.max_steps"] == [2, 4] and history[1]["changed"]["scaling.num_workers"] == [1, 2]
    assert history[2]["changed"]["data.uri"] == [first, other] and "time" in history[2]
    entry = promote(f"{s3_prefix}/chg/checkpoint-00000006", "chg-6", root=f"{s3_prefix}/registry")
    assert entry["dataset"] == other, "promote records the dataset the run trains on now"


def test_job_submission_two_workers_resume_promote(
    ray_stack: local.StackState, datasets: dict[str, str], s3_prefix: str
) -> None:
    """The command users run, through the Ray Job API of the embedded stack: 2 DDP workers, checkpoints and grids in
    S3, bit-identical weights on both workers, then the same command with more steps resumes."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(ray_stack.dashboard_url)
    base = (
        f"python -m gansvc.train dcgan --dataset {datasets['single']} --storage {s3_prefix} --name job "
        "--preset smoke --batch-size 8 --num-workers 2 --checkpoint-every 10 --eval-every 10 --log-every 5"
    )

    def run(entrypoint: str) -> str:
        job = client.submit_job(entrypoint=entrypoint)
        deadline = time.monotonic() + 420
        while client.get_job_status(job) not in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            assert time.monotonic() < deadline, "job did not finish in time"
            time.sleep(0.5)
        logs = client.get_job_logs(job)
        assert client.get_job_status(job) == JobStatus.SUCCEEDED, logs[-3000:]
        return logs

    logs = run(f"{base} --max-steps 20")
    assert "step 20/20" in logs
    objects = _run_objects(s3_prefix, "job")
    for step in (10, 20):
        assert f"checkpoint-{step:08d}/model.pt" in objects and f"checkpoint-{step:08d}/{TRAIN_FILE}" in objects
        assert f"checkpoint-{step:08d}/rng-rank1.pt" in objects, "each worker's RNG state is saved"
        assert f"samples/step-{step:08d}.png" in objects
    assert {"samples/curves.png", "history.json", "gansvc-config.json"} <= objects
    meta = storage.read_json(f"{s3_prefix}/job/checkpoint-00000020/meta.json")
    assert meta["metrics"]["replicas_identical"] == 1.0, "G and D are bit-identical on both DDP workers"
    for key in ("loss_d", "loss_g", "images_per_s", "step_time_s", "data_wait_frac", "lr/G", "lr/D"):
        assert key in meta["metrics"], key

    logs = run(f"{base} --max-steps 30")
    assert "resumed at step 20" in logs and "step 30/30" in logs
    assert "checkpoint-00000030/model.pt" in _run_objects(s3_prefix, "job")

    registry = f"{s3_prefix}/registry"
    best = storage.read_json(f"{s3_prefix}/job/best/meta.json")  # the best evaluation (swd without Inception)
    entry = promote(f"{s3_prefix}/job", "shapes-dcgan", root=registry)
    assert entry["family"] == "dcgan" and entry["step"] == best["step"] and entry["dataset"] == datasets["single"]
    assert entry["metrics"][best["metric"]] == best["value"]
    latest = promote(f"{s3_prefix}/job/checkpoint-00000030", "shapes-dcgan-30", root=registry)
    assert latest["step"] == 30
    _, model = load_model("shapes-dcgan", registry)
    z = torch.randn(3, model.config.latent_dim)
    assert model.spec.generate(model.nets, z, None, model.config).shape == (3, 3, 16, 16)


def test_exact_resume_matches_uninterrupted_run(
    ray_stack: local.StackState, datasets: dict[str, str], s3_prefix: str
) -> None:
    """2N steps in one go and N steps + resume for N steps end with identical weights and optimizer state (CPU)."""
    common = ("--checkpoint-every", "4", "--eval-every", "100", "--log-every", "2")
    assert train_main(_args("wgan-gp", datasets["single"], s3_prefix, "full", "--max-steps", "8", *common)) == 0
    assert train_main(_args("wgan-gp", datasets["single"], s3_prefix, "split", "--max-steps", "4", *common)) == 0
    assert train_main(_args("wgan-gp", datasets["single"], s3_prefix, "split", "--max-steps", "8", *common)) == 0
    full, split = _train_state(s3_prefix, "full", 8), _train_state(s3_prefix, "split", 8)
    assert full["position"] == split["position"]
    for net in full["nets"]:
        for key, value in full["nets"][net].items():
            assert torch.equal(value, split["nets"][net][key]), f"{net}.{key} differs after resume"
    for opt in full["optimizers"]:
        for pid, st in full["optimizers"][opt]["state"].items():
            for key, value in st.items():
                assert torch.equal(torch.as_tensor(value), torch.as_tensor(split["optimizers"][opt]["state"][pid][key]))


def test_other_family_or_shapes_are_refused(
    ray_stack: local.StackState,
    datasets: dict[str, str],
    s3_prefix: str,
    capsys: pytest.CaptureFixture,
) -> None:
    assert train_main(_args("dcgan", datasets["single"], s3_prefix, "mine", "--max-steps", "2")) == 0
    assert train_main(_args("wgan", datasets["single"], s3_prefix, "mine", "--max-steps", "4")) == 2
    assert "trained as 'dcgan'" in capsys.readouterr().err
    assert (
        train_main(
            _args("dcgan", datasets["single"], s3_prefix, "mine", "--max-steps", "4", "--set", "model.g_filters=16")
        )
        == 2
    )
    assert "other shapes" in capsys.readouterr().err


def test_nan_stops_and_keeps_the_last_good_checkpoint(
    ray_stack: local.StackState,
    datasets: dict[str, str],
    s3_prefix: str,
    capsys: pytest.CaptureFixture,
) -> None:
    # SGD with lr 1 on a least-squares D blows up within a few steps (checked by hand: inf at step 3)
    args = _args(
        "dcgan",
        datasets["single"],
        s3_prefix,
        "boom",
        "--max-steps",
        "50",
        "--checkpoint-every",
        "1",
        "--eval-every",
        "100",
        "--set",
        "model.loss=mse",
        "--set",
        "model.optimizer=sgd",
        "--set",
        "model.lr_g=1",
        "--set",
        "model.lr_d=1",
    )
    assert train_main(args) == 1
    assert "non-finite loss" in capsys.readouterr().err
    kept = sorted(o.rel.split("/")[0] for o in storage.list_objects(f"{s3_prefix}/boom") if o.rel.endswith("model.pt"))
    assert kept, "the checkpoints before the divergence are kept"
    last = storage.read_json(f"{s3_prefix}/boom/{kept[-1]}/meta.json")
    assert all(
        isinstance(v, float) and v == v and abs(v) != float("inf")
        for k, v in last["metrics"].items()
        if k.startswith("loss")
    )


def test_killed_worker_restarts_from_last_checkpoint(
    ray_stack: local.StackState, datasets: dict[str, str], s3_prefix: str
) -> None:
    """SIGKILL a training worker mid-run: FailureConfig restarts the group from the latest checkpoint (not from step 0:
    RUN/starts.json records where each worker group began) and the run ends with exactly the weights of an
    uninterrupted run (same seed and steps; the restored RNG states and data position make the rest bit-identical)."""
    from ray.util.state import list_actors

    result: dict[str, int] = {}
    # 300 steps: the kill lands well before the end; a checkpoint every 30 (each one is an upload and a commit in
    # both runs) still leaves nine after the first commit to resume from and write
    common = (
        "--max-steps",
        "300",
        "--checkpoint-every",
        "30",
        "--eval-every",
        "1000",
        "--log-every",
        "10",
        "--max-failures",
        "2",
        "--num-workers",
        "2",
    )
    args = _args("dcgan", datasets["single"], s3_prefix, "crash", *common)
    thread = threading.Thread(target=lambda: result.setdefault("code", train_main(args)), daemon=True)
    thread.start()
    deadline = time.monotonic() + 300
    while (committed := _committed_step(s3_prefix, "crash")) is None:  # a checkpoint Ray Train has committed
        assert time.monotonic() < deadline and thread.is_alive(), "no checkpoint was committed"
        time.sleep(0.5)
    workers = [a for a in list_actors(filters=[("state", "=", "ALIVE")]) if a.class_name == "RayTrainWorker"]
    assert workers, "no live training worker found"
    os.kill(workers[0].pid, signal.SIGKILL)
    killed_wall = time.time()
    killed_at = max(
        int(o.rel.split("/")[0].split("-")[1])
        for o in storage.list_objects(f"{s3_prefix}/crash")
        if o.rel.endswith("meta.json") and o.rel.startswith("checkpoint")
    )
    thread.join(timeout=600)
    assert result.get("code") == 0, "the run did not complete after the worker was killed"
    assert killed_at < 300
    assert storage.exists(f"{s3_prefix}/crash/checkpoint-00000300/model.pt")
    starts = storage.read_json(f"{s3_prefix}/crash/starts.json")
    assert [s["source"] for s in starts] == ["fresh", "resumed"], starts
    restart = starts[1]["step"]
    # the checkpoint Ray had committed when the worker died: at least the one committed before the kill, at most the
    # newest in storage (a commit can land between the two reads); never step 0
    assert 0 < committed <= restart <= killed_at, (committed, restart, killed_at)
    assert starts[1]["checkpoint"] == f"checkpoint-{restart:08d}"
    restored = dt.datetime.fromisoformat(starts[1]["time"]).timestamp() - killed_wall  # 1 s resolution
    print(f"\n[recovery] killed worker: group restarted and restored step {restart} ~{restored:.0f}s after the kill")

    assert train_main(_args("dcgan", datasets["single"], s3_prefix, "no-crash", *common)) == 0
    crashed, reference = _train_state(s3_prefix, "crash", 300), _train_state(s3_prefix, "no-crash", 300)
    assert crashed["position"] == reference["position"]
    for kind in ("nets", "ema"):
        for net, sd in reference[kind].items():
            for key, value in sd.items():
                # exact: gloo's 2-rank all-reduce sums in a fixed order, everything else is per-rank and restored
                assert torch.equal(value, crashed[kind][net][key]), f"{kind} {net}.{key} differs after the restart"


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_trains_through_the_loop(
    ray_stack: local.StackState,
    datasets: dict[str, str],
    s3_prefix: str,
    family: str,
) -> None:
    """Every registered family runs unchanged through the one loop (2 DDP workers), checkpoints and loads."""
    args = _args(
        family,
        _dataset_for(family, datasets),
        s3_prefix,
        "fam",
        "--max-steps",
        "3",
        "--num-workers",
        "2",
        "--batch-size",
        "4",
        "--checkpoint-every",
        "3",
        "--eval-every",
        "3",
        "--log-every",
        "1",
    )
    assert train_main(args) == 0
    objects = _run_objects(s3_prefix, "fam")
    assert "checkpoint-00000003/model.pt" in objects and "samples/step-00000003.png" in objects
    assert any(o.startswith("tensorboard/") for o in objects), "every family's run writes TensorBoard events"
    meta = storage.read_json(f"{s3_prefix}/fam/checkpoint-00000003/meta.json")
    assert meta["metrics"]["replicas_identical"] == 1.0
    model = load_inference(f"{s3_prefix}/fam/checkpoint-00000003")
    assert model.spec.name == family and set(model.nets) == set(
        FAMILIES[family].build(model.config, model.data).inference
    )
