"""The per-worker input pipeline: sharding, transforms, labels, resume, and two real Ray workers reading from S3."""

from __future__ import annotations

import io
import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gansvc import local, storage
from gansvc.data.manifest import Manifest, SplitInfo, read_manifest
from gansvc.data.pipeline import BatchStream, DataConfig, ImageDataset, shard_positions


@pytest.fixture(scope="module")
def shapes_uri(stack: local.StackState, synth_put: Callable[..., str]) -> str:
    return synth_put("shapes", f"s3://{stack.bucket}/pipeline/shapes", count=48, size=20, seed=1, test_count=4)


@pytest.fixture(scope="module")
def stripes_uri(stack: local.StackState, synth_put: Callable[..., str]) -> str:
    return synth_put("stripes", f"s3://{stack.bucket}/pipeline/stripes", count=30, size=16, seed=2, test_count=2)


@pytest.mark.parametrize(("n", "world"), [(12, 2), (12, 3), (10, 4), (7, 1)])
def test_shards_are_disjoint_and_cover(n: int, world: int) -> None:
    for epoch in range(3):
        shards = [shard_positions(n, epoch, seed=5, rank=r, world=world) for r in range(world)]
        assert len({len(s) for s in shards}) == 1, "every worker gets as many items"
        union = np.concatenate(shards)
        assert set(union.tolist()) == set(range(n)), "the shards cover the dataset"
        assert len(union) - len(set(union.tolist())) == (-n) % world, "only the wrap-around padding repeats"
    a, b = shard_positions(n, 0, 5, 0, world), shard_positions(n, 1, 5, 0, world)
    assert n < 4 or not np.array_equal(a, b), "a new permutation every epoch"


def test_batches_shapes_range_labels(shapes_uri: str, tmp_path: Path) -> None:
    ds = ImageDataset(DataConfig(uri=shapes_uri, cache_dir=str(tmp_path)))
    assert ds.spec.height == ds.spec.width == 20 and ds.spec.channels == 3
    stream = BatchStream(ds, batch_size=8)
    batch = next(stream)
    stream.close()
    assert batch["image"].shape == (8, 3, 20, 20) and batch["image"].dtype == torch.float32
    assert batch["image"].min() >= -1 and batch["image"].max() <= 1
    assert batch["labels"].shape == (8, 2) and batch["labels"].dtype == torch.int64
    # the labels are the manifest's values, encoded as indices into the sorted value lists
    m = read_manifest(shapes_uri)
    samples = ds.epoch_samples(0, seed=0, rank=0, world=1)[:8]
    for row, sample in zip(batch["labels"].tolist(), samples, strict=True):
        names = m.labels[sample.files["image"]]
        assert [m.attributes[a][i] for a, i in zip(m.attributes, row, strict=True)] == names


def test_pixels_follow_the_official_convention(shapes_uri: str) -> None:
    """No augmentation: the tensor is exactly x / 127.5 - 1 of the stored PNG."""
    ds = ImageDataset(DataConfig(uri=shapes_uri, flip=False, cache_dir=""))
    sample = ds.epoch_samples(0, 0, 0, 1)[0]
    got = ds.load_sample(sample, np.random.default_rng(0))["image"]
    stored = f"{shapes_uri}/{ds.manifest.object_rel(sample.files['image'])}"  # where this version keeps the file
    raw = np.asarray(Image.open(io.BytesIO(storage.read_bytes(stored))))
    expected = torch.from_numpy(raw.astype(np.float32).transpose(2, 0, 1)) / 127.5 - 1
    assert torch.allclose(got, expected, atol=1e-6)


@pytest.mark.parametrize(
    ("size", "load", "channels", "shape"),
    [(16, 20, 3, (3, 16, 16)), ((12, 20), None, 1, (1, 12, 20)), (32, None, 3, (3, 32, 32)), (8, None, 1, (1, 8, 8))],
)
def test_transforms_any_size_and_channels(
    shapes_uri: str,
    size: int | tuple[int, int],
    load: int | None,
    channels: int,
    shape: tuple[int, int, int],
) -> None:
    ds = ImageDataset(DataConfig(uri=shapes_uri, size=size, load_size=load, channels=channels, cache_dir=""))
    x = ds.load_sample(ds.epoch_samples(0, 0, 0, 1)[0], np.random.default_rng(0))["image"]
    assert tuple(x.shape) == shape and x.min() >= -1 and x.max() <= 1
    assert ds.spec.channels == channels and (ds.spec.height, ds.spec.width) == shape[1:]


def test_flip_and_crop_are_random_but_reproducible(shapes_uri: str) -> None:
    ds = ImageDataset(DataConfig(uri=shapes_uri, size=16, load_size=20, cache_dir=""))
    sample = ds.epoch_samples(0, 0, 0, 1)[0]
    views = [ds.load_sample(sample, np.random.default_rng(s))["image"] for s in range(8)]
    assert len({v.numpy().tobytes() for v in views}) > 1, "different seeds give different crops/flips"
    again = ds.load_sample(sample, np.random.default_rng(3))["image"]
    assert torch.equal(again, views[3])


def test_load_smaller_than_size_is_an_error(shapes_uri: str) -> None:
    with pytest.raises(ValueError, match="load_size"):
        ImageDataset(DataConfig(uri=shapes_uri, size=32, load_size=20))


def test_unpaired_batches(stripes_uri: str, tmp_path: Path) -> None:
    ds = ImageDataset(DataConfig(uri=stripes_uri, cache_dir=str(tmp_path)))
    assert len(ds) == 30 and ds.spec.layout == "unpaired"
    stream = BatchStream(ds, batch_size=4)
    batch = next(stream)
    stream.close()
    assert set(batch) == {"A", "B"} and batch["A"].shape == batch["B"].shape == (4, 3, 16, 16)
    samples = ds.epoch_samples(0, 0, 0, 1)
    assert all(s.files["A"].startswith("trainA/") and s.files["B"].startswith("trainB/") for s in samples)
    test_ds = ImageDataset(DataConfig(uri=stripes_uri, split="test"))
    assert len(test_ds) == 2


def test_resume_continues_with_identical_batches(shapes_uri: str, tmp_path: Path) -> None:
    ds = ImageDataset(DataConfig(uri=shapes_uri, size=16, load_size=20, cache_dir=str(tmp_path)))
    full = BatchStream(ds, batch_size=8, seed=11)  # 6 batches per epoch: 10 batches cross an epoch boundary
    reference = list(itertools.islice(full, 10))
    full.close()
    first = BatchStream(ds, batch_size=8, seed=11)
    list(itertools.islice(first, 4))
    position = first.state_dict()
    first.close()
    assert position == {"epoch": 0, "batch": 4}
    resumed = BatchStream(ds, batch_size=8, seed=11, **position)
    rest = list(itertools.islice(resumed, 6))
    resumed.close()
    for a, b in zip(reference[4:], rest, strict=True):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["labels"], b["labels"])
    assert resumed.state_dict() == {"epoch": 1, "batch": 4}


def test_wait_time_is_measured(shapes_uri: str, tmp_path: Path) -> None:
    ds = ImageDataset(DataConfig(uri=shapes_uri, cache_dir=str(tmp_path)))
    stream = BatchStream(ds, batch_size=8)
    list(itertools.islice(stream, 3))
    stream.close()
    assert stream.wait_s > 0.0  # the first batch is always waited for


def test_batch_larger_than_shard_is_explained(shapes_uri: str) -> None:
    ds = ImageDataset(DataConfig(uri=shapes_uri))
    with pytest.raises(ValueError, match="--batch-size"):
        BatchStream(ds, batch_size=64, world=2)


def test_two_ray_workers_read_disjoint_covering_shards(ray_stack: local.StackState, shapes_uri: str) -> None:
    """Two real Ray worker processes read their shard of one epoch from the embedded S3."""
    import ray

    @ray.remote(num_cpus=1)
    def read_shard(uri: str, rank: int, world: int) -> tuple[list[str], list[tuple[int, ...]]]:
        from gansvc.data.pipeline import BatchStream, DataConfig, ImageDataset

        ds = ImageDataset(DataConfig(uri=uri, cache_dir=""))
        files = [s.files["image"] for s in ds.epoch_samples(0, seed=0, rank=rank, world=world)]
        stream = BatchStream(ds, batch_size=4, rank=rank, world=world)
        batches = [next(stream) for _ in range(stream.batches_per_epoch)]
        stream.close()
        return files, [tuple(b["image"].shape) for b in batches]

    (files0, shapes0), (files1, shapes1) = ray.get([read_shard.remote(shapes_uri, r, 2) for r in range(2)])
    assert not set(files0) & set(files1)
    assert set(files0) | set(files1) == set(read_manifest(shapes_uri).splits["train"].files)
    assert shapes0 == shapes1 == [(4, 3, 20, 20)] * 6


def test_one_storage_read_per_file_on_a_cold_cache(shapes_uri: str, tmp_path: Path) -> None:
    """The warm-up thread and the decoders miss the same files at once; each file is still read from S3 once."""
    ds = ImageDataset(DataConfig(uri=shapes_uri, cache_dir=str(tmp_path)))
    reads: Counter[str] = Counter()
    fetch = ds.bytes.fetch

    def counted(rel: str) -> bytes:
        reads[rel] += 1
        return fetch(rel)

    ds.bytes.fetch = counted  # type: ignore[method-assign]
    stream = BatchStream(ds, batch_size=8)
    for _ in range(stream.batches_per_epoch):
        next(stream)
    stream.close()
    assert set(reads) == set(ds.streams["image"]) and set(reads.values()) == {1}


def _new_threads(before: set[threading.Thread]) -> list[str]:
    return sorted(t.name for t in set(threading.enumerate()) - before if t.is_alive())


@pytest.mark.timeout(60)
def test_close_stops_and_joins_the_warm_up_threads(shapes_uri: str, tmp_path: Path) -> None:
    ds = ImageDataset(DataConfig(uri=shapes_uri, cache_dir=str(tmp_path)))
    fetch = ds.bytes.fetch

    def slow(rel: str) -> bytes:  # a slow store (each real S3 read 0.5 s later): the warm-up is busy at close()
        time.sleep(0.5)
        return fetch(rel)

    ds.bytes.fetch = slow  # type: ignore[method-assign]
    before = set(threading.enumerate())
    stream = BatchStream(ds, batch_size=4)
    next(stream)
    assert _new_threads(before), "the stream's threads (producer, warm-up) are running"
    t0 = time.monotonic()
    stream.close()
    assert time.monotonic() - t0 < 5, "files not yet started are skipped, not fetched"
    assert _new_threads(before) == [], "no thread of the stream outlives close()"
    cached = {p.name for p in tmp_path.rglob("*.png")}
    assert len(cached) < len(ds.streams["image"]), "the warm-up stopped early"


def _dataset_with_a_bad_batch(root: Path, n: int = 6, batch_size: int = 2, bad_batch: int = 2) -> str:
    """A local dataset of n flat images whose files in batch `bad_batch` of epoch 0 (seed 0) are not images."""
    files = [f"train/{i}.png" for i in range(n)]
    bad = {files[i] for i in shard_positions(n, 0, 0, 0, 1)[bad_batch * batch_size : (bad_batch + 1) * batch_size]}
    for rel in files:
        buf = io.BytesIO()
        Image.new("RGB", (8, 8), (100, 100, 100)).save(buf, "PNG")
        storage.write_bytes(str(root / rel), b"not an image" if rel in bad else buf.getvalue())
    m = Manifest(layout="single", splits={"train": SplitInfo(count=n, files=files, sizes={"8x8": n})}, channels=3)
    storage.write_json(str(root / "manifest.json"), m.model_dump(mode="json"))
    return str(root)


@pytest.mark.timeout(60)
def test_a_producer_error_with_a_full_queue_never_blocks_close(tmp_path: Path) -> None:
    ds = ImageDataset(DataConfig(uri=_dataset_with_a_bad_batch(tmp_path), prefetch_batches=1, cache_dir=""))
    before = set(threading.enumerate())
    stream = BatchStream(ds, batch_size=2)
    next(stream)
    deadline = time.monotonic() + 20
    while not stream._queue.full():  # batch 1 waits in the queue, and nobody takes it
        assert time.monotonic() < deadline, "the producer never queued batch 1"
        time.sleep(0.01)
    time.sleep(0.5)  # meanwhile the producer fails on batch 2 and tries to hand over its error
    t0 = time.monotonic()
    stream.close()
    assert time.monotonic() - t0 < 3, "close() waited for a producer stuck on a full queue"
    assert _new_threads(before) == []


@pytest.mark.timeout(60)
def test_a_producer_error_reaches_the_consumer_and_a_closed_stream_says_so(tmp_path: Path) -> None:
    ds = ImageDataset(DataConfig(uri=_dataset_with_a_bad_batch(tmp_path), prefetch_batches=1, cache_dir=""))
    stream = BatchStream(ds, batch_size=2)
    next(stream), next(stream)
    with pytest.raises(RuntimeError, match=r"reading .* failed: cannot identify image file"):
        next(stream)
    with pytest.raises(RuntimeError, match="is closed"):  # not a wait for batches that never come
        next(stream)
