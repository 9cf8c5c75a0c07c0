"""Serve benchmark: requests/s and p50/p99 latency of generate and translate at concurrency 1, 8, 32, with dynamic
batching off (max_batch_size 1) and on (16), one hop and two hops, and Serve's overhead over a bare forward pass.

    python -m gansvc.local --state-dir /tmp/gsv-bench up --port-base 23000
    python bench/serve_bench.py --quick --state-dir /tmp/gsv-bench      # or with the stack's env exported
    python -m gansvc.local --state-dir /tmp/gsv-bench down

Registers two small models (dcgan smoke, 32x32; cyclegan smoke, translating 64x64 inputs) under
$GANSVC_STORAGE/bench-serve/registry, deploys them as model applications next to the front door: each model with
max_batch_size 1 and 16 answering its own route (`hops` 1: proxy -> model replica), and each model with
max_batch_size 16 without a route (`hops` 2: proxy -> front door -> model replica through a deployment handle, the
path before issue 15), side by side in the same run. It drives them over HTTP from client threads in this process,
prints a table and the targets, and appends one JSON line per cell to bench/results/serve.jsonl. The bench
applications are removed at the end. `GET /healthz` at concurrency 1 and 8 gives the floor of one Serve hop on the
machine (proxy -> front door -> back, no model call, no work), which splits a request's overhead between Ray Serve
and what gansvc adds. Targets (issue 15): p50 at concurrency 1 (one hop) within 1.5x of the /healthz floor plus the
bare forward pass; batching >= 4x the requests/s of no batching at concurrency 32 for generation (one hop).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import datetime as dt
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import requests
import torch
from PIL import Image

HERE = Path(__file__).resolve().parent
TORCH_THREADS = 2


def _model_bytes(family: str, data: Any) -> bytes:
    from gansvc.checkpoint import inference_payload
    from gansvc.families import FAMILIES

    spec = FAMILIES[family]
    cfg = spec.make_config("smoke")
    torch.manual_seed(0)
    buf = io.BytesIO()
    torch.save(inference_payload(spec, cfg, data, spec.build(cfg, data)), buf)
    return buf.getvalue()


def _png(size: int, seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _app(
    name: str, model: str, registry: str, batch: int, hops: int, ongoing: int | None, num_gpus: float = 0.0
) -> dict[str, Any]:
    args = {
        "model": model,
        "registry": registry,
        "max_batch_size": batch,
        "batch_wait_timeout_s": 0.01,
        "num_cpus": 0.5,
        "torch_threads": TORCH_THREADS,
        "max_n": 16,
    }
    if num_gpus > 0:  # a GPU replica (device auto: cuda where the replica sees one)
        args |= {"num_gpus": num_gpus, "device": "auto"}
    if ongoing:
        args["max_ongoing_requests"] = ongoing
    return {
        "name": name,
        "route_prefix": f"/v1/models/{name}" if hops == 1 else None,
        "import_path": "gansvc.serve.app:build_app",
        "args": args,
    }


def _name(model: str, batch: int, hops: int) -> str:
    return f"{model}-b{batch}" + ("" if hops == 1 else "-2hop")


def drive(url: str, task: str, model: str, concurrency: int, seconds: float, image: bytes) -> dict[str, Any]:
    """Closed loop: `concurrency` threads each send one request after the other until the deadline."""
    lat: list[float] = []
    batches: list[int] = []
    errors = [0]
    lock = threading.Lock()

    def worker(k: int, deadline: float) -> None:
        session, i = requests.Session(), 0
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            if task == "healthz":  # the floor: proxy -> front door replica -> back, no model hop, no work
                r = session.get(f"{url}/healthz", timeout=120)
            elif task == "generate":
                r = session.post(
                    f"{url}/v1/models/{model}/generate", json={"n": 1, "seed": k * 100_000 + i}, timeout=120
                )
            else:
                r = session.post(
                    f"{url}/v1/models/{model}/translate", data=image, headers={"Content-Type": "image/png"}, timeout=120
                )
            dt_s = time.perf_counter() - t0
            with lock:
                if r.status_code == 200:
                    lat.append(dt_s)
                    batches.append(int(r.headers.get("X-Batch-Size", 1)))
                else:
                    errors[0] += 1
            i += 1

    with cf.ThreadPoolExecutor(concurrency) as pool:  # warm-up: one round
        list(pool.map(lambda k: worker(k, time.perf_counter() + 0.3), range(concurrency)))
    lat.clear()
    batches.clear()
    errors[0] = 0
    start = time.perf_counter()
    with cf.ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(lambda k: worker(k, start + seconds), range(concurrency)))
    elapsed = time.perf_counter() - start
    lat_ms = sorted(x * 1000 for x in lat)
    return {
        "requests": len(lat),
        "errors": errors[0],
        "rps": len(lat) / elapsed,
        "p50_ms": statistics.median(lat_ms) if lat_ms else float("nan"),
        "p99_ms": lat_ms[min(len(lat_ms) - 1, int(0.99 * len(lat_ms)))] if lat_ms else float("nan"),
        "mean_batch": statistics.fmean(batches) if batches else float("nan"),
    }


@torch.inference_mode()
def bare_ms(
    task: str, model: Any, batch: int, image: bytes, repeats: int, device: torch.device | None = None
) -> tuple[float, float]:
    """The replica's work for one batch outside Serve: inputs, forward pass, PNG encoding of every image.
    Returns (best, median) of `repeats` passes in ms: the best pass is the compute cost when the CPU is free."""
    from gansvc.families.sampling import sample_latents
    from gansvc.imaging import png_bytes, to_pil, to_uint8

    arr = np.asarray(Image.open(io.BytesIO(image)).convert("RGB"))
    device = device or torch.device("cpu")
    nets = {k: v.to(device) for k, v in model.nets.items()}

    def once() -> None:
        if task == "generate":
            z = torch.cat([sample_latents(model.config, 1, s) for s in range(batch)]).to(device)
            out = model.spec.generate(nets, z, None, model.config)
        else:
            x = torch.from_numpy(np.stack([arr] * batch)).permute(0, 3, 1, 2).float() / 255.0 * 2.0 - 1.0
            out = model.spec.translate(nets, x.to(device), "a2b", model.config)["image"]
        for a in to_uint8(out):
            png_bytes(to_pil(a))

    once()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        once()
        times.append(time.perf_counter() - t0)
    return min(times) * 1000, statistics.median(times) * 1000


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--quick", action="store_true", help="4 s per cell instead of 15 s")
    p.add_argument("--state-dir", default=None, help="embedded stack to use (default: the environment's cluster)")
    p.add_argument("--out", default=str(HERE / "results" / "serve.jsonl"))
    p.add_argument(
        "--max-ongoing",
        type=int,
        default=None,
        help="model replicas' max_ongoing_requests (default: the deploy default, max(2 x max_batch_size, 8))",
    )
    p.add_argument(
        "--num-gpus",
        type=float,
        default=0.0,
        help="GPUs per model replica (default 0: CPU replicas). The run deploys 6 model applications at "
        "once: on one GPU give at most 0.16 (they share it); the bare pass then runs on the GPU too",
    )
    args = p.parse_args()
    if args.state_dir:  # before Ray is imported: it reads some settings from the environment at import
        from gansvc import local

        state = local.load_state(Path(args.state_dir).resolve())
        if state is None:
            print(f"no embedded stack in {args.state_dir}", file=sys.stderr)
            return 2
        os.environ.update(state.env())
    from gansvc.data.spec import DataSpec
    from gansvc.registry import load_model, register
    from gansvc.serve.__main__ import dashboard_address, declarative_apps, deploy, restore, wait_running

    seconds = 4.0 if args.quick else 15.0
    load0 = os.getloadavg()[0]
    dashboard, _ = dashboard_address()
    registry = f"{os.environ.get('GANSVC_STORAGE', 's3://gansvc').rstrip('/')}/bench-serve/registry"
    register("bench-gen", _model_bytes("dcgan", DataSpec("single", 32, 32, 3)), "bench", {}, root=registry)
    register("bench-tr", _model_bytes("cyclegan", DataSpec("unpaired", 64, 64, 3)), "bench", {}, root=registry)
    port = int(os.environ.get("GANSVC_SERVE_PORT", "29320"))
    variants = [(1, 1), (16, 1), (16, 2)]  # (max_batch_size, hops)
    apps = [
        _app(_name(m, b, h), m, registry, b, h, args.max_ongoing, args.num_gpus)
        for m in ("bench-gen", "bench-tr")
        for b, h in variants
    ]
    front = {
        "name": "gansvc",
        "route_prefix": "/",
        "import_path": "gansvc.serve.app:build_app",
        "args": {"num_cpus": 0.25},
    }
    running = {a["name"] for a in declarative_apps(dashboard)[0]}  # with the dashboard's auth token, if any
    config = {
        "proxy_location": "HeadOnly",
        "http_options": {"host": "127.0.0.1", "port": port},
        "applications": ([] if "gansvc" in running else [front]) + apps,
    }
    print(f"deploying {len(apps)} bench model applications ...", file=sys.stderr, flush=True)
    names, before = deploy(dashboard, config)
    torch.set_num_threads(TORCH_THREADS)
    bare_device = torch.device("cuda" if args.num_gpus > 0 and torch.cuda.is_available() else "cpu")
    models = {"generate": load_model("bench-gen", registry)[1], "translate": load_model("bench-tr", registry)[1]}
    rows: list[dict[str, Any]] = []
    image = _png(64, 0)
    try:
        details = wait_running(dashboard, names, 600)
        url = f"http://127.0.0.1:{(details.get('http_options') or {}).get('port', port)}"
        while requests.get(f"{url}/readyz", timeout=30).status_code != 200:
            time.sleep(0.5)
        for task, model in (("generate", "bench-gen"), ("translate", "bench-tr")):
            for conc in (1, 8, 32):
                for batch, hops in variants:
                    if hops == 2 and conc == 8:
                        continue  # the two-hop baseline at the two ends only: keeps the run short
                    r = drive(url, task, _name(model, batch, hops), conc, seconds, image)
                    # the same batch without Serve, right after (same machine load), with the replicas' torch threads
                    b = max(1, round(r["mean_batch"]))
                    bare, bare_median = bare_ms(task, models[task], b, image, 10 if args.quick else 30, bare_device)
                    rows.append(
                        {
                            "task": task,
                            "concurrency": conc,
                            "max_batch_size": batch,
                            "hops": hops,
                            **r,
                            "bare_batch": b,
                            "bare_ms": bare,
                            "bare_median_ms": bare_median,
                            "bare_rps": b / bare * 1000,
                            "load_avg_1m": os.getloadavg()[0],
                        }
                    )
                    print(
                        f"  {task:9} c={conc:<2} max_batch={batch:<2} hops={hops} {r['rps']:7.1f} req/s  p50 "
                        f"{r['p50_ms']:7.1f} ms  p99 {r['p99_ms']:7.1f} ms  batch {r['mean_batch']:4.1f}  bare "
                        f"{bare:6.1f} ms  load {os.getloadavg()[0]:.1f}",
                        file=sys.stderr,
                        flush=True,
                    )
        for conc in (1, 8):
            r = drive(url, "healthz", "", conc, seconds, image)
            rows.append(
                {
                    "task": "healthz",
                    "concurrency": conc,
                    "max_batch_size": 1,
                    "hops": 1,
                    **r,
                    "bare_batch": 0,
                    "bare_ms": None,
                    "bare_median_ms": None,
                    "bare_rps": None,
                    "load_avg_1m": os.getloadavg()[0],
                }
            )
            print(
                f"  healthz   c={conc:<2} {r['rps']:7.1f} req/s  p50 {r['p50_ms']:7.1f} ms  p99 {r['p99_ms']:7.1f} ms",
                file=sys.stderr,
                flush=True,
            )
    finally:
        restore(dashboard, names, before)
    print_table(rows)
    print_targets(rows)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE).stdout
    meta = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "commit": commit.strip(),
        "load_avg_1m_start_end": [round(load0, 1), round(os.getloadavg()[0], 1)],
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"{'cuda' if torch.cuda.is_available() else 'cpu only'}",
        "quick": args.quick,
        "seconds_per_cell": seconds,
        "torch_threads": TORCH_THREADS,
        "max_ongoing_requests": args.max_ongoing,
        "models": {"generate": "dcgan smoke 32x32, n=1", "translate": "cyclegan smoke, 64x64 PNG"},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a") as f:
        for row in rows:
            f.write(json.dumps({"bench": "serve", **meta, **row}) + "\n")
    print(f"appended {len(rows)} rows to {args.out}")
    return 0


def print_targets(rows: list[dict[str, Any]]) -> None:
    """The issue 15 targets, from this run's rows (one hop)."""
    by = {(r["task"], r["concurrency"], r["max_batch_size"], r.get("hops", 2)): r for r in rows}
    floor = by.get(("healthz", 1, 1, 1))
    for task in ("generate", "translate"):
        one = by.get((task, 1, 1, 1))
        if floor and one and one["bare_ms"]:
            bound = floor["p50_ms"] + one["bare_ms"]
            ratio = one["p50_ms"] / bound
            print(
                f"target {task}: p50 at c=1 {one['p50_ms']:.1f} ms vs /healthz floor {floor['p50_ms']:.1f} + bare "
                f"{one['bare_ms']:.1f} ms = {ratio:.2f}x (target <= 1.5x: {'met' if ratio <= 1.5 else 'NOT met'})"
            )
        nb, b = by.get((task, 32, 1, 1)), by.get((task, 32, 16, 1))
        if nb and b and nb["rps"]:
            gain = b["rps"] / nb["rps"]
            verdict = ("met" if gain >= 4 else "NOT met") if task == "generate" else "no target"
            print(f"target {task}: batching at c=32 {gain:.2f}x the req/s of none (target >= 4x: {verdict})")
        two, hop1 = by.get((task, 1, 16, 2)), by.get((task, 1, 16, 1))
        if two and hop1:
            print(f"{task}: c=1 p50 two hops {two['p50_ms']:.1f} ms -> one hop {hop1['p50_ms']:.1f} ms")


def print_table(rows: list[dict[str, Any]]) -> None:
    head = (
        "task",
        "conc",
        "max_batch",
        "hops",
        "req/s",
        "p50 ms",
        "p99 ms",
        "batch",
        "bare ms",
        "bare req/s",
        "p50/bare",
        "batching x",
    )  # bare: best pass of the same batch outside Serve; batching x: req/s over
    lines = [head]  # max_batch 1 with the same hops
    by_key = {(r["task"], r["concurrency"], r["max_batch_size"], r.get("hops", 2)): r for r in rows}
    for r in rows:
        nb = by_key.get((r["task"], r["concurrency"], 1, r.get("hops", 2)))
        gain = f"{r['rps'] / nb['rps']:.2f}" if nb and r["max_batch_size"] != 1 and nb["rps"] else "-"
        bare = r["bare_ms"]
        lines.append(
            (
                r["task"],
                str(r["concurrency"]),
                str(r["max_batch_size"]),
                str(r.get("hops", 2)),
                f"{r['rps']:.1f}",
                f"{r['p50_ms']:.1f}",
                f"{r['p99_ms']:.1f}",
                f"{r['mean_batch']:.1f}",
                f"{bare:.1f}" if bare else "-",
                f"{r['bare_rps']:.1f}" if bare else "-",
                f"{r['p50_ms'] / bare:.1f}" if bare else "-",
                gain,
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    for line in lines:
        print("  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)))


if __name__ == "__main__":
    sys.exit(main())
