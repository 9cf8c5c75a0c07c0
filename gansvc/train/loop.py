"""The one training loop (`train_loop_per_worker`), shared by every family: it never names one.

Per worker: validate the config, build the family, place nets on the device (DDP when world size > 1), read this
worker's data shard, run `train_step`, and do all reporting, evaluation and checkpointing. Resume comes from
`ray.train.get_checkpoint()`: nets, EMA, optimizers, schedulers, extras, each worker's RNG, the step and the data
position, so a resumed run continues exactly.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

import torch

from gansvc import storage
from gansvc.checkpoint import (
    CheckpointError,
    checkpoint_step,
    restore_training,
    save_checkpoint,
    save_rng,
    validate_checkpoint,
)
from gansvc.config import ExperimentConfig
from gansvc.data.decoded import open_stream
from gansvc.data.manifest import Manifest
from gansvc.data.pipeline import ImageDataset
from gansvc.families.base import FamilySpec, GanState
from gansvc.nn.wrappers import unwrap
from gansvc.paths import DIVERGED_FILE, STARTS_FILE
from gansvc.train.evaluation import Evaluator
from gansvc.train.failures import DeterministicError


def _dist() -> Any:
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def _all_true(flag: bool) -> bool:
    """True on every worker iff `flag` is true on every worker (one tiny all-reduce)."""
    dist = _dist()
    if dist is None:
        return flag
    # NCCL reduces CUDA tensors only (GPU runs); gloo CPU tensors
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor([0 if flag else 1], dtype=torch.int64, device=device)
    dist.all_reduce(t)
    return int(t.item()) == 0


def weights_digest(state: GanState) -> str:
    """A hash of every trained net's parameters: equal on every DDP worker when gradients are synced.

    Buffers are left out on purpose: batch-norm running statistics are per worker between forwards (DDP broadcasts
    rank 0's at the start of each forward, and rank 0's are what a checkpoint stores).
    """
    h = hashlib.sha256()
    for name in sorted(state.nets):
        for key, t in sorted(unwrap(state.nets[name]).named_parameters()):
            h.update(f"{name}.{key}".encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def replicas_identical(state: GanState) -> bool:
    dist = _dist()
    if dist is None:
        return True
    digests: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(digests, weights_digest(state))
    return len(set(digests)) == 1


def grad_norms(state: GanState) -> dict[str, float]:
    """L2 norm of each net's gradients as the step left them (the last update of that net)."""
    out = {}
    for name, net in state.nets.items():
        grads = [p.grad.detach().float().norm() for p in unwrap(net).parameters() if p.grad is not None]
        if grads:
            out[f"grad_norm/{name}"] = float(torch.stack(grads).norm())
    return out


def learning_rates(state: GanState) -> dict[str, float]:
    return {f"lr/{name}": float(opt.param_groups[0]["lr"]) for name, opt in state.optimizers.items()}


def uncompilable(spec: FamilySpec[Any], fam_cfg: Any) -> tuple[str, ...]:
    """The nets loop.compile leaves eager for this family config (FamilySpec.uncompilable)."""
    return tuple(spec.uncompilable(fam_cfg)) if spec.uncompilable is not None else ()


def place(
    state: GanState, device: torch.device, world: int, cfg: ExperimentConfig, eager: tuple[str, ...] = ()
) -> None:
    """Nets (and EMA copies) on the device, channels_last and DDP-wrapped as configured, torch.compile'd on CUDA
    when loop.compile is on except the `eager` ones (see `uncompilable`); optimizer state follows."""
    import ray.train.torch

    cuda = device.type == "cuda"
    memory_format = torch.channels_last if cuda and cfg.loop.channels_last else torch.contiguous_format
    # the ignores: torch's Module.to overloads lack (device, memory_format), which Module.to takes
    # (torch._C._nn._parse_to parses device, dtype, non_blocking and memory_format together)
    for name, net in state.ema.items():
        state.ema[name] = net.to(device, memory_format=memory_format)  # type: ignore[call-overload]
    for name, net in state.nets.items():
        net = net.to(device, memory_format=memory_format)  # type: ignore[call-overload]
        if world > 1:
            net = ray.train.torch.prepare_model(net, move_to_device=False)
        if cuda and cfg.loop.compile and name not in eager:
            # "reduce-overhead" = CUDA graphs (launch-bound small steps: the batch-1 translation families)
            # cast: torch.compile of an nn.Module returns an OptimizedModule (an nn.Module); its stub says Callable
            net = cast(
                torch.nn.Module,
                torch.compile(net, mode=None if cfg.loop.compile_mode == "default" else cfg.loop.compile_mode),
            )
        state.nets[name] = net
    # optimizer state follows its parameters (after a restore on CPU, move it to the device)
    for opt in state.optimizers.values():
        for st in opt.state.values():
            for k, v in st.items():
                if isinstance(v, torch.Tensor) and v.device != device and v.dim() > 0:
                    st[k] = v.to(device)


def autocast_for(device: torch.device, cfg: ExperimentConfig) -> contextlib.AbstractContextManager[None]:
    """bf16 autocast on CUDA when loop.amp is on; nothing on CPU."""
    if device.type == "cuda" and cfg.loop.amp:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def device_batch(
    batch: dict[str, torch.Tensor], device: torch.device, cfg: ExperimentConfig
) -> dict[str, torch.Tensor]:
    """A batch on the training device (channels_last images on CUDA when loop.channels_last is on)."""
    batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    if device.type == "cuda" and cfg.loop.channels_last:
        batch = {k: v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v for k, v in batch.items()}
    return batch


def _max_steps(cfg: ExperimentConfig, steps_per_epoch: int) -> int:
    limits = []
    if cfg.loop.max_steps is not None:
        limits.append(cfg.loop.max_steps)
    if cfg.loop.epochs is not None:
        limits.append(max(1, math.ceil(cfg.loop.epochs * steps_per_epoch)))
    return min(limits)


def _set_lrs(state: GanState, lrs: dict[str, list[float]]) -> None:
    """Put this config's learning rates back after loading another run's optimizer state (PBT's new values win)."""
    for name, opt in state.optimizers.items():
        for group, lr in zip(opt.param_groups, lrs[name], strict=True):
            group["lr"] = lr
            group["initial_lr"] = lr
    for sched in state.schedulers.values():
        sched.base_lrs = [g["initial_lr"] for g in sched.optimizer.param_groups]


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def _quiet_ray_train_reports() -> None:
    """Ray Train V2 logs every report at INFO (whole metric dicts); our progress line says it readably."""
    import logging

    try:
        from ray.train.v2._internal.execution import context as v2_context
    except ImportError:
        return
    logging.getLogger(v2_context.__file__).setLevel(logging.WARNING)


def _plain_print(
    *objects: object, sep: str | None = " ", end: str | None = "\n", file: Any = None, flush: bool = False
) -> None:
    """Python's print, written out: one copy of each line on the worker's stdout / stderr."""
    stream = sys.stdout if file is None else file
    stream.write((" " if sep is None else sep).join(map(str, objects)) + ("\n" if end is None else end))
    if flush:
        stream.flush()


def _one_copy_of_each_print() -> None:
    """Ray Train V2 (2.5x-2.60, train/v2/_internal/logging/patch_print.py) replaces `print` in its workers: each
    line goes to the worker's stdout AND through the root logger, whose console handler prints it again, so every
    progress line appeared twice in a job's output. Its switch (RAY_TRAIN_ENABLE_PRINT_PATCH=0) is read when the
    worker starts, before our code runs, so the worker's print is put back to a plain one here (Ray's structured
    train logs then miss our lines; its per-worker log files still have them)."""
    import builtins

    builtins.print = _plain_print


def _restore(directory: Path, spec: FamilySpec[Any], state: GanState, rank: int) -> tuple[int, dict[str, int]]:
    """restore_training; a checkpoint that does not fit this config is a deterministic error (never retried)."""
    try:
        return restore_training(directory, spec, state, rank)
    except CheckpointError as err:
        raise DeterministicError(str(err)) from None


def _candidates(latest: Any, run_uri: str) -> list[str]:
    """Checkpoint directory names to try on resume: Ray's latest first, then the run's older ones, newest first."""
    latest_name = Path(latest.path).name
    latest_step = checkpoint_step(latest_name)
    if latest_step is None:  # not one of ours (a Checkpoint Ray was given by someone else): no fall back
        return [latest_name]
    names = {obj.rel.split("/", 1)[0] for obj in storage.list_objects(run_uri) if "/" in obj.rel}
    older = [n for n in names if n != latest_name and (step := checkpoint_step(n)) is not None and step <= latest_step]
    return [latest_name, *sorted(older, key=lambda n: (checkpoint_step(n), n), reverse=True)]


def _broadcast(obj: Any) -> Any:
    """Rank 0's `obj` on every worker."""
    dist = _dist()
    if dist is None:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _resume(
    latest: Any, run_uri: str, spec: FamilySpec[Any], state: GanState, rank: int
) -> tuple[int, dict[str, int], str, str, int]:
    """Restore from Ray's latest checkpoint or, when it is truncated, corrupted or incomplete in storage, from the
    newest good one before it, with a message naming the bad one. Every worker validates its own files
    (`validate_checkpoint`) and all agree on one checkpoint. Returns (step, position, checkpoint name, suffix for new
    checkpoint directory names, the step up to which new checkpoints need it).

    After a fall back the run re-reaches steps whose damaged checkpoint directories still exist and are still in
    Ray's checkpoint list: new checkpoints up to the newest damaged step then get a suffix (checkpoint-00000020-1a2b3c),
    so Ray's pruning of a damaged entry can never delete a new, good checkpoint of the same step.
    """
    import uuid

    import ray.train

    names: list[str] = _broadcast(_candidates(latest, run_uri) if rank == 0 else None)
    suffix: str = _broadcast("-" + uuid.uuid4().hex[:6])
    run = storage.parse_uri(run_uri)
    bad: list[str] = []
    for name in names:
        if name == Path(latest.path).name:
            ckpt = latest
        else:
            fs, path = storage.arrow_filesystem(run.join(name).uri())
            ckpt = ray.train.Checkpoint(path=path, filesystem=fs)
        with contextlib.ExitStack() as stack:
            reason = ""
            try:
                directory = Path(stack.enter_context(ckpt.as_directory()))
                validate_checkpoint(directory, rank)
            except Exception as err:  # noqa: BLE001 - a download or validation failure: this one is not usable
                reason = f"{type(err).__name__}: {err}" if not isinstance(err, CheckpointError) else str(err)
            if _all_true(not reason):  # every worker must agree, or they would resume from different steps
                step, position = _restore(directory, spec, state, rank)
                if bad and rank == 0:
                    print(f"[gansvc] resuming from the previous good checkpoint {name} (step {step})", flush=True)
                upto = max((checkpoint_step(b) or 0 for b in bad), default=-1)
                return step, position, name, suffix, upto
        if rank == 0:
            print(
                f"[gansvc] checkpoint {run.join(name).uri()} is damaged or incomplete "
                f"({reason or 'on another worker'}): falling back to the previous checkpoint",
                flush=True,
            )
        bad.append(name)
    raise DeterministicError(
        f"no readable checkpoint in {run_uri} ({', '.join(bad)} are damaged): start a new run "
        "with another --name, or delete the damaged checkpoint directories"
    )


def _log_start(run_uri: str, step: int, source: str, checkpoint: str | None, world: int) -> None:
    """Append this worker group's start to RUN/starts.json (rank 0): which step each attempt began at, and from what."""
    import datetime as dt

    uri = storage.parse_uri(run_uri).join(STARTS_FILE).uri()
    starts = storage.read_json(uri) if storage.exists(uri) else []
    starts.append(
        {
            "step": step,
            "source": source,
            "checkpoint": checkpoint,
            "workers": world,
            "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
    )
    storage.write_json(uri, starts)


def train_loop(loop_config: dict[str, Any]) -> None:
    """`train_loop_per_worker` of the TorchTrainer: `loop_config` = {"experiment": dict, "run_uri": str}."""
    import ray.train
    import ray.train.torch

    cfg = ExperimentConfig.model_validate(loop_config["experiment"])  # validated first thing in the worker
    _quiet_ray_train_reports()
    _one_copy_of_each_print()
    run_uri: str = loop_config["run_uri"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device() if cfg.scaling.use_gpu else torch.device("cpu")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = cfg.loop.tf32
        torch.backends.cudnn.allow_tf32 = cfg.loop.tf32
        torch.backends.cudnn.benchmark = True

    spec: FamilySpec[Any] = cfg.spec()
    fam_cfg = cfg.family_config()
    # the dataset version the driver checked (all ranks read one version, even if the dataset is overwritten meanwhile)
    pinned = loop_config.get("manifest")
    dataset = ImageDataset(cfg.data, Manifest.model_validate(pinned) if pinned else None)
    _seed_everything(cfg.loop.seed)  # the same initial weights on every worker
    state = spec.build(fam_cfg, dataset.spec)
    _seed_everything(cfg.loop.seed * 1000 + 1 + rank)  # then different noise per worker

    step, position = 0, {"epoch": 0, "batch": 0}
    checkpoint, source = ray.train.get_checkpoint(), "resumed"
    if checkpoint is None and loop_config.get("init_from"):
        # start from another run's checkpoint (PBT exploit): its weights and data position, this config's lrs
        fs, path = storage.arrow_filesystem(loop_config["init_from"])
        checkpoint, source = (
            ray.train.Checkpoint(path=path, filesystem=fs),
            "initialised from " + loop_config["init_from"],
        )
    dir_suffix, suffix_upto, used = "", -1, None
    if checkpoint is not None:
        fresh_lrs = {k: [g["lr"] for g in o.param_groups] for k, o in state.optimizers.items()}
        if source == "resumed":
            step, position, used, dir_suffix, suffix_upto = _resume(checkpoint, run_uri, spec, state, rank)
        else:
            with checkpoint.as_directory() as ckpt_dir:
                step, position = _restore(Path(ckpt_dir), spec, state, rank)
            _set_lrs(state, fresh_lrs)
        if rank == 0:
            print(
                f"[gansvc] {source} at step {step} (epoch {position['epoch']}, batch {position['batch']})", flush=True
            )
    if rank == 0:
        _log_start(run_uri, step, source if checkpoint is not None else "fresh", used, world)
    eager = uncompilable(spec, fam_cfg)
    if rank == 0 and device.type == "cuda" and cfg.loop.compile and eager:
        print(
            f"[gansvc] loop.compile: {', '.join(eager)} stay eager (a gradient penalty differentiates them twice, "
            "which torch.compile does not support)",
            flush=True,
        )
    place(state, device, world, cfg, eager)
    cuda_graphs = device.type == "cuda" and cfg.loop.compile and cfg.loop.compile_mode == "reduce-overhead"
    for net in state.nets.values():
        net.train()

    # data.cache: the node's decoded store (batches made on `device`) or the per-file path (gansvc.data.decoded)
    stream = open_stream(
        dataset,
        cfg.loop.batch_size,
        rank,
        world,
        cfg.loop.seed,
        device=device,
        epoch=position["epoch"],
        batch=position["batch"],
    )
    max_steps = _max_steps(cfg, stream.batches_per_epoch)
    evaluator = Evaluator(cfg, spec, fam_cfg, dataset, run_uri, device, step) if rank == 0 else None
    experiment_json = cfg.model_dump_json()
    sums: dict[str, float] = {}
    quality: dict[str, float] = {}  # the latest evaluation, carried in every report (schedulers compare on it)
    n_in_window, window_start, wait_start = 0, time.perf_counter(), stream.wait_s
    run_start, start_step = time.perf_counter(), step
    try:
        while step < max_steps:
            batch = device_batch(next(stream), device, cfg)
            if cuda_graphs:  # a new step: the graphs may overwrite the previous step's outputs (read as floats)
                torch.compiler.cudagraph_mark_step_begin()
            with autocast_for(device, cfg):
                out = spec.train_step(state, batch, step, fam_cfg)
            step += 1
            finite = all(math.isfinite(v) for v in out.values())
            if not _all_true(finite):
                bad = {k: v for k, v in out.items() if not math.isfinite(v)}
                message = (
                    f"non-finite loss at step {step} ({bad or 'on another worker'}): training stopped; the "
                    "last checkpoint is kept. Lower the learning rates or change the loss, then start a new "
                    "run (resuming would diverge again)"
                )
                if rank == 0:
                    print(f"[gansvc] {message}", flush=True)
                    # Result.metrics only holds the latest checkpoint's metrics: tell the driver through storage
                    storage.write_json(
                        storage.parse_uri(run_uri).join(DIVERGED_FILE).uri(), {"step": step, "error": message}
                    )
                ray.train.report({"step": step, "diverged": 1.0})
                return
            for k, v in out.items():
                sums[k] = sums.get(k, 0.0) + v
            n_in_window += 1
            is_last = step >= max_steps
            do_ckpt = step % cfg.loop.checkpoint_every == 0 or is_last
            do_eval = step % cfg.loop.eval_every == 0 or is_last
            do_log = step % cfg.loop.log_every == 0 or do_ckpt or do_eval
            if not do_log:
                continue
            window_end = time.perf_counter()
            elapsed = window_end - window_start
            metrics: dict[str, Any] = {k: v / n_in_window for k, v in sums.items()}
            metrics.update(
                step=step,
                epoch=stream.position[0],
                images_per_s=n_in_window * cfg.loop.batch_size * world / max(elapsed, 1e-9),
                step_time_s=elapsed / n_in_window,
                data_wait_frac=(stream.wait_s - wait_start) / max(elapsed, 1e-9),
            )
            metrics.update(learning_rates(state))
            metrics.update(grad_norms(state))
            if evaluator is not None:
                if do_eval:
                    quality = evaluator.evaluate(state, step, metrics)
                else:
                    evaluator.record(metrics)
            metrics.update(quality)
            if rank == 0:
                done = step - start_step
                eta = (time.perf_counter() - run_start) / max(done, 1) * (max_steps - step)
                losses = "  ".join(f"{k} {v:.4g}" for k, v in list(out.items())[:6])
                print(
                    f"[gansvc] step {step}/{max_steps}  {losses}  {metrics['images_per_s']:.0f} img/s  "
                    f"data wait {100 * metrics['data_wait_frac']:.1f}%  ETA {eta:.0f}s",
                    flush=True,
                )
            if do_ckpt:
                metrics["replicas_identical"] = 1.0 if replicas_identical(state) else 0.0
                if evaluator is not None:  # the TensorBoard events up to this checkpoint are in storage before it
                    evaluator.sync_events()
                with tempfile.TemporaryDirectory(prefix="gansvc-ckpt-") as tmp:
                    if rank == 0:
                        save_checkpoint(
                            Path(tmp),
                            spec,
                            fam_cfg,
                            dataset.spec,
                            state,
                            step,
                            stream.state_dict(),
                            experiment_json,
                            {k: v for k, v in metrics.items() if isinstance(v, float | int)},
                        )
                    save_rng(Path(tmp), rank)
                    ray.train.report(
                        metrics,
                        checkpoint=ray.train.Checkpoint.from_directory(tmp),
                        checkpoint_dir_name=f"checkpoint-{step:08d}{dir_suffix if step <= suffix_upto else ''}",
                    )
            else:
                ray.train.report(metrics)
            # the next window counts this one's logging and reporting (they are part of every step's cost, and
            # bench/ray_bench.py measures Ray's overhead from these figures) but not evaluation or checkpointing
            if do_eval or do_ckpt:
                window_end = time.perf_counter()
            sums, n_in_window, window_start, wait_start = {}, 0, window_end, stream.wait_s
    except CheckpointError as err:
        raise RuntimeError(str(err)) from None
    finally:
        stream.close()
        if evaluator is not None:
            evaluator.close()
