"""Reference statistics of a dataset's real images, computed once and cached next to the dataset in storage.

A `ReferenceStats` holds, for one stream of one split at one training size:
- with a feature extractor: the count, mean and covariance of the features (FID) and up to `kid_keep` feature rows
  (KID), all from the first `max_samples` images of a fixed shuffle (seed 0) of the stream's files, each used once;
- always: up to `swd_images` real images as uint8 (lossless: pipeline images are u / 127.5 - 1 of 8-bit files),
  at most `swd_max_bytes` of them, for the SWD (which compares image patches, so it needs images, not statistics).

Images go through the training pipeline's decoding and transforms (`ImageDataset.load_sample`, its byte cache and
decode threads) with flip off and a centre crop, so they match what the generator is trained to produce. Files are
read directly rather than through `BatchStream`, whose unpaired epochs tile the smaller domain (repeating B images)
and drop the last partial batch.

Cache: `<dataset uri>/.gansvc-cache/<kind>-<hash>.npz` (kind "inception" or "swd"), the hash over the extractor id,
resolved size / load size / channels, split, stream, max_samples, the kept-sample bounds and the dataset version:
the manifest's fingerprint, its files_root and a hash of its whole content (`pipeline.manifest_digest`), so an
overwritten dataset (any new manifest, even one with the same source fingerprint) never reuses old statistics.
Written with `storage.write_bytes`, read with `np.load(allow_pickle=False)`; a read-only dataset location only costs
a recomputation next time.
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from gansvc import storage
from gansvc.data.pipeline import DataConfig, ImageDataset, Sample, manifest_digest
from gansvc.metrics.inception import FeatureExtractor
from gansvc.metrics.stats import FeatureStats

CACHE_DIR = ".gansvc-cache"
# Real feature rows kept for KID. torch-fidelity's KID uses every real feature; 10,000 covers the usual reference sets
# (e.g. CIFAR-10 test) whole, at 80 MB of float32 in the cache; the protocol records how many were used.
KID_KEEP = 10_000
FORMAT = 1  # bump when what is stored (or how) changes: old caches are then ignored


@dataclass
class ReferenceStats:
    """Statistics of real images (see the module doc). `mu`/`sigma`/`kid_features` are None without an extractor."""

    extractor_id: str | None
    n: int  # images in mu / sigma
    mu: np.ndarray | None
    sigma: np.ndarray | None
    kid_features: np.ndarray | None
    swd_images: np.ndarray  # (M, C, H, W) uint8
    meta: dict[str, Any] = field(default_factory=dict)
    uri: str = ""  # where it is cached
    from_cache: bool = False

    def swd_tensor(self) -> torch.Tensor:
        """The kept real images back in [-1, 1] (exactly the pipeline's values)."""
        return torch.from_numpy(self.swd_images).float().div_(127.5).sub_(1.0)

    def features(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(mu, sigma, kid_features): set together whenever `extractor_id` is (an error when they are not)."""
        if self.mu is None or self.sigma is None or self.kid_features is None:
            raise ValueError(f"reference statistics {self.uri} hold no features (computed without an extractor)")
        return self.mu, self.sigma, self.kid_features

    def to_bytes(self) -> bytes:
        arrays: dict[str, np.ndarray] = {
            "swd_images": self.swd_images,
            "n": np.array(self.n),
            "meta": np.array(json.dumps(self.meta)),
        }
        if self.extractor_id is not None:
            mu, sigma, kid_features = self.features()
            arrays.update(mu=mu, sigma=sigma, kid_features=kid_features, extractor_id=np.array(self.extractor_id))
        buf = io.BytesIO()
        np.savez(buf, allow_pickle=True, **arrays)  # savez's default, named: `**arrays` could otherwise be it
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, uri: str = "") -> ReferenceStats:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            has = "extractor_id" in z.files
            return cls(
                extractor_id=str(z["extractor_id"]) if has else None,
                n=int(z["n"]),
                mu=z["mu"] if has else None,
                sigma=z["sigma"] if has else None,
                kid_features=z["kid_features"] if has else None,
                swd_images=z["swd_images"],
                meta=json.loads(str(z["meta"])),
                uri=uri,
                from_cache=True,
            )


def to_uint8(images: torch.Tensor) -> np.ndarray:
    return ((images.detach().cpu().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()


def _cache_key(
    ds: ImageDataset, extractor: FeatureExtractor | None, stream_key: str, max_samples: int, kid_keep: int, swd_n: int
) -> dict[str, Any]:
    cfg = ds.cfg
    return {
        "format": FORMAT,
        "extractor": extractor.id if extractor is not None else None,
        "size": list(ds.size),
        "load_size": list(ds.load),
        "crop": "center",
        "channels": ds.spec.channels,
        "split": cfg.split,
        "stream": stream_key,
        "max_samples": max_samples,
        "kid_keep": kid_keep,
        "swd_images": swd_n,
        "dataset": {
            "fingerprint": ds.manifest.fingerprint,
            "files_root": ds.manifest.files_root,
            "manifest_sha256": manifest_digest(ds.manifest),
        },
    }


def stats_from_batches(
    batches: Iterable[torch.Tensor],
    extractor: FeatureExtractor | None,
    batch_size: int = 64,
    kid_keep: int = KID_KEEP,
    swd_n: int = 1024,
) -> ReferenceStats:
    """ReferenceStats of image batches (N, C, H, W) in [-1, 1] (not cached): features of every image, the first
    `kid_keep` feature rows and the first `swd_n` images as uint8. `reference_stats` feeds it a dataset's images;
    tests and tools can feed any images (e.g. a folder of PNGs)."""
    stats: FeatureStats | None = None
    kept: list[np.ndarray] = []
    n = 0
    for images in batches:
        if sum(len(k) for k in kept) < swd_n:
            kept.append(to_uint8(images[: swd_n - sum(len(k) for k in kept)]))
        if extractor is not None:
            feats, _ = extractor.extract(images, batch_size)
            if stats is None:
                stats = FeatureStats(feats.shape[1], keep=kid_keep)
            stats.update(feats)
        n += len(images)
    if not kept:
        raise ValueError("reference statistics need at least one image")
    ref = ReferenceStats(
        extractor_id=None, n=n, mu=None, sigma=None, kid_features=None, swd_images=np.concatenate(kept)
    )
    if extractor is not None and stats is not None:
        ref.extractor_id, ref.n, ref.mu, ref.sigma, ref.kid_features = (
            extractor.id,
            stats.n,
            stats.mean,
            stats.cov,
            stats.kept,
        )
    return ref


def reference_stats(
    data_cfg: DataConfig,
    extractor: FeatureExtractor | None,
    max_samples: int,
    stream_key: str = "image",
    batch_size: int = 64,
    kid_keep: int = KID_KEEP,
    swd_images: int = 1024,
    swd_max_bytes: int = 64 << 20,
    quiet: bool = False,
) -> ReferenceStats:
    """Statistics of the real images of `stream_key` ("image"; "A" or "B" for unpaired data: "B" for the targets of a
    translation), loaded from the dataset's cache when there, else computed and cached. See the module doc."""
    cfg = data_cfg.model_copy(update={"flip": False, "crop": "center"})
    ds = ImageDataset(cfg)
    if stream_key not in ds.streams:
        raise ValueError(
            f"{cfg.uri} has no {stream_key!r} image stream (it has {', '.join(ds.streams)}): "
            'use "image" for single-domain data, "A"/"B" for unpaired data'
        )
    files = ds.streams[stream_key]
    n = min(max_samples, len(files))
    if extractor is not None and n < 2:
        raise ValueError(f"reference statistics need at least 2 images, {cfg.uri} {cfg.split}/{stream_key} gives {n}")
    per_image = ds.spec.channels * ds.size[0] * ds.size[1]
    swd_n = max(1, min(n, swd_images, swd_max_bytes // per_image))
    key = _cache_key(ds, extractor, stream_key, max_samples, kid_keep, swd_n)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    kind = "swd" if extractor is None else "inception"
    uri = storage.parse_uri(cfg.uri).join(CACHE_DIR, f"{kind}-{digest}.npz").uri()
    if storage.exists(uri):
        try:
            return ReferenceStats.from_bytes(storage.read_bytes(uri), uri)
        except (ValueError, KeyError, OSError) as err:
            print(f"[gansvc] ignoring unreadable reference statistics {uri} ({err}); recomputing", file=sys.stderr)

    order = np.random.default_rng(0).permutation(len(files))[:n]
    samples = [Sample({stream_key: files[i]}) for i in order]
    ds.bytes.warm([s.files[stream_key] for s in samples])
    with (
        ThreadPoolExecutor(cfg.decode_threads, thread_name_prefix="gansvc-ref") as pool,
        tqdm(total=n, desc=f"reference statistics {stream_key}", unit="img", disable=quiet) as bar,
    ):

        def batches() -> Iterator[torch.Tensor]:
            for start in range(0, n, batch_size):
                chunk = samples[start : start + batch_size]
                rngs = [np.random.default_rng([0, start + k]) for k in range(len(chunk))]  # unused: no flip/crop
                yield torch.stack([it[stream_key] for it in pool.map(ds.load_sample, chunk, rngs)])
                bar.update(len(chunk))

        ref = stats_from_batches(batches(), extractor, batch_size, kid_keep, swd_n)
    ref.meta, ref.uri = key, uri
    try:
        storage.write_bytes(uri, ref.to_bytes(), "application/octet-stream")
    except (storage.StorageError, OSError) as err:
        print(
            f"[gansvc] could not cache reference statistics at {uri} ({err}); they will be recomputed next time",
            file=sys.stderr,
        )
    return ref
