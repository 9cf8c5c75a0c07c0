"""The per-worker input pipeline: sharding, transforms, labels, resume, and two real Ray workers reading from S3."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from gansvc.data.ingest import put
from gansvc.data.manifest import read_manifest
from gansvc.data.pipeline import BatchStream, DataConfig, ImageDataset, shard_positions
from gansvc.data.synth import synth


@pytest.fixture(scope="module")
def shapes_uri(stack) -> str:  # noqa: ANN001
    uri = f"s3://{stack.bucket}/pipeline/shapes"
    put(str(synth("shapes", count=48, size=20, seed=1, test_count=4)), uri, quiet=True)
    return uri


@pytest.fixture(scope="module")
def stripes_uri(stack) -> str:  # noqa: ANN001
    uri = f"s3://{stack.bucket}/pipeline/stripes"
    put(str(synth("stripes", count=30, size=16, seed=2, test_count=2)), uri, quiet=True)
    return uri


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
    from PIL import Image

    from gansvc import storage

    ds = ImageDataset(DataConfig(uri=shapes_uri, flip=False, cache_dir=""))
    sample = ds.epoch_samples(0, 0, 0, 1)[0]
    got = ds.load_sample(sample, np.random.default_rng(0))["image"]
    raw = np.asarray(Image.open(__import__("io").BytesIO(storage.read_bytes(f"{shapes_uri}/{sample.files['image']}"))))
    expected = torch.from_numpy(raw.astype(np.float32).transpose(2, 0, 1)) / 127.5 - 1
    assert torch.allclose(got, expected, atol=1e-6)


@pytest.mark.parametrize(
    ("size", "load", "channels", "shape"),
    [(16, 20, 3, (3, 16, 16)), ((12, 20), None, 1, (1, 12, 20)), (32, None, 3, (3, 32, 32)), (8, None, 1, (1, 8, 8))],
)
def test_transforms_any_size_and_channels(shapes_uri: str, size, load, channels: int, shape) -> None:  # noqa: ANN001
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


def test_two_ray_workers_read_disjoint_covering_shards(ray_stack, shapes_uri: str) -> None:  # noqa: ANN001
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
