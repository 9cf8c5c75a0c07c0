"""Serve benchmark: requests/s and p50/p99 latency of generate and translate at concurrency 1, 8, 32, with dynamic
batching off (max_batch_size 1) and on (16), and Serve's overhead over a bare forward pass of the same batch.

    python -m gansvc.local --state-dir /tmp/gsv-bench up --port-base 23000
    python bench/serve_bench.py --quick --state-dir /tmp/gsv-bench      # or with the stack's env exported
    python -m gansvc.local --state-dir /tmp/gsv-bench down

Registers two small models (dcgan smoke, 32x32; cyclegan smoke, translating 64x64 inputs) under
$GANSVC_STORAGE/bench-serve/registry, deploys them as four model applications (each model with max_batch_size 1 and
16) next to the front door, drives them over HTTP from client threads in this process, prints a table and appends
one JSON line per cell to bench/results/serve.jsonl. The bench applications are removed at the end. `GET /healthz`
at concurrency 1 and 8 gives the floor of one Serve hop on the machine (proxy -> front door -> back, no model call,
no work), which splits a request's overhead between Ray Serve and what gansvc adds.
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


def _app(name: str, model: str, registry: str, batch: int) -> dict[str, Any]:
    return {"name": name, "route_prefix": None, "import_path": "gansvc.serve.app:build_app",
            "args": {"model": model, "registry": registry, "max_batch_size": batch, "batch_wait_timeout_s": 0.01,
                     "num_cpus": 0.5, "torch_threads": TORCH_THREADS, "max_n": 16}}


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
                r = session.post(f"{url}/v1/models/{model}/generate", json={"n": 1, "seed": k * 100_000 + i},
                                 timeout=120)
            else:
                r = session.post(f"{url}/v1/models/{model}/translate", data=image,
                                 headers={"Content-Type": "image/png"}, timeout=120)
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
    return {"requests": len(lat), "errors": errors[0], "rps": len(lat) / elapsed,
            "p50_ms": statistics.median(lat_ms) if lat_ms else float("nan"),
            "p99_ms": lat_ms[min(len(lat_ms) - 1, int(0.99 * len(lat_ms)))] if lat_ms else float("nan"),
            "mean_batch": statistics.fmean(batches) if batches else float("nan")}


@torch.inference_mode()
def bare_ms(task: str, model: Any, batch: int, image: bytes, repeats: int) -> tuple[float, float]:
    """The replica's work for one batch outside Serve: inputs, forward pass, PNG encoding of every image.
    Returns (best, median) of `repeats` passes in ms: the best pass is the compute cost when the CPU is free."""
    from gansvc.families.sampling import sample_latents
    from gansvc.imaging import png_bytes, to_pil, to_uint8

    arr = np.asarray(Image.open(io.BytesIO(image)).convert("RGB"))

    def once() -> None:
        if task == "generate":
            z = torch.cat([sample_latents(model.config, 1, s) for s in range(batch)])
            out = model.spec.generate(model.nets, z, None, model.config)
        else:
            x = torch.from_numpy(np.stack([arr] * batch)).permute(0, 3, 1, 2).float() / 255.0 * 2.0 - 1.0
            out = model.spec.translate(model.nets, x, "a2b", model.config)["image"]
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
    from gansvc.serve.__main__ import dashboard_address, deploy, restore, wait_running

    seconds = 4.0 if args.quick else 15.0
    load0 = os.getloadavg()[0]
    dashboard, _ = dashboard_address()
    registry = f"{os.environ.get('GANSVC_STORAGE', 's3://gansvc').rstrip('/')}/bench-serve/registry"
    register("bench-gen", _model_bytes("dcgan", DataSpec("single", 32, 32, 3)), "bench", {}, root=registry)
    register("bench-tr", _model_bytes("cyclegan", DataSpec("unpaired", 64, 64, 3)), "bench", {}, root=registry)
    port = int(os.environ.get("GANSVC_SERVE_PORT", "29320"))
    apps = [_app(f"{m}-b{b}", m, registry, b) for m in ("bench-gen", "bench-tr") for b in (1, 16)]
    front = {"name": "gansvc", "route_prefix": "/", "import_path": "gansvc.serve.app:build_app",
             "args": {"num_cpus": 0.25}}
    running = {a["name"] for a in json.loads(requests.get(f"{dashboard}/api/serve/applications/", timeout=30).text)
               .get("applications", {}).values() if a.get("deployed_app_config")}
    config = {"proxy_location": "HeadOnly", "http_options": {"host": "127.0.0.1", "port": port},
              "applications": ([] if "gansvc" in running else [front]) + apps}
    print(f"deploying {len(apps)} bench model applications ...", file=sys.stderr, flush=True)
    names, before = deploy(dashboard, config)
    torch.set_num_threads(TORCH_THREADS)
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
                for batch in (1, 16):
                    r = drive(url, task, f"{model}-b{batch}", conc, seconds, image)
                    # the same batch without Serve, right after (same machine load), with the replicas' torch threads
                    b = max(1, round(r["mean_batch"]))
                    bare, bare_median = bare_ms(task, models[task], b, image, 10 if args.quick else 30)
                    rows.append({"task": task, "concurrency": conc, "max_batch_size": batch, **r, "bare_batch": b,
                                 "bare_ms": bare, "bare_median_ms": bare_median, "bare_rps": b / bare * 1000,
                                 "load_avg_1m": os.getloadavg()[0]})
                    print(f"  {task:9} c={conc:<2} max_batch={batch:<2} {r['rps']:7.1f} req/s  p50 {r['p50_ms']:7.1f} "
                          f"ms  p99 {r['p99_ms']:7.1f} ms  batch {r['mean_batch']:4.1f}  bare {bare:6.1f} ms  "
                          f"load {os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)
        for conc in (1, 8):
            r = drive(url, "healthz", "", conc, seconds, image)
            rows.append({"task": "healthz", "concurrency": conc, "max_batch_size": 1, **r, "bare_batch": 0,
                         "bare_ms": None, "bare_median_ms": None, "bare_rps": None, "load_avg_1m": os.getloadavg()[0]})
            print(f"  healthz   c={conc:<2} {r['rps']:7.1f} req/s  p50 {r['p50_ms']:7.1f} ms  "
                  f"p99 {r['p99_ms']:7.1f} ms", file=sys.stderr, flush=True)
    finally:
        restore(dashboard, names, before)
    print_table(rows)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE).stdout
    meta = {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "commit": commit.strip(),
            "load_avg_1m_start_end": [round(load0, 1), round(os.getloadavg()[0], 1)],
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                       f"{'cuda' if torch.cuda.is_available() else 'cpu only'}",
            "quick": args.quick, "seconds_per_cell": seconds, "torch_threads": TORCH_THREADS,
            "models": {"generate": "dcgan smoke 32x32, n=1", "translate": "cyclegan smoke, 64x64 PNG"}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a") as f:
        for row in rows:
            f.write(json.dumps({"bench": "serve", **meta, **row}) + "\n")
    print(f"appended {len(rows)} rows to {args.out}")
    return 0


def print_table(rows: list[dict[str, Any]]) -> None:
    head = ("task", "conc", "max_batch", "req/s", "p50 ms", "p99 ms", "batch", "bare ms", "bare req/s", "p50/bare",
            "batching x")  # bare: best pass of the same batch outside Serve; batching x: req/s over max_batch 1
    lines = [head]
    by_key = {(r["task"], r["concurrency"], r["max_batch_size"]): r for r in rows}
    for r in rows:
        nb = by_key.get((r["task"], r["concurrency"], 1))
        gain = f"{r['rps'] / nb['rps']:.2f}" if nb and r["max_batch_size"] != 1 and nb["rps"] else "-"
        bare = r["bare_ms"]
        lines.append((r["task"], str(r["concurrency"]), str(r["max_batch_size"]), f"{r['rps']:.1f}",
                      f"{r['p50_ms']:.1f}", f"{r['p99_ms']:.1f}", f"{r['mean_batch']:.1f}",
                      f"{bare:.1f}" if bare else "-", f"{r['bare_rps']:.1f}" if bare else "-",
                      f"{r['p50_ms'] / bare:.1f}" if bare else "-", gain))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    for line in lines:
        print("  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)))


if __name__ == "__main__":
    sys.exit(main())
