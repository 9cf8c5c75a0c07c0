"""Data-path benchmark (issue 9): images/s and MB/s the input pipeline delivers from the embedded S3, 64x64 and 256x256.

    python -m gansvc.local --state-dir /tmp/gsv-databench up --port-base 23500    # `up --no-ray` is enough here
    python bench/data_bench.py --quick --state-dir /tmp/gsv-databench            # or with the stack's env exported
    python -m gansvc.local --state-dir /tmp/gsv-databench down

Puts two synthetic `shapes` sets under $GANSVC_STORAGE/bench-data/ (once: `python -m gansvc.data synth` skips a set
whose manifest matches), then per image size measures, one full epoch each (batch 64 at 64px, 16 at 256px):
  fetch        S3 -> local cache only (ByteSource.warm, its 16 threads), no decoding: the storage ceiling;
  cold         BatchStream with an empty cache (fresh temp dir): S3 + cache write + decode + transform + stack;
  warm         a new BatchStream over the filled cache, with the default decode_threads and with 1;
  mem decode   PIL decode of bytes already in memory, one thread, no pipeline;
  mem dec+tf   decode + transform (resize/crop/flip/scale to a tensor), on 1 thread (the per-core ceiling) and on
               the default decode_threads;
  decoded bld  the decoded store's cold build (gansvc.data.decoded.open_store over an empty cache: S3 + byte cache +
               decode + resize into the uint8 store, its BUILD_THREADS decode threads); the row records the store's
               size on disk (store_mb) and build time; compare its img/s with `cold`;
  decoded      a DecodedBatchStream (data.cache=decoded) over the built store, on the CPU: gather by index, random
               crop/flip, scale to [-1, 1], its one background thread; several epochs per pass (an epoch of 512
               images at 64 px takes a few ms); compare with `warm`.
"cold" means an empty local cache; the S3 server's own page cache is warm (the set was just written or read).
MB/s counts the encoded (PNG) bytes; GETs/img counts S3 reads (over 1: the stream's prefetcher and its decoders
fetched the same file). Full mode reports the median of 3 passes per cell. Rows are appended to
bench/results/data.jsonl. Exit code 2 when no stack / S3 is reachable.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import append_rows, ensure_shapes, load_avg, print_table, use_stack

TORCH_THREADS = 1  # the pipeline parallelises with decode threads; with 2, the tensor ops of the 1-thread loop
# (main thread) go through OpenMP, and on this loaded 2-core machine 256px transform fell from ~965 to ~167 img/s
SIZES = {64: 64, 256: 16}  # image side -> batch size


CPU_S: list[float] = []  # process CPU seconds of the last median_time call (median over its repeats)


def median_time(fn: Callable[[str], int], repeats: int, cache: Callable[[], str]) -> tuple[float, int]:
    """(median seconds, images) of `repeats` calls of fn(cache dir); `cache` gives the dir of each call (a fresh one
    is deleted after its call: 256px caches are ~100 MB each). Also leaves the median process CPU seconds (every
    thread of this process; not the S3 server's) in CPU_S[0]: on a loaded machine wall times follow the load of
    other processes, CPU seconds much less."""
    times, cpus, n = [], [], 0
    for _ in range(repeats):
        d, before = cache(), set(threading.enumerate())
        t0, c0 = time.perf_counter(), time.process_time()
        n = fn(d)
        times.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
        for t in set(threading.enumerate()) - before:  # the stream's cache-filling thread (daemon) outlives
            if t.daemon:  # close(): let it finish, or it would fetch into a deleted dir during the next cell
                t.join(timeout=60)  # (idle executor workers are not daemons: they would wait forever)
        if Path(d).name.startswith("fresh-"):
            shutil.rmtree(d, ignore_errors=True)
    CPU_S[:] = [statistics.median(cpus)]
    return statistics.median(times), n


def bench_size(uri: str, size: int, batch: int, repeats: int, tmp: Path) -> list[dict[str, Any]]:
    from gansvc import storage
    from gansvc.data.manifest import read_manifest
    from gansvc.data.pipeline import BatchStream, ByteSource, DataConfig, ImageDataset, decode, transform

    manifest = read_manifest(uri)  # once, outside every timing
    sizes = {o.rel: o.size for o in storage.list_objects(uri)}
    default_threads = DataConfig(uri=uri).decode_threads
    fetches = [0]

    def fresh() -> str:
        return tempfile.mkdtemp(prefix="fresh-", dir=tmp)

    def dataset(cache: str, threads: int = default_threads) -> ImageDataset:
        ds = ImageDataset(DataConfig(uri=uri, cache_dir=cache, decode_threads=threads), manifest=manifest)
        fetch = ds.bytes.fetch

        def counted(rel: str) -> bytes:  # counts S3 GETs: the stream's prefetcher and its decoders may both miss
            fetches[0] += 1
            return fetch(rel)

        ds.bytes.fetch = counted  # type: ignore[method-assign]
        return ds

    def epoch(ds: ImageDataset) -> int:
        stream = BatchStream(ds, batch_size=batch, seed=0)
        try:  # the producer thread starts at the first next(): its start-up is part of the epoch
            return sum(next(stream)["image"].shape[0] for _ in range(stream.batches_per_epoch))
        finally:
            stream.close()

    files = [s.files["image"] for s in dataset("").epoch_samples(0, 0, 0, 1)]
    mb_per_img = statistics.fmean(sizes[manifest.object_rel(f)] for f in files) / 1e6  # versioned: under .v/
    warm = str(tmp / f"warm-{size}")
    ByteSource(uri, warm).warm(files)  # untimed: the cache the warm cells read
    cells: list[tuple[str, int, Callable[[], str], Callable[[str], int]]] = [
        ("fetch", 16, fresh, lambda d: (dataset(d).bytes.warm(files), len(files))[1]),
        ("cold", default_threads, fresh, lambda d: epoch(dataset(d))),
        ("warm", default_threads, lambda: warm, lambda d: epoch(dataset(d))),
        ("warm", 1, lambda: warm, lambda d: epoch(dataset(d, 1))),
    ]
    rows: list[dict[str, Any]] = []
    for stage, threads, cache, fn in cells:
        fetches[0] = 0
        seconds, n = median_time(fn, repeats, cache)
        rows.append(
            {
                "stage": stage,
                "threads": threads,
                "s3_gets_per_img": fetches[0] / repeats / n if n else 0.0,
                **_rates(size, batch, n, seconds, mb_per_img),
            }
        )

    # the same bytes from memory, no pipeline: decoding alone, and decode + transform on one thread (the per-core
    # ceiling) and on the pipeline's default thread count (whether threads help: PIL releases the GIL only in decode)
    ds = dataset(warm)
    data = {f: ds.bytes.read(f) for f in files}
    rng = np.random.default_rng(0)

    def one(f: str, tf: bool) -> None:
        im = decode(data[f], ds.spec.channels)
        if tf:
            transform(im, ds.size, ds.load, ds.cfg.crop, ds.cfg.flip, rng)

    mem_cells = (("mem decode", False, 1), ("mem dec+tf", True, 1), ("mem dec+tf", True, default_threads))
    for stage, tf, threads in mem_cells:
        pool = ThreadPoolExecutor(threads) if threads > 1 else None  # 1 thread: a plain loop, no hand-offs

        def run(_: str, tf: bool = tf, pool: ThreadPoolExecutor | None = pool) -> int:
            return len(list(pool.map(lambda f: one(f, tf), files) if pool else (one(f, tf) for f in files)))

        seconds, n = median_time(run, repeats, lambda: warm)
        if pool:
            pool.shutdown()
        rows.append(
            {"stage": stage, "threads": threads, "s3_gets_per_img": 0.0, **_rates(size, batch, n, seconds, mb_per_img)}
        )
    return rows + bench_decoded(uri, manifest, size, batch, repeats, tmp, mb_per_img, fetches, dataset)


def bench_decoded(
    uri: str,
    manifest: Any,
    size: int,
    batch: int,
    repeats: int,
    tmp: Path,
    mb_per_img: float,
    fetches: list[int],
    dataset: Callable[..., Any],
) -> list[dict[str, Any]]:
    """The decoded-store rows: its cold build (fresh cache: S3 + decode + write) and batches from the built store."""
    from gansvc.data.decoded import BUILD_THREADS, DecodedBatchStream, open_store

    built: dict[str, Any] = {}

    def build(d: str) -> int:
        ds = dataset(d)
        store, _ = open_store(ds)
        built.update(store_mb=store.nbytes() / 1e6, build_s=store.meta["build_s"])
        return sum(len(f) for f in ds.streams.values())

    fetches[0] = 0
    seconds, n = median_time(build, repeats, lambda: tempfile.mkdtemp(prefix="fresh-", dir=tmp))
    rows = [
        {
            "stage": "decoded bld",
            "threads": BUILD_THREADS,
            "s3_gets_per_img": fetches[0] / repeats / n,
            **_rates(size, batch, n, seconds, mb_per_img),
            **built,
        }
    ]
    kept = str(tmp / f"decoded-{size}")
    ds = dataset(kept)
    store, _ = open_store(ds)  # untimed: the warm store the stream reads
    epochs = max(1, 8192 * 64 * 64 // (size * size) // len(ds))  # ~8k images at 64 px, ~512 at 256 px a pass

    def stream(_: str) -> int:
        s = DecodedBatchStream(ds, store, batch_size=batch, seed=0)
        try:
            return sum(next(s)["image"].shape[0] for _ in range(s.batches_per_epoch * epochs))
        finally:
            s.close()

    seconds, n = median_time(stream, repeats, lambda: kept)
    rows.append(
        {"stage": "decoded", "threads": 1, "s3_gets_per_img": 0.0, **_rates(size, batch, n, seconds, mb_per_img)}
    )
    return rows


def print_ratios(rows: list[dict[str, Any]]) -> None:
    """The issue-15 targets, side by side from this run: decoded / warm (default threads) and build / cold."""
    for size in sorted({r["size"] for r in rows}):
        by = {r["stage"]: r for r in rows if r["size"] == size and not (r["stage"] == "warm" and r["threads"] == 1)}
        if "decoded" in by and "warm" in by:
            d, w, b, c = by["decoded"], by["warm"], by["decoded bld"], by["cold"]
            print(
                f"{size}px: decoded / warm = {d['img_s'] / w['img_s']:.1f}x ({d['img_s']:.0f} vs {w['img_s']:.0f} "
                f"img/s; per CPU second {d['img_per_cpu_s'] / w['img_per_cpu_s']:.1f}x); decoded build / cold = "
                f"{b['img_s'] / c['img_s']:.2f}x ({b['img_s']:.0f} vs {c['img_s']:.0f} img/s; per CPU second "
                f"{b['img_per_cpu_s'] / c['img_per_cpu_s']:.2f}x), store {b['store_mb']:.1f} MB, built in "
                f"{b['build_s']:.1f} s"
            )


def _rates(size: int, batch: int, n: int, seconds: float, mb_per_img: float) -> dict[str, Any]:
    return {
        "size": size,
        "batch": batch,
        "images": n,
        "seconds": seconds,
        "img_s": n / seconds,
        "cpu_s": CPU_S[0],
        "img_per_cpu_s": n / max(CPU_S[0], 1e-9),
        "mb_s": n * mb_per_img / seconds,
        "kb_per_img": mb_per_img * 1000,
        "load_avg_1m": load_avg(),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--quick", action="store_true", help="512 images per set, 1 pass per cell (default: 2048/1024, 3)")
    p.add_argument("--state-dir", default=None, help="embedded stack to use (default: the environment's S3)")
    p.add_argument("--out", default=None, help="jsonl to append to (default bench/results/data.jsonl)")
    args = p.parse_args()
    if not use_stack(args.state_dir):  # before gansvc.storage is imported: it reads the S3 settings from the env
        return 2
    root = os.environ.get("GANSVC_STORAGE", "").rstrip("/")
    if not root.startswith("s3://"):
        print(
            "no S3 storage: pass --state-dir of a running embedded stack, or export its env "
            '(eval "$(python -m gansvc.local env)")',
            file=sys.stderr,
        )
        return 2
    from gansvc import storage

    try:
        storage.check_bucket(root)
    except storage.StorageError as err:
        print(f"error: {err}", file=sys.stderr)  # says which endpoint and how to start the stack
        return 2
    torch.set_num_threads(TORCH_THREADS)
    counts = {64: 512, 256: 512} if args.quick else {64: 2048, 256: 1024}
    repeats = 1 if args.quick else 3
    load0 = load_avg()
    rows: list[dict[str, Any]] = []
    tmp = Path(tempfile.mkdtemp(prefix="gansvc-databench-"))
    try:
        for size, batch in SIZES.items():
            uri = ensure_shapes(f"{root}/bench-data/shapes-{size}px-{counts[size]}", size, counts[size])
            rows += [{"dataset": uri, **r} for r in bench_size(uri, size, batch, repeats, tmp)]
            print(f"  {size}px done, load {load_avg()}", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # every cache dir lives under it
    print_table(
        (
            "size",
            "stage",
            "threads",
            "batch",
            "images",
            "s",
            "img/s",
            "img/cpu-s",
            "MB/s",
            "kB/img",
            "GETs/img",
            "load",
            "store MB",
        ),
        [
            (
                r["size"],
                r["stage"],
                r["threads"],
                r["batch"],
                r["images"],
                r["seconds"],
                r["img_s"],
                r["img_per_cpu_s"],
                r["mb_s"],
                r["kb_per_img"],
                r["s3_gets_per_img"],
                r["load_avg_1m"],
                r.get("store_mb"),
            )
            for r in rows
        ],
        title=f"data path ({'quick' if args.quick else 'full'}, torch threads {TORCH_THREADS})",
    )
    print_ratios(rows)
    meta = {
        "quick": args.quick,
        "repeats": repeats,
        "torch_threads": TORCH_THREADS,
        "counts": counts,
        "s3": storage.S3Settings.from_env().describe(),
        "load_avg_1m_start_end": [load0, load_avg()],
    }
    append_rows("data", rows, meta, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
