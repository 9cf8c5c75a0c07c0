"""`python -m gansvc.data put|get|synth|info|preview`: datasets in S3 (or a local folder)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from gansvc import storage
from gansvc.data.catalog import flip_advice, name_of_source
from gansvc.data.ingest import DEFAULT_MAX_DOWNLOAD_GB, DatasetError, PutResult, existing_manifest, put
from gansvc.data.manifest import Manifest, format_manifest, read_manifest
from gansvc.data.synth import SYNTHS, synth

GET_EPILOG = (
    "exit status: 0 done (or already up to date), 2 error (nothing partial is left in DEST), "
    "3 the dataset needs a manual step (the instructions were printed)"
)


def _report(result: PutResult, seconds: float) -> None:
    m = result.manifest
    if result.up_to_date:
        print(f"{result.uri} is up to date with this source: nothing to do")
    else:
        total = sum(s.count for s in m.splits.values())
        print(
            f"wrote {total} images to {result.uri} in {seconds:.1f}s "
            f"({result.uploaded} uploaded, {result.reused} already there, {len(m.skipped)} skipped)"
        )
    print(format_manifest(m, result.uri))


def manifest_json(m: Manifest, files: bool) -> dict[str, Any]:
    """The manifest as a JSON document. The per-file parts (each split's `files` and `masks`, the `labels` of every
    file) are thousands of lines for a real dataset: without `files` they are left out (keys absent, never a value
    of another type) and counted instead (`count`, `mask_count`, `label_count`)."""
    doc = m.model_dump()
    if files:
        return doc
    for split in doc["splits"].values():
        del split["files"]
        split["mask_count"] = len(split.pop("masks"))
    doc["label_count"] = len(doc.pop("labels"))
    doc["per_file_lists"] = "left out: python -m gansvc.data info URI --json --files includes them"
    return doc


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
    what = f"{nrow} pairs (row A above row B)" if nrow is not None else f"{images.shape[0]} images"
    print(
        f"wrote {args.out}: {what} of {ds.spec.height}x{ds.spec.width}x{ds.spec.channels} "
        f"from {args.uri} (wait for data {stream.wait_s:.2f}s)"
    )


def _get(args: argparse.Namespace) -> int:
    from gansvc.data.get import MANUAL_EXIT, ManualStep, get, list_table

    if args.list:
        print(list_table())
        return 0
    if not args.name:
        print(
            "error: give a dataset name (python -m gansvc.data get NAME [DEST]); --list shows the catalog",
            file=sys.stderr,
        )
        return 2
    if args.retries < 0:
        print(f"error: --retries {args.retries}: give 0 or more", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    try:
        result = get(
            args.name,
            args.dest,
            args.src,
            overwrite=args.overwrite,
            skip_checksum=args.skip_checksum,
            max_bytes=int(args.max_download_gb * 1e9),
            quiet=args.quiet,
            retries=args.retries,
            threads=args.threads,
        )
    except ManualStep as step:
        print(step)
        return MANUAL_EXIT
    _report(result, time.perf_counter() - t0)
    print(f"advice    {flip_advice(args.name)}")
    return 0


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
        "or a local folder.",
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_put = sub.add_parser("put", help="validate and upload a folder, a .zip or an http(s) zip URL")
    p_put.add_argument("src", help="local folder, .zip file, or http(s) URL of a zip")
    p_put.add_argument("dest", help="s3://bucket/prefix or local folder")
    p_put.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a different dataset already at dest: the new version is written beside the old "
        "one (DEST/.v/<version>/), manifest.json is switched last, then only the files the old "
        "manifest listed are deleted. A prefix holding other objects and no manifest is refused",
    )
    p_put.add_argument(
        "--max-download-gb",
        type=_positive_gb,
        default=DEFAULT_MAX_DOWNLOAD_GB,
        help=f"http(s) sources: refuse a download larger than this (default {DEFAULT_MAX_DOWNLOAD_GB:g}"
        " GB, 1 GB = 10^9 bytes)",
    )
    p_put.add_argument("--threads", type=int, default=16, help="parallel validations/uploads (default 16)")
    p_put.add_argument("--quiet", action="store_true", help="no progress bars")
    p_get = sub.add_parser(
        "get",
        help="fetch a dataset of the reports / anchors by name (--list shows the catalog), verify it and put it",
        epilog=GET_EPILOG,
    )
    p_get.add_argument("name", nargs="?", help="catalog name (see --list)")
    p_get.add_argument(
        "dest",
        nargs="?",
        default=None,
        help="s3://bucket/prefix or local folder (default $GANSVC_STORAGE/datasets/NAME)",
    )
    p_get.add_argument("--list", action="store_true", help="print the catalog and exit")
    p_get.add_argument(
        "--from",
        dest="src",
        metavar="URL_OR_FILE",
        help="take the same archive from a mirror URL or a local file (verified unless "
        "--skip-checksum); also accepted for manual entries that are one archive (selfie2anime)",
    )
    p_get.add_argument("--skip-checksum", action="store_true", help="do not verify the archive (nor record its hash)")
    p_get.add_argument("--overwrite", action="store_true", help="replace a different dataset at DEST (as put)")
    p_get.add_argument(
        "--max-download-gb",
        type=_positive_gb,
        default=DEFAULT_MAX_DOWNLOAD_GB,
        help=f"refuse a download larger than this (default {DEFAULT_MAX_DOWNLOAD_GB:g} GB)",
    )
    p_get.add_argument(
        "--retries",
        type=int,
        default=5,
        help="attempts after the first for a cut or failing download, each resuming (default 5)",
    )
    p_get.add_argument("--threads", type=int, default=16, help="parallel validations/uploads (default 16)")
    p_get.add_argument("--quiet", action="store_true", help="no progress bars")
    p_cs = sub.add_parser(
        "cityscapes-masks",
        help="convert Cityscapes-id label PNGs (gtFine *_gtFine_labelIds.png, "
        "GTA5 labels/*.png) into gansvc masks: the 19 trainIds, 255 = ignore "
        "(see `get gta2cityscapes`)",
    )
    p_cs.add_argument("src", help="folder of label PNGs (searched recursively)")
    p_cs.add_argument("dst", help="masks folder to write (e.g. DATASET/trainB_masks), same relative paths")
    p_cs.add_argument(
        "--classes", metavar="FILE", help="also write the 19 class names to FILE (the dataset's classes.txt)"
    )
    p_cs.add_argument("--quiet", action="store_true")
    p_syn = sub.add_parser(
        "synth", help="write a built-in synthetic dataset: " + "; ".join(f"{k}: {v[1]}" for k, v in SYNTHS.items())
    )
    p_syn.add_argument("name", choices=sorted(SYNTHS))
    p_syn.add_argument("dest", help="s3://bucket/prefix or local folder")
    p_syn.add_argument("--count", type=int, default=2000, help="training images (per domain) (default 2000)")
    p_syn.add_argument("--test-count", type=int, default=None, help="test images (per domain) (default count/10)")
    p_syn.add_argument("--size", type=int, default=32, help="image side in pixels (default 32)")
    p_syn.add_argument("--seed", type=int, default=0)
    p_syn.add_argument("--grayscale", action="store_true", help="single-channel images")
    p_syn.add_argument(
        "--masks", action="store_true", help="also write segmentation masks (stripes; shapes-seg always has them)"
    )
    p_syn.add_argument("--overwrite", action="store_true")
    p_syn.add_argument("--quiet", action="store_true")
    p_prev = sub.add_parser(
        "preview",
        help="write a PNG grid of training batches as the model sees them "
        "(after resize/crop/flip); OUT is a local path or s3:// URI",
    )
    p_prev.add_argument("uri")
    p_prev.add_argument("out")
    p_prev.add_argument("--size", type=int, default=None, help="training size (default: the dataset's)")
    p_prev.add_argument("--load-size", type=int, default=None, help="resize to this, then crop --size")
    p_prev.add_argument(
        "--n", type=int, default=16, help="images in the grid (default 16; unpaired data: pairs, one A above its B)"
    )
    p_prev.add_argument("--seed", type=int, default=0)
    p_info = sub.add_parser("info", help="print a dataset's manifest readably")
    p_info.add_argument("uri")
    p_info.add_argument(
        "--json",
        action="store_true",
        help="the manifest as JSON, without the per-file lists (each split's file count stays)",
    )
    p_info.add_argument(
        "--files",
        action="store_true",
        help="with --json: include every split's file list, masks and labels (long: one entry a file)",
    )
    args = parser.parse_args(argv)
    try:
        if args.cmd == "info":
            m = read_manifest(args.uri)
            if args.json:
                print(json.dumps(manifest_json(m, args.files), indent=2))
            else:
                print(format_manifest(m, args.uri))
                print(f"advice    {flip_advice(name_of_source(m.source))}")
            return 0
        if args.cmd == "get":
            return _get(args)
        if args.cmd == "cityscapes-masks":
            from pathlib import Path

            from gansvc.data.get import cityscapes_masks, write_classes

            n = cityscapes_masks(Path(args.src), Path(args.dst), args.quiet)
            if args.classes:
                write_classes(Path(args.classes))
            classes = f" and the class names to {args.classes}" if args.classes else ""
            print(f"wrote {n} masks to {args.dst}{classes}")
            return 0
        if args.cmd == "preview":
            _preview(args)
            return 0
        t0 = time.perf_counter()
        if args.cmd == "put":
            result = put(
                args.src,
                args.dest,
                args.overwrite,
                args.threads,
                args.quiet,
                max_download_bytes=int(args.max_download_gb * 1e9),
            )
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
