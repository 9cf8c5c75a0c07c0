"""`python -m gansvc.data put|synth|info`: datasets in S3 (or a local folder)."""

from __future__ import annotations

import argparse
import json
import sys
import time

from gansvc import storage
from gansvc.data.ingest import DEFAULT_MAX_DOWNLOAD_GB, DatasetError, PutResult, existing_manifest, put
from gansvc.data.manifest import format_manifest, read_manifest
from gansvc.data.synth import SYNTHS, synth


def _report(result: PutResult, seconds: float) -> None:
    m = result.manifest
    if result.up_to_date:
        print(f"{result.uri} is up to date with this source: nothing to do")
    else:
        total = sum(s.count for s in m.splits.values())
        print(f"wrote {total} images to {result.uri} in {seconds:.1f}s "
              f"({result.uploaded} uploaded, {result.reused} already there, {len(m.skipped)} skipped)")
    print(format_manifest(m, result.uri))


def _preview(args: argparse.Namespace) -> None:
    import torch

    from gansvc.data.pipeline import BatchStream, DataConfig, ImageDataset
    from gansvc.imaging import grid, png_bytes

    ds = ImageDataset(DataConfig(uri=args.uri, size=args.size, load_size=args.load_size))
    stream = BatchStream(ds, batch_size=min(args.n, len(ds)), seed=args.seed)
    batch = next(stream)
    stream.close()
    # unpaired data: one row of A above the matching row of B
    images = torch.cat([batch["A"], batch["B"]]) if "A" in batch else batch["image"]
    nrow = batch["A"].shape[0] if "A" in batch else None
    storage.write_bytes(storage.parse_uri(args.out).uri(), png_bytes(grid(images, nrow=nrow)), "image/png")
    print(f"wrote {args.out}: {images.shape[0]} images of {ds.spec.height}x{ds.spec.width}x{ds.spec.channels} "
          f"from {args.uri} (wait for data {stream.wait_s:.2f}s)")


def _positive_gb(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of GB") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text}: give a size above 0 GB")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gansvc.data",
        description="Datasets for gansvc. Layouts: unpaired (trainA/ trainB/ [testA/ testB/], the official CycleGAN "
                    "zips), single (train/ [test/], or images at the root) with an optional labels.csv (file + one "
                    "column per attribute); optional segmentation masks in train_masks/ (trainA_masks/ ...: one PNG "
                    "of class indices per image, same name, 255 = ignore) with classes.txt. "
                    "Destinations are s3://bucket/prefix (AWS env vars select the endpoint) "
                    "or a local folder.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_put = sub.add_parser("put", help="validate and upload a folder, a .zip or an http(s) zip URL")
    p_put.add_argument("src", help="local folder, .zip file, or http(s) URL of a zip")
    p_put.add_argument("dest", help="s3://bucket/prefix or local folder")
    p_put.add_argument("--overwrite", action="store_true",
                       help="replace a different dataset already at dest: the new version is written beside the old "
                            "one (DEST/.v/<version>/), manifest.json is switched last, then only the files the old "
                            "manifest listed are deleted. A prefix holding other objects and no manifest is refused")
    p_put.add_argument("--max-download-gb", type=_positive_gb, default=DEFAULT_MAX_DOWNLOAD_GB,
                       help=f"http(s) sources: refuse a download larger than this (default {DEFAULT_MAX_DOWNLOAD_GB:g}"
                            " GB, 1 GB = 10^9 bytes)")
    p_put.add_argument("--threads", type=int, default=16, help="parallel validations/uploads (default 16)")
    p_put.add_argument("--quiet", action="store_true", help="no progress bars")
    p_syn = sub.add_parser("synth", help="write a built-in synthetic dataset: " +
                           "; ".join(f"{k}: {v[1]}" for k, v in SYNTHS.items()))
    p_syn.add_argument("name", choices=sorted(SYNTHS))
    p_syn.add_argument("dest", help="s3://bucket/prefix or local folder")
    p_syn.add_argument("--count", type=int, default=2000, help="training images (per domain) (default 2000)")
    p_syn.add_argument("--test-count", type=int, default=None, help="test images (per domain) (default count/10)")
    p_syn.add_argument("--size", type=int, default=32, help="image side in pixels (default 32)")
    p_syn.add_argument("--seed", type=int, default=0)
    p_syn.add_argument("--grayscale", action="store_true", help="single-channel images")
    p_syn.add_argument("--masks", action="store_true", help="also write segmentation masks (stripes; shapes-seg "
                       "always has them)")
    p_syn.add_argument("--overwrite", action="store_true")
    p_syn.add_argument("--quiet", action="store_true")
    p_prev = sub.add_parser("preview", help="write a PNG grid of training batches as the model sees them "
                            "(after resize/crop/flip); OUT is a local path or s3:// URI")
    p_prev.add_argument("uri")
    p_prev.add_argument("out")
    p_prev.add_argument("--size", type=int, default=None, help="training size (default: the dataset's)")
    p_prev.add_argument("--load-size", type=int, default=None, help="resize to this, then crop --size")
    p_prev.add_argument("--n", type=int, default=16, help="images in the grid (default 16)")
    p_prev.add_argument("--seed", type=int, default=0)
    p_info = sub.add_parser("info", help="print a dataset's manifest readably")
    p_info.add_argument("uri")
    p_info.add_argument("--json", action="store_true", help="the raw manifest")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "info":
            m = read_manifest(args.uri)
            print(json.dumps(m.model_dump(), indent=2) if args.json else format_manifest(m, args.uri))
            return 0
        if args.cmd == "preview":
            _preview(args)
            return 0
        t0 = time.perf_counter()
        if args.cmd == "put":
            result = put(args.src, args.dest, args.overwrite, args.threads, args.quiet,
                         max_download_bytes=int(args.max_download_gb * 1e9))
            _report(result, time.perf_counter() - t0)
            return 0
        params = f"synth:{args.name}:count={args.count}:test={args.test_count}:size={args.size}:seed={args.seed}"
        params += ":gray" if args.grayscale else ""
        params += ":masks" if args.masks else ""
        done = existing_manifest(args.dest)
        if done is not None and done.source == params:  # same parameters = same images: skip generating them
            _report(PutResult(args.dest, done, 0, 0, up_to_date=True), 0.0)
            return 0
        folder = synth(args.name, args.count, args.size, args.seed, args.test_count, args.grayscale, args.masks)
        try:
            result = put(str(folder), args.dest, args.overwrite, quiet=args.quiet, source_id=params)
        finally:
            import shutil

            shutil.rmtree(folder, ignore_errors=True)
        _report(result, time.perf_counter() - t0)
        return 0
    except (DatasetError, storage.StorageError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
