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

import hashlib
import io
import os
import queue
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, field_validator

from gansvc import storage
from gansvc.data.manifest import Manifest, read_manifest
from gansvc.data.spec import DataSpec, mask_key


class DataConfig(BaseModel):
    """The `data` section of an experiment config."""

    model_config = ConfigDict(extra="forbid", frozen=True)

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
    cache_dir: str | None = None  # local cache of raw bytes; default ~/.cache/gansvc/data ("" disables)

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


class ByteSource:
    """Raw bytes of dataset files, through a local disk cache for remote datasets (shared by workers of a node)."""

    def __init__(self, root_uri: str, cache_dir: str | None = None) -> None:
        self.root = storage.parse_uri(root_uri)
        # pyarrow's S3 client (C++, releases the GIL) reads small objects ~3x faster than boto3 here (measured)
        self.fs, self.fs_root = storage.arrow_filesystem(root_uri)
        self.cache: Path | None = None
        if self.root.is_s3 and cache_dir != "":
            base = Path(cache_dir or Path.home() / ".cache" / "gansvc" / "data").expanduser()
            self.cache = base / hashlib.sha1(self.root.uri().encode()).hexdigest()[:16]
        # files being fetched right now: the warm-up thread and the decoders often miss the same file at the same
        # time on a cold cache; the second waits for the first instead of reading S3 again (bench/data_bench.py
        # measured 1.10-1.18 GETs per image at 64 px before)
        self._inflight: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def warm(self, rels: list[str], threads: int = 16) -> None:
        """Fetch files not yet cached, many at a time (S3 latency, not bandwidth, bounds small-file reads)."""
        if self.cache is None:
            return
        todo = [r for r in dict.fromkeys(rels) if not (self.cache / r).exists()]
        if todo:
            with ThreadPoolExecutor(threads, thread_name_prefix="gansvc-fetch") as pool:
                for _ in pool.map(self.read, todo):
                    pass

    def fetch(self, rel: str) -> bytes:
        try:
            with self.fs.open_input_stream(f"{self.fs_root}/{rel}") as f:
                return f.read()
        except (OSError, FileNotFoundError) as err:
            raise storage.StorageError(f"{self.root.join(rel).uri()}: {err}") from None

    def read(self, rel: str) -> bytes:
        if self.cache is None:
            return self.fetch(rel)
        path = self.cache / rel
        try:
            return path.read_bytes()
        except FileNotFoundError:
            pass
        with self._lock:
            event = self._inflight.get(rel)
            owner = event is None
            if owner:
                event = self._inflight[rel] = threading.Event()
        if not owner:
            event.wait()
            try:
                return path.read_bytes()
            except FileNotFoundError:  # the other fetch failed: try ourselves (and raise its error if it recurs)
                return self.fetch(rel)
        try:
            data = self.fetch(rel)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)  # atomic: a concurrent reader (another worker process) never sees half a file
            return data
        finally:
            with self._lock:
                del self._inflight[rel]
            event.set()


@dataclass(frozen=True)
class Sample:
    """Where one batch element comes from: files per stream ("image" or "A"/"B") and its labels."""

    files: dict[str, str]
    labels: tuple[int, ...] = ()
    masks: dict[str, str] = field(default_factory=dict)  # batch key ("mask", "A_mask") -> mask file


def decode(data: bytes, channels: int) -> Image.Image:
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        if im.mode in ("RGBA", "LA", "P", "PA"):  # composite transparency on white, as most loaders
            rgba = im.convert("RGBA")
            bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            im = Image.alpha_composite(bg, rgba)
        return im.convert("L" if channels == 1 else "RGB")


@dataclass(frozen=True)
class Geometry:
    """One image's augmentation: resize to `load` (H, W), crop `size` at (top, left), then maybe flip."""

    size: tuple[int, int]
    load: tuple[int, int]
    top: int
    left: int
    flip: bool


def draw_geometry(size: tuple[int, int], load: tuple[int, int], crop: str, flip: bool,
                  rng: np.random.Generator) -> Geometry:
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


def transform(im: Image.Image, size: tuple[int, int], load: tuple[int, int], crop: str, flip: bool,
              rng: np.random.Generator, geometry: Geometry | None = None) -> torch.Tensor:
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
        self.bytes = ByteSource(cfg.uri, cfg.cache_dir)
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
            k: m.splits[split_of_stream[k]].masks for k in self.streams
            if split_of_stream[k] in m.masked_splits()}
        attrs = list(m.attributes)
        self.labels: dict[str, tuple[int, ...]] = {
            rel: tuple(m.attributes[a].index(v) for a, v in zip(attrs, row, strict=True)) for rel, row in m.labels.items()
        }

    def __len__(self) -> int:
        """Items per epoch: max(|A|, |B|) for unpaired data (official CycleGAN loader), else the split's size."""
        return max(len(v) for v in self.streams.values())

    def epoch_samples(self, epoch: int, seed: int, rank: int, world: int) -> list[Sample]:
        n = len(self)
        positions = shard_positions(n, epoch, seed, rank, world)
        if "image" in self.streams:
            files = self.streams["image"]
            return [Sample({"image": files[i]}, self.labels.get(files[i], ()), self._masks_of({"image": files[i]}))
                    for i in positions]
        a = _tiled_permutation(len(self.streams["A"]), n, seed, epoch, 1)
        b = _tiled_permutation(len(self.streams["B"]), n, seed, epoch, 2)
        out = []
        for i in positions:
            files = {"A": self.streams["A"][a[i]], "B": self.streams["B"][b[i]]}
            out.append(Sample(files, masks=self._masks_of(files)))
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


class BatchStream:
    """Batches of one worker's shard, prefetched by a background thread; resumable at (epoch, batch).

    Iterating yields dicts of stacked tensors, epoch after epoch. `position` is the (epoch, batch) of the next batch;
    a checkpoint stores it and `BatchStream(..., epoch=e, batch=b)` continues exactly there. `wait_s` accumulates
    the time `next()` blocked (the step loop waiting for data).
    """

    def __init__(self, dataset: ImageDataset, batch_size: int, rank: int = 0, world: int = 1, seed: int = 0,
                 epoch: int = 0, batch: int = 0) -> None:
        per_worker = -(-len(dataset) // world)
        if batch_size > per_worker:
            raise ValueError(f"batch size {batch_size} per worker exceeds the {per_worker} images each of {world} "
                             f"worker(s) gets from {dataset.cfg.uri}: lower --batch-size or use fewer workers")
        self.dataset, self.batch_size, self.rank, self.world, self.seed = dataset, batch_size, rank, world, seed
        self.batches_per_epoch = per_worker // batch_size  # drop_last: equal batches on every worker
        self.position = (epoch, batch)
        self.wait_s = 0.0
        self._queue: queue.Queue = queue.Queue(maxsize=dataset.cfg.prefetch_batches)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.position[0], "batch": self.position[1]}

    def _produce(self, epoch: int, batch: int) -> None:
        ds = self.dataset
        with ThreadPoolExecutor(ds.cfg.decode_threads, thread_name_prefix="gansvc-decode") as pool:
            while not self._stop.is_set():
                samples = ds.epoch_samples(epoch, self.seed, self.rank, self.world)
                if epoch == self.position[0] or ds.bytes.cache is not None:
                    # warm this epoch's files ahead of decoding, in the background (no-op once all are cached)
                    rels = [f for smp in samples[batch * self.batch_size:]
                            for f in (*smp.files.values(), *smp.masks.values())]
                    threading.Thread(target=ds.bytes.warm, args=(rels,), daemon=True).start()
                for b in range(batch, self.batches_per_epoch):
                    chunk = samples[b * self.batch_size:(b + 1) * self.batch_size]
                    base = b * self.batch_size
                    rngs = [np.random.default_rng([self.seed, epoch, self.rank, base + k, 7]) for k in range(len(chunk))]
                    try:
                        items = list(pool.map(ds.load_sample, chunk, rngs))
                        out = {k: torch.stack([it[k] for it in items]) for k in items[0]}
                    except Exception as err:  # noqa: BLE001 - handed to the consumer, which re-raises it
                        self._queue.put(err)
                        return
                    nxt = (epoch, b + 1) if b + 1 < self.batches_per_epoch else (epoch + 1, 0)
                    while not self._stop.is_set():
                        try:
                            self._queue.put((out, nxt), timeout=0.2)
                            break
                        except queue.Full:
                            continue
                    if self._stop.is_set():
                        return
                epoch, batch = epoch + 1, 0

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        if self._thread is None:
            self._thread = threading.Thread(target=self._produce, args=self.position, daemon=True,
                                            name="gansvc-batches")
            self._thread.start()
        t0 = time.perf_counter()
        item = self._queue.get()
        self.wait_s += time.perf_counter() - t0
        if isinstance(item, Exception):
            self.close()
            raise RuntimeError(f"reading {self.dataset.cfg.uri} failed: {item}") from item
        batch, self.position = item
        return batch

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __del__(self) -> None:
        stop = getattr(self, "_stop", None)
        if stop is not None:
            stop.set()
