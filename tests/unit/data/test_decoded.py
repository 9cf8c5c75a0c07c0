"""The decoded-tensor input path (gansvc.data.decoded): pixels, augmentation distribution, exact resume, store keying,
concurrent builds, and the data.cache choice, each against today's per-file path (BatchStream)."""

from __future__ import annotations

import hashlib
import io
import itertools
import multiprocessing as mp
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from gansvc import local, storage
from gansvc.data import decoded
from gansvc.data.decoded import (
    DecodedBatchStream,
    crop_flip,
    draw_batch_geometry,
    flip_rows,
    gather_crops,
    open_store,
    open_stream,
)
from gansvc.data.manifest import Manifest, SplitInfo
from gansvc.data.pipeline import BatchStream, DataConfig, ImageDataset

SIDE = 20  # the coordinate images' side


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def write_dataset(
    root: Path, images: list[np.ndarray], masks: list[np.ndarray] | None = None, labelled: bool = False, tag: str = "v1"
) -> str:
    """A local single-layout dataset of the given uint8 arrays (and masks, labels), with its manifest; `tag` is its
    content fingerprint (a new tag: a new dataset version, as an overwrite by `data put` makes)."""
    files = [f"train/{i:04d}.png" for i in range(len(images))]
    mask_files = {f: f"train_masks/{i:04d}.png" for i, f in enumerate(files)} if masks is not None else {}
    for i, (rel, arr) in enumerate(zip(files, images, strict=True)):
        storage.write_bytes(str(root / rel), _png(arr))
        if masks is not None:
            storage.write_bytes(str(root / mask_files[rel]), _png(masks[i]))
    sizes: dict[str, int] = {}
    for arr in images:
        k = f"{arr.shape[1]}x{arr.shape[0]}"
        sizes[k] = sizes.get(k, 0) + 1
    attrs = {"parity": ["even", "odd"]} if labelled else {}
    labels = {f: [("even", "odd")[i % 2]] for i, f in enumerate(files)} if labelled else {}
    m = Manifest(
        layout="single",
        splits={"train": SplitInfo(count=len(files), files=files, sizes=sizes, masks=mask_files)},
        channels=3 if images[0].ndim == 3 else 1,
        attributes=attrs,
        labels=labels,
        num_classes=256 if masks is not None else 0,
        fingerprint=tag,
        created=tag,
    )
    storage.write_json(str(root / "manifest.json"), m.model_dump(mode="json"))
    return str(root)


def coordinate_images(n: int, side: int = SIDE) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Image i: R = 10 y, G = 10 x, B = 5 i (every pixel says where it came from); its mask: (3 y + 5 x) mod 251."""
    y, x = np.mgrid[0:side, 0:side]
    images = [np.stack([10 * y, 10 * x, np.full_like(y, 5 * i)], -1).astype(np.uint8) for i in range(n)]
    masks = [((3 * y + 5 * x) % 251).astype(np.uint8) for _ in range(n)]
    return images, masks


@pytest.fixture(scope="module")
def coords(tmp_path_factory: pytest.TempPathFactory) -> str:
    images, masks = coordinate_images(40)
    return write_dataset(tmp_path_factory.mktemp("coords"), images, masks, labelled=True)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Noisy RGB images of mixed sizes (bicubic resizing is then exercised), with masks and labels."""
    rng = np.random.default_rng(3)
    shapes = [(24, 24), (24, 24), (30, 22), (17, 19)] * 6
    images = [rng.integers(0, 256, (*s, 3), dtype=np.uint8) for s in shapes]
    masks = [rng.integers(0, 5, s, dtype=np.uint8) for s in shapes]
    return write_dataset(tmp_path_factory.mktemp("photos"), images, masks, labelled=True)


def _cfg(uri: str, cache_dir: Path, **kw: object) -> DataConfig:
    return DataConfig(uri=uri, cache_dir=str(cache_dir), **kw)  # type: ignore[arg-type]


def _take(stream: BatchStream, n: int) -> list[dict[str, torch.Tensor]]:
    try:
        return list(itertools.islice(stream, n))
    finally:
        stream.close()


def _decoded(ds: ImageDataset, batch_size: int, **kw: object) -> DecodedBatchStream:
    store, _ = open_store(ds)
    return DecodedBatchStream(ds, store, batch_size, **kw)  # type: ignore[arg-type]


# ---- (a) pixels -----------------------------------------------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("channels", [3, 1])
def test_pixels_equal_the_per_file_path(photos: str, tmp_path: Path, channels: int) -> None:
    """Center crop, no flip: bit-identical batches (bicubic resize to the load size, crop, x / 127.5 - 1) for RGB and
    grayscale, masks (nearest resize) and labels, in the same order, over an epoch boundary."""
    ds = ImageDataset(_cfg(photos, tmp_path, size=16, load_size=(22, 20), crop="center", flip=False, channels=channels))
    want = _take(BatchStream(ds, batch_size=5, seed=4), 6)  # 4 batches per epoch
    got = _take(_decoded(ds, 5, seed=4), 6)
    for a, b in zip(want, got, strict=True):
        assert list(a) == list(b) == ["image", "mask", "labels"]
        assert a["image"].shape == (5, channels, 16, 16) and a["mask"].dtype == b["mask"].dtype == torch.int64
        for k in a:
            assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


@pytest.mark.timeout(90)
def test_unpaired_masked_s3_dataset_equals_the_per_file_path(
    stack: local.StackState, synth_put: Callable[..., str], tmp_path: Path
) -> None:
    """From the embedded S3 through the byte cache: the store reads each file once, and the unpaired A/B pairing,
    masks and pixels equal today's path."""
    uri = synth_put(
        "stripes", f"s3://{stack.bucket}/decoded/stripes", count=14, size=16, seed=5, test_count=2, masks=True
    )
    ds = ImageDataset(_cfg(uri, tmp_path, load_size=18, crop="center", flip=False))
    reads: dict[str, int] = {}
    fetch = ds.bytes.fetch

    def counted(rel: str) -> bytes:
        reads[rel] = reads.get(rel, 0) + 1
        return fetch(rel)

    ds.bytes.fetch = counted  # type: ignore[method-assign]
    got = _take(_decoded(ds, 3, seed=1), 6)  # 4 batches per epoch
    assert len(reads) == 4 * 14 and set(reads.values()) == {1}, "every image and mask read from S3 once"
    assert any(tmp_path.rglob("*.png")), "through the node's byte cache"
    want = _take(BatchStream(ds, batch_size=3, seed=1), 6)
    for a, b in zip(want, got, strict=True):
        assert list(a) == list(b) == ["A", "A_mask", "B", "B_mask"]
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_device_gather_equals_the_host_crop() -> None:
    """`crop_flip` (the CUDA path: one gather) gives what the CPU path (slices, then flips) gives, images and masks."""
    rng = np.random.default_rng(0)
    full = rng.integers(0, 256, (9, 13, 11, 3), dtype=np.uint8)
    g = draw_batch_geometry(9, (8, 7), (13, 11), "random", True, rng)
    assert g.flip.any() and not g.flip.all() and len(set(g.top.tolist())) > 1
    idx = np.arange(9)
    host = flip_rows(torch.from_numpy(gather_crops(full, idx, g, (8, 7))), g.flip)
    assert torch.equal(crop_flip(torch.from_numpy(full), g, (8, 7)), host)
    mask = full[..., 0].copy()
    assert torch.equal(
        crop_flip(torch.from_numpy(mask), g, (8, 7)),
        flip_rows(torch.from_numpy(gather_crops(mask, idx, g, (8, 7))), g.flip),
    )


@pytest.mark.timeout(60)
def test_the_device_side_stream_equals_the_host_side_stream(coords: str, tmp_path: Path) -> None:
    """The CUDA code path (whole rows handed over, crop/flip/scale in next()) run on the CPU: the same batches."""
    ds = ImageDataset(_cfg(coords, tmp_path, size=15))
    host = _take(_decoded(ds, 8, seed=2), 7)
    stream = _decoded(ds, 8, seed=2)
    stream.device_side = True
    device = _take(stream, 7)
    for a, b in zip(host, device, strict=True):
        assert list(a) == list(b) and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_batches_equal_cpu_batches(coords: str, tmp_path: Path) -> None:
    ds = ImageDataset(_cfg(coords, tmp_path, size=16))
    cpu = _take(_decoded(ds, 8, seed=2), 3)
    gpu = _take(_decoded(ds, 8, seed=2, device="cuda"), 3)
    for a, b in zip(cpu, gpu, strict=True):
        assert all(b[k].device.type == "cuda" and torch.equal(a[k], b[k].cpu()) for k in a)


# ---- (b) augmentation distribution ----------------------------------------------------------------------------------


def _geometry_of(batch: dict[str, torch.Tensor], size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(top, left, flipped) of every sample of a coordinate-image batch, read back from its pixels; and checks that
    each mask is its image's mask under the same crop and flip (mask = (3 y + 5 x) mod 251 of the source pixel)."""
    px = ((batch["image"] + 1) * 127.5).round().long()  # (B, 3, h, w)
    y, x = px[:, 0] // 10, px[:, 1] // 10
    assert torch.equal(batch["mask"], (3 * y + 5 * x) % 251), "a mask is not aligned with its image"
    flipped = (x[:, 0, 0] > x[:, 0, -1]).numpy()
    left = torch.minimum(x[:, 0, 0], x[:, 0, -1]).numpy()
    assert bool(((x[:, 0, 0] - x[:, 0, -1]).abs() == size - 1).all())
    return y[:, 0, 0].numpy(), left, flipped


@pytest.mark.timeout(90)
def test_crops_and_flips_follow_the_per_file_distribution(coords: str, tmp_path: Path) -> None:
    """Over 2,000 draws per path: offsets uniform over 0..load-size (chi-square), both paths' offset histograms
    alike (contingency test), flips at rate 0.5, masks cropped and flipped with their image."""
    from scipy import stats  # here: the spawned processes of the concurrent-build test import this module

    size = 15  # load 20: offsets 0..5, 6 values per axis
    ds = ImageDataset(_cfg(coords, tmp_path, size=size, load_size=SIDE))
    per_path = {}
    for name, stream in (("files", BatchStream(ds, batch_size=20, seed=9)), ("decoded", _decoded(ds, 20, seed=9))):
        draws = [_geometry_of(b, size) for b in _take(stream, 100)]
        per_path[name] = [np.concatenate(v) for v in zip(*draws, strict=True)]
    for name, (top, left, flipped) in per_path.items():
        for what, v in (("top", top), ("left", left)):
            counts = np.bincount(v, minlength=SIDE - size + 1)
            assert len(counts) == SIDE - size + 1 and counts.min() > 0, (name, what, counts)
            assert stats.chisquare(counts).pvalue > 1e-3, (name, what, counts)
        n = len(flipped)
        assert abs(flipped.mean() - 0.5) < 4 * 0.5 / np.sqrt(n), (name, flipped.mean())  # 4 sigma
        # crop axes and flips drawn independently: the joint (top, left) table is uniform too
        joint = np.bincount(top * (SIDE - size + 1) + left, minlength=(SIDE - size + 1) ** 2)
        assert stats.chisquare(joint).pvalue > 1e-3, name
    for i, what in enumerate(("top", "left", "flip")):
        table = np.stack(
            [np.bincount(per_path[p][i].astype(int), minlength=SIDE - size + 1) for p in ("files", "decoded")]
        )
        table = table[:, table.sum(0) > 0]
        assert stats.chi2_contingency(table).pvalue > 1e-3, (what, table)


def test_center_crop_and_no_flip_are_honoured(coords: str, tmp_path: Path) -> None:
    ds = ImageDataset(_cfg(coords, tmp_path, size=15, load_size=SIDE, crop="center", flip=False))
    top, left, flipped = (
        np.concatenate(v) for v in zip(*[_geometry_of(b, 15) for b in _take(_decoded(ds, 20), 4)], strict=True)
    )
    assert set(top.tolist()) == set(left.tolist()) == {(SIDE - 15) // 2} and not flipped.any()


# ---- (c) exact resume, shards ---------------------------------------------------------------------------------------


def _ids(batch: dict[str, torch.Tensor]) -> list[int]:
    """The image numbers in a coordinate-image batch (B channel = 5 i)."""
    return (((batch["image"][:, 2, 0, 0] + 1) * 127.5).round().long() // 5).tolist()


@pytest.mark.timeout(60)
def test_resume_is_bit_exact_across_an_epoch_boundary_with_disjoint_shards(coords: str, tmp_path: Path) -> None:
    ds = ImageDataset(_cfg(coords, tmp_path, size=16))  # random crops and flips
    for rank in range(2):  # 40 images, 2 workers, batch 4: 5 batches per epoch
        full = _take(_decoded(ds, 4, rank=rank, world=2, seed=11), 9)
        first = _decoded(ds, 4, rank=rank, world=2, seed=11)
        _take(first, 3)
        assert first.state_dict() == {"epoch": 0, "batch": 3}
        resumed = _decoded(ds, 4, rank=rank, world=2, seed=11, **first.state_dict())
        rest = _take(resumed, 6)
        assert resumed.state_dict() == {"epoch": 1, "batch": 4}
        for a, b in zip(full[3:], rest, strict=True):
            assert all(torch.equal(a[k], b[k]) for k in a)
    # the same samples in the same order as the per-file path, and the two ranks' shards of an epoch are disjoint
    shards = []
    for rank in range(2):
        got = [i for b in _take(_decoded(ds, 4, rank=rank, world=2, seed=11), 5) for i in _ids(b)]
        want = [i for b in _take(BatchStream(ds, 4, rank=rank, world=2, seed=11), 5) for i in _ids(b)]
        assert got == want
        shards.append(set(got))
    assert not shards[0] & shards[1] and shards[0] | shards[1] == set(range(40))


# ---- (d) store keying -----------------------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_an_overwritten_dataset_gets_a_new_store(tmp_path: Path) -> None:
    images, _ = coordinate_images(8)
    uri = write_dataset(tmp_path / "ds", images, tag="v1")
    cache = tmp_path / "cache"
    old, built = open_store(ImageDataset(_cfg(uri, cache)))
    assert built and old.images["image"][3, 0, 0, 2] == 15
    write_dataset(tmp_path / "ds", [255 - a for a in images], tag="v2")  # same names, new contents and manifest
    ds = ImageDataset(_cfg(uri, cache))
    new, built = open_store(ds)
    assert built and new.path != old.path and not old.path.exists(), "the old version is removed, never read"
    assert new.images["image"][3, 0, 0, 2] == 240
    batch = _take(_decoded(ds, 8, seed=0), 1)[0]
    assert sorted(_ids({"image": -batch["image"]})) == list(range(8)), "batches come from the new version"
    again, built = open_store(ImageDataset(_cfg(uri, cache)))
    assert not built and again.path == new.path, "an unchanged dataset reuses its store"
    # other load sizes and channel counts are other stores
    other, built = open_store(ImageDataset(_cfg(uri, cache, size=16, load_size=18, channels=1)))
    assert built and other.path != new.path and other.images["image"].shape == (8, 18, 18, 1)


def test_a_crashed_build_is_never_read(tmp_path: Path) -> None:
    images, _ = coordinate_images(6)
    images[4] = np.zeros((SIDE, SIDE, 3), np.uint8)
    uri = write_dataset(tmp_path / "ds", images)
    (tmp_path / "ds" / "train" / "0004.png").write_bytes(b"not an image")
    ds = ImageDataset(_cfg(uri, tmp_path / "cache"))
    with pytest.raises(RuntimeError, match=re.escape("0004.png")):
        open_store(ds)
    root = tmp_path / "cache" / "decoded"
    assert [p.name for p in root.iterdir() if not p.name.endswith(".lock")] == [], "no store, no temp folder left"


# ---- (e) concurrent builds ------------------------------------------------------------------------------------------


def _build_in_child(uri: str, cache: str, barrier: object, out: object) -> None:
    """In a spawned process: wait for the other, then open (build or reuse) the store; report what it read."""
    import gansvc.data.decoded as dec
    from gansvc.data.pipeline import DataConfig as Cfg
    from gansvc.data.pipeline import ImageDataset as Ds

    write = dec._write_store

    def slow_write(ds: Ds, tmp: Path, threads: int) -> dict[str, Any]:  # a slow build: both processes overlap in it
        time.sleep(1.0)
        return write(ds, tmp, threads)

    dec._write_store = slow_write
    ds = Ds(Cfg(uri=uri, cache_dir=cache))
    barrier.wait()  # type: ignore[attr-defined]
    store, built = dec.open_store(ds)
    digest = hashlib.sha256(np.ascontiguousarray(store.images["image"]).tobytes()).hexdigest()
    out.put((str(store.path), built, digest))  # type: ignore[attr-defined]


@pytest.mark.timeout(180)  # two spawned interpreters importing torch: ~30 s on 2 loaded cores
def test_two_processes_build_one_store(coords: str, tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_build_in_child, args=(coords, str(tmp_path), barrier, out)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [out.get(timeout=150) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    assert results[0][0] == results[1][0], "one store"
    assert sorted(r[1] for r in results) == [False, True], "built once, reused by the other process"
    assert results[0][2] == results[1][2]
    stores = [p for p in (tmp_path / "decoded").iterdir() if p.is_dir()]
    assert len(stores) == 1


# ---- (f) data.cache -------------------------------------------------------------------------------------------------


def test_auto_decoded_files_choice_and_message(
    coords: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ds = ImageDataset(_cfg(coords, tmp_path))
    s = open_stream(ds, 4)
    s.close()
    err = capsys.readouterr().err
    assert isinstance(s, DecodedBatchStream)
    assert "[gansvc] data: decoded store (40 images, " in err and "at 20x20" in err and "built in" in err
    s = open_stream(ds, 4)
    s.close()
    assert "reused" in capsys.readouterr().err

    # 10 kB: smaller than this store (64 kB: 40 x 20 x 20 x (3 + 1 for the mask), plus the labels)
    monkeypatch.setenv("GANSVC_DECODED_MAX_GB", "0.00001")
    s = open_stream(ds, 4)
    s.close()
    assert type(s) is BatchStream
    err = capsys.readouterr().err
    assert "per-file path: the decoded store would need 6.43e-05 GB > budget 1e-05 GB" in err
    assert "set GANSVC_DECODED_MAX_GB or data.cache=decoded" in err
    forced = ImageDataset(_cfg(coords, tmp_path, cache="decoded"))
    s = open_stream(forced, 4)  # decoded ignores the budget
    s.close()
    assert isinstance(s, DecodedBatchStream)
    s = open_stream(ImageDataset(_cfg(coords, tmp_path, cache="files")), 4)
    s.close()
    assert type(s) is BatchStream
    assert "per-file path (data.cache=files)" in capsys.readouterr().err

    monkeypatch.setenv("GANSVC_DECODED_MAX_GB", "lots")
    with pytest.raises(ValueError, match="GANSVC_DECODED_MAX_GB='lots'"):
        open_stream(ds, 4)


def test_decoded_that_cannot_fit_is_a_clear_error(coords: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decoded, "free_bytes", lambda path: 10**6)  # a full disk (no store built yet)
    forced = ImageDataset(_cfg(coords, tmp_path, cache="decoded"))
    with pytest.raises(ValueError, match=r"data.cache=decoded cannot be used .* has 0.001 GB free .* data.cache=files"):
        open_stream(forced, 4)
    auto = ImageDataset(_cfg(coords, tmp_path))
    s = open_stream(auto, 4)
    s.close()
    assert type(s) is BatchStream
    no_cache = ImageDataset(DataConfig(uri=coords, cache_dir="", cache="decoded"))
    with pytest.raises(ValueError, match='cache_dir is ""'):
        open_stream(no_cache, 4)


def test_the_option_is_set_from_the_command_line() -> None:
    from gansvc.config import parse_set

    key, value = parse_set("data.cache=decoded")
    assert key == "data.cache" and DataConfig(uri="s3://b/d", cache=value).cache == "decoded"
    with pytest.raises(ValueError, match="cache"):
        DataConfig(uri="s3://b/d", cache="sometimes")  # type: ignore[arg-type]
