"""The per-worker input pipeline: manifest -> this worker's shard -> decoded, augmented batches, prefetched.

Why not Ray Data: a GAN step must be resumable exactly (the checkpoint stores the data position) and every DDP worker
must take the same number of steps; an index-based sampler gives both by construction, while Ray Data's streaming
order is not reproducible across restarts. GAN datasets are small images (thousands to a few hundred thousand), so
each node caches the raw bytes on local disk after the first read and decoding runs in a thread pool (PIL releases the
GIL while decoding) ahead of the step loop. `BatchStream.wait_s` measures how long the loop waited for data; the
training loop reports it as a fraction of step time (bench/ measures it against a Ray Data reader).

Sampling follows torch's DistributedSampler: per epoch a permutation seeded by (seed, epoch), padded by wrapping to a
multiple of the world size, and rank r takes positions r, r + world, ...; so the shards of one epoch are disjoint and
cover the dataset (when its size divides evenly; else at most world-1 samples repeat). Unpaired data follows the
official CycleGAN loader: an epoch has max(|A|, |B|) pairs, A and B drawn from independent permutations.
Augmentation randomness depends only on (seed, epoch, position), so a resumed run sees identical batches.

Segmentation masks (when the manifest has them for every image of a stream) come as "mask" (single) or "A_mask" /
"B_mask" (unpaired), (B, H, W) int64, resized with nearest neighbour and cropped and flipped exactly like their image
(one draw of crop offsets and flip per image, applied to both). The draws are the same with or without masks.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import queue
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from pydantic import Field, field_validator

from gansvc import storage
from gansvc.data.manifest import Manifest, path_problem, read_manifest
from gansvc.data.spec import DataSpec, mask_key
from gansvc.imaging import on_white
from gansvc.paths import cache_home
from gansvc.strict import FrozenStrict


class DataConfig(FrozenStrict):
    """The `data` section of an experiment config (strict and immutable)."""

    uri: str = Field(description="dataset root: s3://bucket/prefix or a local folder holding manifest.json")
    # training image size: an int (square) or [height, width]; default: the dataset's most common size
    size: int | tuple[int, int] | None = None
    # resize to this first, then crop `size` (official CycleGAN: load 286, crop 256); default: resize to `size`
    load_size: int | tuple[int, int] | None = None
    crop: Literal["random", "center"] = "random"
    flip: bool = True  # random horizontal flip
    channels: Literal[1, 3] | None = None  # default: the dataset's
    split: Literal["train", "test"] = "train"
    decode_threads: int = Field(4, ge=1, le=64)
    prefetch_batches: int = Field(4, ge=1, le=64)
    # node-local cache of raw bytes (S3 datasets): default $GANSVC_CACHE_DIR/data, i.e. ~/.cache/gansvc/data;
    # "" disables it. Capped by GANSVC_CACHE_MAX_GB (least recently used files go first)
    cache_dir: str | None = None
    # input path (gansvc.data.decoded): "decoded" = every image decoded once per node into a memory-mapped uint8
    # store under the data cache, batches gathered and augmented with tensor ops; "files" = decode each file per
    # sample (this module); "auto" = decoded when the store fits GANSVC_DECODED_MAX_GB and the free disk
    cache: Literal["auto", "decoded", "files"] = "auto"

    @field_validator("size", "load_size")
    @classmethod
    def _positive(cls, v: int | tuple[int, int] | None) -> int | tuple[int, int] | None:
        if v is None:
            return v
        hw = (v, v) if isinstance(v, int) else v
        if min(hw) < 8 or max(hw) > 4096:
            raise ValueError("image sides must be between 8 and 4096 pixels")
        return v


def _hw(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def data_spec(manifest: Manifest, cfg: DataConfig) -> DataSpec:
    h, w = _hw(cfg.size) if cfg.size is not None else (None, None)
    return manifest.data_spec(h, w, cfg.channels)


def shard_positions(n: int, epoch: int, seed: int, rank: int, world: int, shuffle: bool = True) -> np.ndarray:
    """Indices into a dataset of n items that `rank` visits in `epoch` (see the module doc)."""
    if n < 1:
        raise ValueError("cannot shard an empty dataset")
    order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
    total = -(-n // world) * world
    order = np.resize(order, total)  # wraps: pads with the first items
    return order[rank::world]


def _tiled_permutation(n: int, length: int, seed: int, epoch: int, stream: int) -> np.ndarray:
    return np.resize(np.random.default_rng([seed, epoch, stream]).permutation(n), length)


# ---- the node-local byte cache ------------------------------------------------------------------------------------
# Layout: <data cache>/<entry>/<file as listed in the manifest>, where <data cache> is DataConfig.cache_dir, else
# $GANSVC_CACHE_DIR/data (default ~/.cache/gansvc/data), and <entry> is a hash of (S3 endpoint, dataset URI, the
# manifest's content). A dataset version is immutable (its files live under the manifest's `files_root`), and any
# change of the manifest (an overwrite: new fingerprint, files_root or creation time) or of the endpoint is a new
# entry: cached bytes are never served for another dataset version or another S3 store.
# The whole data cache is capped at GANSVC_CACHE_MAX_GB; reads touch a file's mtime, and the least recently used files
# go first when the cap is passed. Several worker processes of one node share it: writes are temp file + rename
# (a reader never sees half a file), eviction runs under an exclusive file lock and never touches temp files (files
# being written), and a reader whose file was evicted under it simply fetches it again.

GB = 10**9  # GANSVC_CACHE_MAX_GB counts decimal gigabytes
DEFAULT_CACHE_MAX_GB = 20.0
ENTRY_MARKER = ".gansvc-entry.json"  # written in every entry folder: eviction only ever deletes inside such folders
EVICT_LOCK = ".gansvc-evict.lock"
LOW_WATERMARK = 0.9  # evict down to 90% of the cap, so that a full cache does not scan again on every write
STALE_TMP_S = 3600.0  # temp files older than this are left-overs of killed writers (a write takes seconds at most)


class UnsafePathError(ValueError):
    """A dataset manifest names a file outside the dataset (absolute, `..`, backslash or empty part)."""


def check_rel(rel: str, what: str = "file") -> str:
    """`rel` if it is a safe relative "/"-separated path (the manifest's one rule, `path_problem`), else
    UnsafePathError naming it (issue 13, point 4): checked again here, before any read or cache write."""
    problem = path_problem(rel)
    if problem:
        raise UnsafePathError(
            f"unsafe {what} {rel!r} in the dataset manifest ({problem}): paths must be relative, '/'-separated, "
            "without '..', "
            "'.', backslashes or empty parts. The manifest was not written by `gansvc.data put` (or was altered): "
            "re-ingest the dataset with `python -m gansvc.data put SRC DEST --overwrite`"
        )
    return rel


def cache_max_bytes(env: Mapping[str, str] | None = None) -> int:
    """The data cache's size cap from GANSVC_CACHE_MAX_GB (decimal GB, default 20), in bytes."""
    raw = (os.environ if env is None else env).get("GANSVC_CACHE_MAX_GB", "").strip()
    if not raw:
        return int(DEFAULT_CACHE_MAX_GB * GB)
    try:
        gb = float(raw)
    except ValueError:
        gb = float("nan")
    if not gb > 0 or gb == float("inf"):
        raise ValueError(
            f"GANSVC_CACHE_MAX_GB={raw!r} is not a positive number of gigabytes (e.g. 20 or 0.5); "
            'to read without a local cache set the data config\'s cache_dir to ""'
        )
    return max(1, int(gb * GB))


def manifest_digest(manifest: Manifest) -> str:
    """A hash of a manifest's whole content (fingerprint, files_root, file list, creation time): one dataset version."""
    return hashlib.sha256(manifest.model_dump_json().encode()).hexdigest()


def cache_entry(root: storage.Location, manifest: Manifest, settings: storage.S3Settings) -> dict[str, str]:
    """What identifies the bytes of one dataset version: the store (endpoint), the URI and the manifest's content."""
    endpoint = settings.endpoint_url.rstrip("/").lower() if settings.endpoint_url else f"aws-s3:{settings.region}"
    return {
        "endpoint": endpoint,
        "uri": root.uri(),
        "fingerprint": manifest.fingerprint,
        "files_root": manifest.files_root,
        "manifest_sha256": manifest_digest(manifest),
    }


def _is_tmp(name: str) -> bool:
    return name.startswith(".") and name.endswith(".tmp")


class _Usage:
    """Per data-cache folder and process: the estimated bytes in it (None: not scanned yet in this process) and the
    bytes this process wrote, in all and when its last scan began."""

    def __init__(self) -> None:
        self.lock = threading.Lock()  # guards the counters
        self.evicting = threading.Lock()  # one eviction at a time in this process
        self.bytes: int | None = None
        self.written = 0
        self.written_at_scan = 0


_USAGE: dict[Path, _Usage] = {}
_USAGE_LOCK = threading.Lock()


def _usage_of(base: Path) -> _Usage:
    with _USAGE_LOCK:
        return _USAGE.setdefault(base, _Usage())


class DiskCache:
    """One dataset version's files in a node-local cache folder capped in size (see the section comment)."""

    def __init__(self, base: Path, entry: dict[str, str], max_bytes: int | None = None) -> None:
        self.base = base.expanduser().resolve()
        self.entry = entry
        self.dir = self.base / hashlib.sha256(json.dumps(entry, sort_keys=True).encode()).hexdigest()[:24]
        self.max_bytes = cache_max_bytes() if max_bytes is None else max_bytes
        self._usage = _usage_of(self.base)
        self._marked = False
        self._opened = time.time()
        self._thrash_warned = False

    def path(self, rel: str) -> Path:
        """The cache file of `rel` (UnsafePathError for a name with `..`, absolute, ...: see `check_rel`)."""
        return self.dir / check_rel(rel)

    def _write_path(self, rel: str) -> Path:
        """`path(rel)`, checked to stay inside this entry's folder once symlinks are resolved (a symlink planted in
        the cache folder must not redirect a write; resolving costs ~0.2 ms, so reads skip it)."""
        path = self.path(rel)
        if not path.resolve().is_relative_to(self.dir):
            raise UnsafePathError(
                f"cache path of {rel!r} resolves to {path.resolve()}, outside the cache folder "
                f"{self.dir}: remove the symlink there"
            )
        return path

    def contains(self, rel: str) -> bool:
        return self.path(rel).is_file()

    def get(self, rel: str) -> bytes | None:
        """The cached bytes, or None; a hit marks the file as recently used (its mtime: atime is unreliable)."""
        path = self.path(rel)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        with contextlib.suppress(OSError):  # evicted right after the read: the bytes are still good
            os.utime(path)
        return data

    def put(self, rel: str, data: bytes) -> None:
        """Store a file (temp + rename: atomic for concurrent readers), then evict if the cap is passed."""
        path = self._write_path(rel)
        self._mark()
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        for attempt in range(2):
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp.write_bytes(data)
                break
            except FileNotFoundError:  # another process removed the (empty) folder between mkdir and write
                if attempt:
                    raise
        os.replace(tmp, path)
        self._account(len(data))

    def _mark(self) -> None:
        if self._marked:
            return
        marker = self.dir / ENTRY_MARKER
        if not marker.exists():
            self.dir.mkdir(parents=True, exist_ok=True)
            tmp = marker.with_name(f".{ENTRY_MARKER}.{os.getpid()}.{threading.get_ident()}.tmp")
            tmp.write_text(json.dumps(self.entry, indent=1) + "\n")
            os.replace(tmp, marker)
        self._marked = True

    def _account(self, n: int) -> None:
        u = self._usage
        with u.lock:
            u.written += n
            if u.bytes is not None:
                u.bytes += n
            due = self._due()
        if due:
            self.evict(only_if_due=True)

    def _due(self) -> bool:
        """Scan when the estimate passes the cap, at the first write of this process, and after every tenth of the
        cap written here (other processes of the node write too: their bytes are seen at the next scan)."""
        u = self._usage
        return u.bytes is None or u.bytes > self.max_bytes or u.written - u.written_at_scan > self.max_bytes // 10

    def evict(self, only_if_due: bool = False) -> int:
        """Scan the whole data cache and delete least recently used files down to the low watermark; returns the
        bytes in the cache after it. One eviction at a time per node (an exclusive lock on a file; the others wait:
        a writer that skipped it could leave the cache over its cap)."""
        u = self._usage
        with u.evicting:
            with u.lock:
                if only_if_due and not self._due():  # another thread of this process has just evicted
                    return u.bytes or 0
                written0 = u.written
            self.base.mkdir(parents=True, exist_ok=True)
            with open(self.base / EVICT_LOCK, "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or by the kernel if we die
                files = self._scan()
                total = sum(size for _, size, _ in files)
                if total > self.max_bytes:
                    target = int(self.max_bytes * LOW_WATERMARK)
                    own_recent = 0  # files of this dataset version cached since it was opened, evicted again
                    for mtime, size, path in sorted(files, key=lambda f: f[0]):
                        if total <= target:
                            break
                        with contextlib.suppress(FileNotFoundError):
                            path.unlink()
                        total -= size
                        own_recent += mtime >= self._opened and path.is_relative_to(self.dir)
                    if own_recent:
                        self._warn_thrash()
            with u.lock:  # writes during the scan count on top (an over-estimate at worst: it scans sooner)
                u.bytes, u.written_at_scan = total + u.written - written0, written0
        return total

    def _warn_thrash(self) -> None:
        if not self._thrash_warned:
            self._thrash_warned = True
            print(
                f"[gansvc] the data cache {self.base} is smaller than the data being read "
                f"(cap {self.max_bytes / GB:.3g} GB): files are evicted before they are read again and fetched "
                "from storage each time; raise GANSVC_CACHE_MAX_GB if the disk allows",
                file=sys.stderr,
            )

    def _scan(self) -> list[tuple[float, int, Path]]:
        """(mtime, size, path) of every cached file in every entry folder of the data cache; removes temp files of
        killed writers and empty folders. Folders without an entry marker are never touched (not ours)."""
        files: list[tuple[float, int, Path]] = []
        now = time.time()
        for entry in self.base.iterdir():
            if not (entry / ENTRY_MARKER).is_file():
                continue
            for dirpath, dirnames, names in os.walk(entry, topdown=False):
                for name in names:
                    p = Path(dirpath, name)
                    try:
                        st = p.stat()
                    except FileNotFoundError:
                        continue
                    if _is_tmp(name):  # being written: never evicted, unless left by a killed writer long ago
                        if now - st.st_mtime > STALE_TMP_S:
                            p.unlink(missing_ok=True)
                    elif not (dirpath == str(entry) and name == ENTRY_MARKER):
                        files.append((st.st_mtime, st.st_size, p))
                if dirpath != str(entry) and not dirnames and not names:
                    with contextlib.suppress(OSError):  # not empty any more: a writer got there first
                        os.rmdir(dirpath)
        return files


@dataclass
class _Fetch:
    """A fetch in flight: readers of the same file wait for it and take its bytes (one S3 GET per file)."""

    done: threading.Event = field(default_factory=threading.Event)
    data: bytes | None = None


class ByteSource:
    """Raw bytes of one dataset version's files, through the node-local disk cache for S3 datasets.

    `rel` arguments are file names as the manifest lists them; they are read from where that manifest's version keeps
    them (`Manifest.object_rel`), so a reader holding a manifest reads only that version. `manifest` defaults to the
    one at `root_uri` now; `settings` (the S3 endpoint and credentials) to the environment's; `max_bytes` (the cache
    cap) to GANSVC_CACHE_MAX_GB.
    """

    def __init__(
        self,
        root_uri: str,
        cache_dir: str | None = None,
        manifest: Manifest | None = None,
        settings: storage.S3Settings | None = None,
        max_bytes: int | None = None,
    ) -> None:
        self.root = storage.parse_uri(root_uri)
        self.manifest = manifest or read_manifest(root_uri)
        if self.manifest.files_root:
            check_rel(self.manifest.files_root, "files_root")
        settings = settings or storage.S3Settings.from_env()
        # pyarrow's S3 client (C++, releases the GIL) reads small objects ~3x faster than boto3 here (measured)
        self.fs, self.fs_root = storage.arrow_filesystem(root_uri, settings)
        self.cache: DiskCache | None = None
        if self.root.is_s3 and cache_dir != "":
            base = Path(cache_dir).expanduser() if cache_dir else cache_home() / "data"
            self.cache = DiskCache(base, cache_entry(self.root, self.manifest, settings), max_bytes)
        # files being fetched right now: the warm-up thread and the decoders often miss the same file at the same
        # time on a cold cache; the second waits for the first instead of reading S3 again (bench/data_bench.py
        # measured 1.10-1.18 GETs per image at 64 px before)
        self._inflight: dict[str, _Fetch] = {}
        self._lock = threading.Lock()
        self._cache_error_shown = False

    def warm(self, rels: list[str], threads: int = 16, stop: threading.Event | None = None) -> None:
        """Fetch files not yet cached, many at a time (S3 latency, not bandwidth, bounds small-file reads); files
        not started when `stop` is set are skipped."""
        if self.cache is None:
            return
        todo = [r for r in dict.fromkeys(rels) if not self.cache.contains(r)]

        def one(rel: str) -> None:
            if stop is None or not stop.is_set():
                self.read(rel)

        if todo:
            with ThreadPoolExecutor(threads, thread_name_prefix="gansvc-fetch") as pool:
                for _ in pool.map(one, todo):
                    pass

    def fetch(self, rel: str) -> bytes:
        """One file from storage (no cache), from this manifest's version."""
        obj = self.manifest.object_rel(check_rel(rel))
        try:
            with self.fs.open_input_stream(f"{self.fs_root}/{obj}") as f:
                data: bytes = f.read()  # pyarrow ships no types; NativeFile.read() returns bytes
                return data
        except FileNotFoundError as err:
            hint = (
                (
                    " (the dataset was overwritten since this reader opened it, and the old version's files are "
                    "deleted after the switch: start again to read the new version)"
                )
                if self.manifest.files_root
                else ""
            )
            raise storage.StorageError(f"{self.root.join(obj).uri()}: {err}{hint}") from None
        except OSError as err:
            raise storage.StorageError(f"{self.root.join(obj).uri()}: {err}") from None

    def read(self, rel: str) -> bytes:
        if self.cache is None:
            return self.fetch(rel)
        data = self.cache.get(rel)
        if data is not None:
            return data
        with self._lock:
            inflight = self._inflight.get(rel)
            owner = inflight is None
            if inflight is None:
                inflight = self._inflight[rel] = _Fetch()
        if not owner:
            inflight.done.wait()
            # the other fetch failed: try ourselves (and raise its error if it recurs)
            return inflight.data if inflight.data is not None else self.fetch(rel)
        try:
            # a fetch of this file may have finished between our first look at the cache and taking ownership (its
            # owner stores before it leaves _inflight): look again rather than GET it a second time
            data = self.cache.get(rel)
            if data is None:
                data = self.fetch(rel)
                self._store(rel, data)
            inflight.data = data
            return data
        finally:
            with self._lock:
                del self._inflight[rel]
            inflight.done.set()

    def _store(self, rel: str, data: bytes) -> None:
        """Cache a fetched file; a cache that cannot be written (disk full, read-only) costs speed, not the read."""
        assert self.cache is not None
        try:
            self.cache.put(rel, data)
        except OSError as err:
            if not self._cache_error_shown:
                self._cache_error_shown = True
                print(
                    f"[gansvc] cannot write the data cache {self.cache.dir} ({err}); reading without it",
                    file=sys.stderr,
                )


@dataclass(frozen=True)
class Sample:
    """Where one batch element comes from: files per stream ("image" or "A"/"B") and its labels."""

    files: dict[str, str]
    labels: tuple[int, ...] = ()
    masks: dict[str, str] = field(default_factory=dict)  # batch key ("mask", "A_mask") -> mask file


def decode(data: bytes, channels: int) -> Image.Image:
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        # transparency on white: the one rule shared with serving (gansvc.imaging.on_white)
        return on_white(im).convert("L" if channels == 1 else "RGB")


@dataclass(frozen=True)
class Geometry:
    """One image's augmentation: resize to `load` (H, W), crop `size` at (top, left), then maybe flip."""

    size: tuple[int, int]
    load: tuple[int, int]
    top: int
    left: int
    flip: bool


def draw_geometry(
    size: tuple[int, int], load: tuple[int, int], crop: str, flip: bool, rng: np.random.Generator
) -> Geometry:
    (h, w), (lh, lw) = size, load
    top, left = 0, 0
    if (lh, lw) != (h, w):
        if crop == "random":
            top, left = int(rng.integers(0, lh - h + 1)), int(rng.integers(0, lw - w + 1))
        else:
            top, left = (lh - h) // 2, (lw - w) // 2
    return Geometry(size, load, top, left, bool(flip and rng.random() < 0.5))


def _apply(im: Image.Image, g: Geometry, resample: Image.Resampling) -> np.ndarray:
    if (im.height, im.width) != g.load:
        im = im.resize((g.load[1], g.load[0]), resample)
    if g.load != g.size:
        im = im.crop((g.left, g.top, g.left + g.size[1], g.top + g.size[0]))
    arr = np.asarray(im)
    return arr[:, ::-1] if g.flip else arr


def transform(
    im: Image.Image,
    size: tuple[int, int],
    load: tuple[int, int],
    crop: str,
    flip: bool,
    rng: np.random.Generator,
    geometry: Geometry | None = None,
) -> torch.Tensor:
    """resize to `load` (H, W), crop `size`, maybe flip, scale to [-1, 1] (x / 127.5 - 1); returns (C, H, W).
    `geometry` replays given draws (see `draw_geometry`) instead of drawing from `rng`."""
    g = geometry or draw_geometry(size, load, crop, flip, rng)
    arr = _apply(im, g, Image.Resampling.BICUBIC).astype(np.float32)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).div_(127.5).sub_(1.0)


def decode_mask(data: bytes) -> Image.Image:
    """A mask file as a mode-L image of class indices (a P image's palette indices, not its colours)."""
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        if im.mode not in ("L", "P"):
            raise ValueError(f"a mask must be mode L or P, got {im.mode}")
        return Image.fromarray(np.asarray(im).astype(np.uint8), "L")


def transform_mask(mask: Image.Image, g: Geometry) -> torch.Tensor:
    """The image's geometry applied to its mask (nearest-neighbour resize: no invented classes); (H, W) int64."""
    return torch.from_numpy(np.ascontiguousarray(_apply(mask, g, Image.Resampling.NEAREST)).astype(np.int64))


class ImageDataset:
    """A dataset in storage, read through its manifest: the items of one split, their labels, and the transforms."""

    def __init__(self, cfg: DataConfig, manifest: Manifest | None = None) -> None:
        self.cfg = cfg
        self.manifest = manifest or read_manifest(cfg.uri)
        self.spec = data_spec(self.manifest, cfg)
        self.size = (self.spec.height, self.spec.width)
        self.load = _hw(cfg.load_size) if cfg.load_size is not None else self.size
        if self.load[0] < self.size[0] or self.load[1] < self.size[1]:
            raise ValueError(f"data.load_size {self.load} is smaller than data.size {self.size}")
        self.bytes = ByteSource(cfg.uri, cfg.cache_dir, manifest=self.manifest)
        m = self.manifest
        if m.layout == "unpaired":
            names = (f"{cfg.split}A", f"{cfg.split}B")
            missing = [n for n in names if n not in m.splits]
            if missing:
                raise ValueError(f"{cfg.uri} has no {', '.join(missing)} split (it has {', '.join(m.splits)})")
            self.streams = {"A": m.splits[names[0]].files, "B": m.splits[names[1]].files}
        else:
            if cfg.split not in m.splits:
                raise ValueError(f"{cfg.uri} has no {cfg.split!r} split (it has {', '.join(m.splits)})")
            self.streams = {"image": m.splits[cfg.split].files}
        # per stream whose every image has a mask: image file -> mask file
        split_of_stream = {"A": f"{cfg.split}A", "B": f"{cfg.split}B", "image": cfg.split}
        self.masks: dict[str, dict[str, str]] = {
            k: m.splits[split_of_stream[k]].masks for k in self.streams if split_of_stream[k] in m.masked_splits()
        }
        attrs = list(m.attributes)
        self.labels: dict[str, tuple[int, ...]] = {
            rel: tuple(m.attributes[a].index(v) for a, v in zip(attrs, row, strict=True))
            for rel, row in m.labels.items()
        }

    def __len__(self) -> int:
        """Items per epoch: max(|A|, |B|) for unpaired data (official CycleGAN loader), else the split's size."""
        return max(len(v) for v in self.streams.values())

    def epoch_samples(self, epoch: int, seed: int, rank: int, world: int) -> list[Sample]:
        n = len(self)
        positions = shard_positions(n, epoch, seed, rank, world)
        if "image" in self.streams:
            files = self.streams["image"]
            return [
                Sample({"image": files[i]}, self.labels.get(files[i], ()), self._masks_of({"image": files[i]}))
                for i in positions
            ]
        a = _tiled_permutation(len(self.streams["A"]), n, seed, epoch, 1)
        b = _tiled_permutation(len(self.streams["B"]), n, seed, epoch, 2)
        out = []
        for i in positions:
            pair = {"A": self.streams["A"][a[i]], "B": self.streams["B"][b[i]]}
            out.append(Sample(pair, masks=self._masks_of(pair)))
        return out

    def _masks_of(self, files: dict[str, str]) -> dict[str, str]:
        return {mask_key(k): self.masks[k][rel] for k, rel in files.items() if k in self.masks}

    def load_sample(self, sample: Sample, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        out = {}
        for key, rel in sample.files.items():
            im = decode(self.bytes.read(rel), self.spec.channels)
            g = draw_geometry(self.size, self.load, self.cfg.crop, self.cfg.flip, rng)
            out[key] = transform(im, self.size, self.load, self.cfg.crop, self.cfg.flip, rng, geometry=g)
            mask_rel = sample.masks.get(mask_key(key))
            if mask_rel is not None:
                out[mask_key(key)] = transform_mask(decode_mask(self.bytes.read(mask_rel)), g)
        if sample.labels:
            out["labels"] = torch.tensor(sample.labels, dtype=torch.int64)
        return out


# What the producer thread hands the consumer: a batch and the position after it, or the error that stopped it.
# BatchStream's batches are dict[str, Tensor]; DecodedBatchStream's are host batches (tensors, plus the crop geometry
# under "_geometry" on the device-side path) that its __next__ finishes: hence Any.
_Item = tuple[dict[str, Any], tuple[int, int]] | Exception


class BatchStream:
    """Batches of one worker's shard, prefetched by a background thread; resumable at (epoch, batch).

    Iterating yields dicts of stacked tensors, epoch after epoch. `position` is the (epoch, batch) of the next batch;
    a checkpoint stores it and `BatchStream(..., epoch=e, batch=b)` continues exactly there. `wait_s` accumulates
    the time `next()` blocked (the step loop waiting for data).
    """

    def __init__(
        self,
        dataset: ImageDataset,
        batch_size: int,
        rank: int = 0,
        world: int = 1,
        seed: int = 0,
        epoch: int = 0,
        batch: int = 0,
    ) -> None:
        per_worker = -(-len(dataset) // world)
        if batch_size > per_worker:
            raise ValueError(
                f"batch size {batch_size} per worker exceeds the {per_worker} images each of {world} "
                f"worker(s) gets from {dataset.cfg.uri}: lower --batch-size or use fewer workers"
            )
        self.dataset, self.batch_size, self.rank, self.world, self.seed = dataset, batch_size, rank, world, seed
        self.batches_per_epoch = per_worker // batch_size  # drop_last: equal batches on every worker
        self.position = (epoch, batch)
        self.wait_s = 0.0
        self._queue: queue.Queue[_Item] = queue.Queue(maxsize=dataset.cfg.prefetch_batches)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._warmers: list[threading.Thread] = []  # cache warm-up threads, joined by close()

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.position[0], "batch": self.position[1]}

    def _put(self, item: _Item) -> bool:
        """Hand an item (a batch or an error) to the consumer; gives up when the stream is closed (never blocks
        forever on a full queue whose consumer has gone)."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self, epoch: int, batch: int) -> None:
        try:
            self._produce_batches(epoch, batch)
        except Exception as err:  # noqa: BLE001 - handed to the consumer, which re-raises it
            self._put(err)

    def _warm(self, rels: list[str]) -> None:
        # only a head start: the decoders read the same files and report errors
        with contextlib.suppress(Exception):
            self.dataset.bytes.warm(rels, stop=self._stop)

    def _produce_batches(self, epoch: int, batch: int) -> None:
        ds = self.dataset
        with ThreadPoolExecutor(ds.cfg.decode_threads, thread_name_prefix="gansvc-decode") as pool:
            while not self._stop.is_set():
                samples = ds.epoch_samples(epoch, self.seed, self.rank, self.world)
                if epoch == self.position[0] or ds.bytes.cache is not None:
                    # warm this epoch's files ahead of decoding, in the background (no-op once all are cached)
                    rels = [
                        f
                        for smp in samples[batch * self.batch_size :]
                        for f in (*smp.files.values(), *smp.masks.values())
                    ]
                    self._warmers = [t for t in self._warmers if t.is_alive()]
                    warmer = threading.Thread(target=self._warm, args=(rels,), daemon=True, name="gansvc-warm")
                    warmer.start()
                    self._warmers.append(warmer)
                for b in range(batch, self.batches_per_epoch):
                    chunk = samples[b * self.batch_size : (b + 1) * self.batch_size]
                    base = b * self.batch_size
                    rngs = [
                        np.random.default_rng([self.seed, epoch, self.rank, base + k, 7]) for k in range(len(chunk))
                    ]
                    items = list(pool.map(ds.load_sample, chunk, rngs))
                    out = {k: torch.stack([it[k] for it in items]) for k in items[0]}
                    nxt = (epoch, b + 1) if b + 1 < self.batches_per_epoch else (epoch + 1, 0)
                    if not self._put((out, nxt)):
                        return
                epoch, batch = epoch + 1, 0

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        return self._next_item()

    def _next_item(self) -> dict[str, Any]:
        """The next batch as the producer handed it over (see `_Item`); raises the producer's error."""
        if self._stop.is_set():
            raise RuntimeError(
                f"this batch stream of {self.dataset.cfg.uri} is closed: make a new BatchStream "
                "(at `position`) to read on"
            )
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._produce, args=self.position, daemon=True, name="gansvc-batches"
            )
            self._thread.start()
        t0 = time.perf_counter()
        item = self._get()
        self.wait_s += time.perf_counter() - t0
        if isinstance(item, Exception):
            self.close()
            raise RuntimeError(f"reading {self.dataset.cfg.uri} failed: {item}") from item
        batch, self.position = item
        return batch

    def _get(self) -> _Item:
        """The next item; an error instead of waiting forever if the producer died without handing one over."""
        while True:
            try:
                return self._queue.get(timeout=0.5)
            except queue.Empty:
                if self._thread is not None and not self._thread.is_alive() and self._queue.empty():
                    return RuntimeError("the batch producer thread stopped without a batch or an error")

    def close(self, timeout: float = 10.0) -> None:
        """Stop the producer and the warm-up threads and wait for them (at most `timeout` seconds in all: a fetch
        in flight finishes first, files not yet started are skipped)."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        if self._thread is not None:  # first: it starts the warm-up threads
            self._thread.join(timeout=timeout)
        for t in self._warmers:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in [self._thread, *self._warmers] if t is not None and t.is_alive()]
        if alive:
            print(
                f"[gansvc] batch stream of {self.dataset.cfg.uri}: {', '.join(alive)} still running "
                f"{timeout:.0f}s after close() (a slow storage read); left to finish in the background",
                file=sys.stderr,
            )
        self._thread = None
        self._warmers = []
        with contextlib.suppress(queue.Empty):  # free the prefetched batches
            while True:
                self._queue.get_nowait()

    def __del__(self) -> None:
        stop = getattr(self, "_stop", None)
        if stop is not None:
            stop.set()
