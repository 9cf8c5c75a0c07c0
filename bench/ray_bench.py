"""Ray overhead, start-up cost, data-parallel scaling and data wait: one family trained through
`python -m gansvc.train` (Ray Train, 1 and 2 CPU workers) vs the same step in a plain loop without Ray.

    python -m gansvc.local --state-dir /tmp/gsv-bench up --port-base 23000
    python bench/ray_bench.py --quick --state-dir /tmp/gsv-bench
    python -m gansvc.local --state-dir /tmp/gsv-bench down

Same dataset (synthetic shapes in the embedded S3, read through the input pipeline on both sides), same family
config, same per-worker batch, one CPU (one torch thread) per worker. Measured:
- plain: `spec.train_step` in a loop over the pipeline's BatchStream, in a fresh process with OMP_NUM_THREADS=1 as a
  1-CPU Ray worker has, before and after the Ray runs (their mean is the baseline, so drifting machine load hits
  both sides);
- ray-1 / ray-2: `python -m gansvc.train FAMILY --num-workers 1|2 --cpus-per-worker 1` as a subprocess, with evaluation
  and checkpoints only at the end. Steady-state step time = median over the run's log windows after the first
  (from the run's history.json; a window includes the loop's logging and reporting); fixed cost = wall time -
  steps x steady step time, split into start-up (command start to the first step: interpreter, Ray connection,
  worker group, dataset, model build) and tail (last progress line to exit: final evaluation, checkpoint, shutdown);
- overhead = ray-1 steady step time / plain step time - 1 (target < 5%); scaling efficiency = ray-2 images/s /
  (2 x ray-1 images/s); data wait = share of step time spent waiting for the next batch (target < 5%).

`--tensorboard`: the cost of the run's TensorBoard events (loop.tensorboard, target < 1%) instead: the same ray-1 run
with loop.tensorboard false and true, alternated `--repeats` times (off, on, on, off, ...: drifting load hits both),
steady step times compared; and the writer's own cost, timed directly: one report's event (the run's own history
entries, written by gansvc.train.tensorboard) over a log window's time (log_every x step time), since end-to-end
differences under 1% are below the noise of a shared machine. Evaluation points (the sample grid, the S3 upload) are
outside the steady windows, as the loop's windows leave evaluation and checkpointing out.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

REPO = Path(__file__).resolve().parent.parent


def plain_loop(
    family: str, preset: str | None, data_uri: str, batch: int, steps: int, warmup: int, cache: str
) -> dict[str, float]:
    """The step without Ray: same config, pipeline and batch; returns steady step time and data-wait share."""
    import torch

    from gansvc.data.pipeline import BatchStream, DataConfig, ImageDataset
    from gansvc.families import FAMILIES

    torch.set_num_threads(1)  # a Ray Train worker with 1 CPU runs torch with OMP_NUM_THREADS=1
    spec = FAMILIES[family]
    cfg = spec.make_config(preset)
    dataset = ImageDataset(DataConfig(uri=data_uri, cache_dir=cache))
    torch.manual_seed(0)
    state = spec.build(cfg, dataset.spec)
    for net in state.nets.values():
        net.train()
    stream = BatchStream(dataset, batch, 0, 1, 0)
    try:
        for step in range(warmup):
            spec.train_step(state, next(stream), step, cfg)
        # windows of `warmup` (= the Ray run's log_every) steps, summarised by their median like the Ray run's
        windows: list[tuple[float, float]] = []  # (seconds, data wait seconds)
        for w in range(warmup, warmup + steps, warmup):
            wait0, t0 = stream.wait_s, time.perf_counter()
            for step in range(w, min(w + warmup, warmup + steps)):
                spec.train_step(state, next(stream), step, cfg)
            windows.append(((time.perf_counter() - t0) / (step - w + 1), stream.wait_s - wait0))
        step_s = statistics.median(t for t, _ in windows)
        return {
            "step_s": step_s,
            "images_per_s": batch / step_s,
            "data_wait_frac": statistics.median(wt / (t * warmup) for t, wt in windows),
        }
    finally:
        stream.close()


def plain_subprocess(
    family: str, preset: str | None, data_uri: str, batch: int, steps: int, warmup: int, cache: str
) -> dict[str, float]:
    """`plain_loop` in a fresh interpreter started like a Ray Train worker with 1 CPU (OMP_NUM_THREADS=1), so the
    two sides differ only in what Ray and the training loop add."""
    args = json.dumps([family, preset, data_uri, batch, steps, warmup, cache])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, __file__, "--plain-json", args], capture_output=True, text=True, env=env, cwd=REPO
    )
    if proc.returncode != 0:
        raise RuntimeError(f"plain loop failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def ray_run(
    family: str,
    preset: str | None,
    data_uri: str,
    batch: int,
    steps: int,
    log_every: int,
    workers: int,
    storage_root: str,
    extra: tuple[str, ...] = (),
    tag: str = "",
) -> dict[str, Any]:
    from gansvc import storage

    name = f"bench-{family}-w{workers}{tag}-{int(time.time())}"
    cmd = [
        sys.executable,
        "-m",
        "gansvc.train",
        family,
        "--dataset",
        data_uri,
        "--num-workers",
        str(workers),
        "--cpus-per-worker",
        "1",
        "--batch-size",
        str(batch),
        "--max-steps",
        str(steps),
        "--log-every",
        str(log_every),
        "--checkpoint-every",
        str(steps),
        "--eval-every",
        str(steps),
        "--storage",
        storage_root,
        "--name",
        name,
        "--set",
        "metrics.samples=64",
        "--set",
        "metrics.reference_samples=64",
        "--set",
        "loop.grid_size=16",
        *extra,
    ] + (["--preset", preset] if preset else [])
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    lines, progress = [], []  # (seconds since start) of rank 0's progress lines: start-up ends before the first
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if "[gansvc] step " in line:
            progress.append(time.perf_counter() - t0)
    rc = proc.wait()
    wall = time.perf_counter() - t0
    if rc != 0 or not progress:
        raise RuntimeError(f"{' '.join(cmd)} failed ({rc}):\n{''.join(lines[-40:])}")
    history = storage.read_json(storage.parse_uri(storage_root).join(name, "history.json").uri())
    windows = [h for h in history if "step_time_s" in h][1:]  # the first window holds warm-up and first reads
    step_s = statistics.median(h["step_time_s"] for h in windows)
    first_window = history[0]["step"] * history[0]["step_time_s"]
    return {
        "wall_s": wall,
        "step_s": step_s,
        "images_per_s": statistics.median(h["images_per_s"] for h in windows),
        "data_wait_frac": statistics.median(h["data_wait_frac"] for h in windows),
        "fixed_s": wall - steps * step_s,
        "windows": len(windows),
        # command start -> first step (interpreter, Ray connection, worker group, dataset, model build)
        "startup_s": progress[0] - first_window,
        # last progress line -> exit (the final evaluation and checkpoint, worker group shutdown)
        "tail_s": wall - progress[-1],
        "run_uri": storage.parse_uri(storage_root).join(name).uri(),
    }


def writer_cost(run_uri: str, repeats: int = 200) -> dict[str, float]:
    """Seconds gansvc.train.tensorboard takes to write one report's scalars (the run's own history entries) and one
    sample grid (the run's last one), into a local folder as a local run does."""
    from PIL import Image

    from gansvc import storage
    from gansvc.train.tensorboard import RunEvents

    history = storage.read_json(storage.parse_uri(run_uri).join("history.json").uri())
    grids = sorted(
        o.rel for o in storage.list_objects(storage.parse_uri(run_uri).join("samples").uri()) if "step-" in o.rel
    )
    png = storage.read_bytes(storage.parse_uri(run_uri).join("samples", grids[-1]).uri())
    picture = Image.open(io.BytesIO(png))
    with tempfile.TemporaryDirectory(prefix="gansvc-tbcost-") as tmp:
        events = RunEvents(tmp, 0)
        t0 = time.perf_counter()
        for i in range(repeats):
            entry = history[i % len(history)]
            events.scalars(int(entry.get("step", i)), entry)
        report_s = (time.perf_counter() - t0) / repeats
        t0 = time.perf_counter()
        events.image(0, png, picture.height, picture.width, len(picture.getbands()))
        events.sync()
        image_s = time.perf_counter() - t0
        events.close()
    return {"report_write_s": report_s, "image_write_s": image_s, "scalars_per_report": float(len(history[-1]) - 1)}


def _meta(args: argparse.Namespace, preset: str | None, steps: int, **extra: Any) -> dict[str, Any]:
    """What a results row records of the run's settings (and the machine's load)."""
    return {
        "family": args.family,
        "preset": preset,
        "size": args.size,
        "batch_per_worker": args.batch_size,
        "steps": steps,
        **extra,
        "load_avg_1m": common.load_avg(),
    }


def tensorboard_cell(
    args: argparse.Namespace, preset: str | None, data_uri: str, runs: str, steps: int, log_every: int
) -> int:
    """`--tensorboard`: ray-1 with loop.tensorboard off and on, alternated; the writer's own cost per report."""
    results: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
    order = [on for i in range(args.repeats) for on in ((False, True) if i % 2 == 0 else (True, False))]
    for on in order:
        print(f"ray, 1 worker, tensorboard {'on' if on else 'off'} ...", file=sys.stderr, flush=True)
        extra = ("--set", f"loop.tensorboard={'true' if on else 'false'}")
        results[on].append(
            ray_run(args.family, preset, data_uri, args.batch_size, steps, log_every, 1, runs, extra, f"-tb{int(on)}")
        )
    off = statistics.median(r["step_s"] for r in results[False])
    on = statistics.median(r["step_s"] for r in results[True])
    cost = writer_cost(str(results[True][-1]["run_uri"]))
    rows: list[dict[str, Any]] = [
        {
            "run": f"ray tensorboard {'on' if flag else 'off'}",
            "workers": 1,
            "step_s": statistics.median(r["step_s"] for r in results[flag]),
            "step_s_each": [r["step_s"] for r in results[flag]],
            "images_per_s": statistics.median(r["images_per_s"] for r in results[flag]),
            "tail_s": statistics.median(r["tail_s"] for r in results[flag]),
        }
        for flag in (False, True)
    ]
    rows[1]["overhead"] = on / off - 1
    rows[1].update(cost)
    rows[1]["writer_overhead"] = cost["report_write_s"] / (log_every * off)
    meta = _meta(args, preset, steps, log_every=log_every, repeats=args.repeats)
    common.print_table(
        ("run", "step s", "img/s", "tail s", "overhead %", "writer %", "report write ms", "grid write ms"),
        [
            (
                r["run"],
                r["step_s"],
                r["images_per_s"],
                r["tail_s"],
                100 * r["overhead"] if "overhead" in r else None,
                100 * r["writer_overhead"] if "writer_overhead" in r else None,
                1000 * r["report_write_s"] if "report_write_s" in r else None,
                1000 * r["image_write_s"] if "image_write_s" in r else None,
            )
            for r in rows
        ],
        title=f"TensorBoard overhead: {args.family} {args.size}px, batch {args.batch_size}, {steps} steps, "
        f"log every {log_every}",
    )
    common.append_rows("ray-tensorboard", rows, meta, args.out)
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer, smaller steps (about 2 minutes on 2 CPU cores)")
    p.add_argument("--state-dir", default=None, help="embedded stack to use (default: the environment's)")
    p.add_argument("--family", default="dcgan")
    p.add_argument("--preset", default=None, help="family preset (default: the report's architecture)")
    p.add_argument("--size", type=int, default=32, help="image side of the synthetic dataset")
    p.add_argument("--batch-size", type=int, default=None, help="per worker (default 64; 32 with --quick)")
    p.add_argument("--steps", type=int, default=None, help="steps per run (default 300; 40 with --quick)")
    p.add_argument("--out", default=None)
    p.add_argument(
        "--tensorboard", action="store_true", help="measure the TensorBoard events' cost (ray-1, off vs on) instead"
    )
    p.add_argument("--repeats", type=int, default=2, help="--tensorboard: off/on pairs (default 2)")
    p.add_argument("--plain-json", default=None, help=argparse.SUPPRESS)  # internal: run plain_loop, print JSON
    args = p.parse_args()
    if args.plain_json:
        print(json.dumps(plain_loop(*json.loads(args.plain_json))))
        return 0
    if not common.use_stack(args.state_dir):
        return 2
    base = os.environ.get("GANSVC_STORAGE")
    if not base:
        print("no storage: pass --state-dir of a running embedded stack, or export its env", file=sys.stderr)
        return 2
    from gansvc.families import FAMILIES

    spec = FAMILIES[args.family]
    preset = args.preset or ("report" if "report" in spec.presets else None)
    steps, log_every = (40, 8) if args.quick else (300, 25)
    if args.steps:
        steps, log_every = args.steps, max(1, args.steps // 6)
    args.batch_size = args.batch_size or (32 if args.quick else 64)
    data_uri = f"{base.rstrip('/')}/bench-ray/shapes{args.size}"
    common.ensure_shapes(data_uri, args.size, 1024)
    runs = f"{base.rstrip('/')}/bench-ray/runs"
    if args.tensorboard:
        return tensorboard_cell(args, preset, data_uri, runs, steps, log_every)
    with tempfile.TemporaryDirectory(prefix="gansvc-raybench-") as cache:
        print("plain loop ...", file=sys.stderr, flush=True)
        plain = [plain_subprocess(args.family, preset, data_uri, args.batch_size, steps, log_every, cache)]
        print("ray, 1 worker ...", file=sys.stderr, flush=True)
        ray1 = ray_run(args.family, preset, data_uri, args.batch_size, steps, log_every, 1, runs)
        print("ray, 2 workers ...", file=sys.stderr, flush=True)
        ray2 = ray_run(args.family, preset, data_uri, args.batch_size, steps, log_every, 2, runs)
        print("plain loop again ...", file=sys.stderr, flush=True)
        plain.append(plain_subprocess(args.family, preset, data_uri, args.batch_size, steps, log_every, cache))
    base_step = statistics.fmean(x["step_s"] for x in plain)
    base_ips = statistics.fmean(x["images_per_s"] for x in plain)
    rows: list[dict[str, Any]] = [
        {
            "run": "plain",
            "workers": 1,
            "step_s": base_step,
            "images_per_s": base_ips,
            "data_wait_frac": statistics.fmean(x["data_wait_frac"] for x in plain),
            "step_s_before_after": [x["step_s"] for x in plain],
        },
        {"run": "ray", "workers": 1, **ray1, "overhead": ray1["step_s"] / base_step - 1},
        {
            "run": "ray",
            "workers": 2,
            **ray2,
            "scaling_efficiency": ray2["images_per_s"] / (2 * ray1["images_per_s"]),
            "speedup_vs_1": ray2["images_per_s"] / ray1["images_per_s"],
        },
    ]
    meta = _meta(args, preset, steps, quick=args.quick)
    common.print_table(
        (
            "run",
            "workers",
            "step s",
            "img/s",
            "data wait %",
            "overhead %",
            "fixed s",
            "start-up s",
            "tail s",
            "scaling eff",
        ),
        [
            (
                r["run"],
                r["workers"],
                r["step_s"],
                r["images_per_s"],
                100 * r["data_wait_frac"],
                100 * r["overhead"] if "overhead" in r else None,
                r.get("fixed_s"),
                r.get("startup_s"),
                r.get("tail_s"),
                r.get("scaling_efficiency"),
            )
            for r in rows
        ],
        title=f"Ray overhead and scaling: {args.family} {args.size}px, batch {args.batch_size}/worker, {steps} steps",
    )
    common.append_rows("ray", rows, meta, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
