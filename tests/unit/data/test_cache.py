"""The node-local byte cache and the readers of versioned datasets (issue 13, points 3 and 4; reader side of 2).

Datasets here are written by hand (storage.write_bytes + a manifest), so each test controls exactly which bytes sit at
which key and what the manifest says: versioned files under `files_root`, an overwrite at the same URIs, the same
bucket/key on a second real S3 endpoint (a second embedded SeaweedFS). Every test points GANSVC_CACHE_DIR at its
own temp folder: nothing is written to the real ~/.cache.
"""

from __future__ import annotations

import io
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gansvc import local, storage
from gansvc.data.manifest import Manifest, SplitInfo
from gansvc.data.pipeline import (
    ByteSource,
    DataConfig,
    ImageDataset,
    UnsafePathError,
    cache_max_bytes,
)
from gansvc.metrics.reference import reference_stats

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The default cache (GANSVC_CACHE_DIR) in this test's temp folder, the default cap; removed afterwards."""
    home = tmp_path / "gansvc-cache"
    monkeypatch.setenv("GANSVC_CACHE_DIR", str(home))
    monkeypatch.delenv("GANSVC_CACHE_MAX_GB", raising=False)
    yield home
    shutil.rmtree(home, ignore_errors=True)


def png(value: int, size: int = 8, mode: str = "RGB") -> bytes:
    """A flat image: every pixel (every channel) is `value`, so a decoded tensor says which file it came from."""
    buf = io.BytesIO()
    Image.new(mode, (size, size), value if mode == "L" else (value, value, value)).save(buf, "PNG")
    return buf.getvalue()


def write_dataset(
    root: str,
    files: dict[str, bytes],
    files_root: str = "",
    fingerprint: str = "fp",
    created: str = "2026-01-01T00:00:00+00:00",
    masks: dict[str, str] | None = None,
    num_classes: int = 0,
    attributes: dict[str, list[str]] | None = None,
    labels: dict[str, list[str]] | None = None,
) -> Manifest:
    """Files (images of split `train`, plus any mask files) under `root/files_root/`, then manifest.json (last)."""
    base = storage.parse_uri(root)
    for rel, data in files.items():
        storage.write_bytes(base.join(files_root, rel).uri(), data)
    images = [r for r in files if r.startswith("train/")]
    split = SplitInfo(
        count=len(images), files=images, sizes={"8x8": len(images)}, modes={"RGB": len(images)}, masks=masks or {}
    )
    m = Manifest(
        layout="single",
        splits={"train": split},
        channels=3,
        fingerprint=fingerprint,
        files_root=files_root,
        created=created,
        num_classes=num_classes,
        attributes=attributes or {},
        labels=labels or {},
    )
    storage.write_json(base.join("manifest.json").uri(), m.model_dump(mode="json"))
    return m


def values_read(ds: ImageDataset) -> dict[str, int]:
    """file -> the (flat) pixel value the pipeline decoded for it, as uint8."""
    out = {}
    for sample in ds.epoch_samples(0, 0, 0, 1):
        x = ds.load_sample(sample, np.random.default_rng(0))["image"]
        vals = set(((x + 1) * 127.5).round().int().unique().tolist())
        assert len(vals) == 1, vals
        out[sample.files["image"]] = vals.pop()
    return out


def flat(n: int, value: int) -> dict[str, bytes]:
    return {f"train/{i}.png": png(value + i) for i in range(n)}


# ---- A: readers resolve files through the manifest's version ----------------------------------------------------


@pytest.mark.parametrize("cache", ["", "tmp"])
def test_reads_files_masks_and_labels_of_the_manifests_version(s3_prefix: str, tmp_path: Path, cache: str) -> None:
    files = flat(4, 10)
    masks = {f"train/{i}.png": f"train_masks/{i}.png" for i in range(4)}
    mask_files = {f"train_masks/{i}.png": png(i % 3, mode="L") for i in range(4)}
    labels = {f"train/{i}.png": ["odd" if i % 2 else "even"] for i in range(4)}
    # a stale layout at the dataset root (what an unversioned reader would read), then the version under .v/abc
    for rel, data in {**flat(4, 200), **{k: png(2, mode="L") for k in mask_files}}.items():
        storage.write_bytes(f"{s3_prefix}/{rel}", data)
    write_dataset(
        s3_prefix,
        {**files, **mask_files},
        files_root=".v/abc",
        masks=masks,
        num_classes=3,
        attributes={"parity": ["even", "odd"]},
        labels=labels,
    )
    ds = ImageDataset(DataConfig(uri=s3_prefix, flip=False, cache_dir=str(tmp_path / "c") if cache else ""))
    assert values_read(ds) == {f"train/{i}.png": 10 + i for i in range(4)}
    for sample in ds.epoch_samples(0, 0, 0, 1):
        item = ds.load_sample(sample, np.random.default_rng(0))
        i = int(Path(sample.files["image"]).stem)
        assert item["mask"].unique().tolist() == [i % 3], "the mask of this version, not the root's"
        assert item["labels"].tolist() == [i % 2]


def test_a_reader_keeps_reading_the_version_it_opened(s3_prefix: str, tmp_path: Path) -> None:
    write_dataset(s3_prefix, flat(3, 50), files_root=".v/v1", fingerprint="f1")
    old = ImageDataset(DataConfig(uri=s3_prefix, flip=False, cache_dir=str(tmp_path / "c")))
    write_dataset(s3_prefix, flat(3, 150), files_root=".v/v2", fingerprint="f2")  # switched after `old` opened
    assert set(values_read(old).values()) == {50, 51, 52}, "cold cache: read after the switch, still version 1"
    new = ImageDataset(DataConfig(uri=s3_prefix, flip=False, cache_dir=str(tmp_path / "c")))
    assert set(values_read(new).values()) == {150, 151, 152}


def test_local_dataset_reads_its_version(tmp_path: Path) -> None:
    root = str(tmp_path / "ds")
    for rel, data in flat(2, 99).items():  # stale files at the root
        storage.write_bytes(f"{root}/{rel}", data)
    write_dataset(root, flat(2, 30), files_root=".v/abc")
    assert values_read(ImageDataset(DataConfig(uri=root, flip=False))) == {"train/0.png": 30, "train/1.png": 31}


# ---- B: cache entries are keyed by content and endpoint, capped, LRU --------------------------------------------


def test_overwritten_dataset_at_the_same_uris_is_not_served_from_the_cache(s3_prefix: str, tmp_path: Path) -> None:
    cache = str(tmp_path / "c")
    write_dataset(s3_prefix, flat(3, 10), fingerprint="f1")  # unversioned (files at the root): same URIs below
    assert set(values_read(ImageDataset(DataConfig(uri=s3_prefix, flip=False, cache_dir=cache))).values()) == {
        10,
        11,
        12,
    }
    write_dataset(s3_prefix, flat(3, 90), fingerprint="f2", created="2026-02-02T00:00:00+00:00")
    again = ImageDataset(DataConfig(uri=s3_prefix, flip=False, cache_dir=cache))
    assert set(values_read(again).values()) == {90, 91, 92}, "the new bytes, not the cached old ones"
    assert len([d for d in Path(cache).iterdir() if d.is_dir()]) == 2, "one cache entry per dataset version"


def test_same_bucket_and_key_on_two_endpoints_never_share_cache_entries(
    stack: local.StackState, s3_prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.conftest import free_port_base  # the module pytest loaded (tests/ is a package)

    cache = str(tmp_path / "c")
    same = {"fingerprint": "fp", "files_root": "", "created": "2026-01-01T00:00:00+00:00"}
    write_dataset(s3_prefix, flat(2, 30), **same)
    first = ImageDataset(DataConfig(uri=s3_prefix, flip=False, cache_dir=cache))
    assert set(values_read(first).values()) == {30, 31}
    other_dir = Path(tempfile.mkdtemp(prefix="gs2-"))
    try:
        other = local.up(other_dir, port_base=free_port_base(), bucket=stack.bucket, with_ray=False, timeout=60)
        for k, v in other.env().items():
            if k.startswith("AWS_"):
                monkeypatch.setenv(k, v)
        # the same bucket, key and an identical manifest; only the bytes (and the endpoint) differ
        write_dataset(s3_prefix, flat(2, 130), **same)
        second = ImageDataset(DataConfig(uri=s3_prefix, flip=False, cache_dir=cache))
        assert second.manifest == first.manifest
        assert set(values_read(second).values()) == {130, 131}, "bytes of the other endpoint's object"
    finally:
        local.down(other_dir)
        shutil.rmtree(other_dir, ignore_errors=True)


def _blobs(prefix: str, n: int, size: int = 1000) -> dict[str, bytes]:
    blobs = {f"train/{i}.bin": bytes([i]) * size for i in range(n)}
    for rel, data in blobs.items():
        storage.write_bytes(f"{prefix}/{rel}", data)
    return blobs


def _cached(src: ByteSource) -> set[str]:
    assert src.cache is not None
    return {p.relative_to(src.cache.dir).as_posix() for p in src.cache.dir.rglob("*.bin") if p.is_file()}


def test_default_cache_dir_and_cap_come_from_the_environment(
    s3_prefix: str, cache_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_dataset(s3_prefix, flat(1, 0))
    src = ByteSource(s3_prefix)
    assert src.cache is not None and src.cache.dir.parent == (cache_home / "data").resolve()
    assert not src.cache.dir.is_relative_to(Path.home() / ".cache")
    assert src.cache.max_bytes == 20 * 10**9
    monkeypatch.setenv("GANSVC_CACHE_MAX_GB", "0.0000035")
    assert ByteSource(s3_prefix).cache.max_bytes == 3500  # type: ignore[union-attr]
    for bad in ("0", "-1", "lots", "inf"):
        monkeypatch.setenv("GANSVC_CACHE_MAX_GB", bad)
        with pytest.raises(ValueError, match="GANSVC_CACHE_MAX_GB"):
            cache_max_bytes()


def test_least_recently_used_files_are_evicted_over_the_cap(
    s3_prefix: str, cache_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blobs = _blobs(s3_prefix, 6)
    write_dataset(s3_prefix, flat(1, 0))
    monkeypatch.setenv("GANSVC_CACHE_MAX_GB", "0.0000035")  # 3500 bytes: three of the 1000-byte files
    src = ByteSource(s3_prefix)
    assert src.cache is not None
    # not ours, and a file being written: eviction never touches either
    foreign = cache_home / "data" / "someone-elses" / "keep.bin"
    foreign.parent.mkdir(parents=True)
    foreign.write_bytes(b"x" * 5000)
    writing = src.cache.dir / "train" / ".9.bin.123.456.tmp"
    writing.parent.mkdir(parents=True)
    writing.write_bytes(b"y" * 5000)

    def read(i: int) -> None:
        assert src.read(f"train/{i}.bin") == blobs[f"train/{i}.bin"]
        time.sleep(0.05)  # file times tick in milliseconds: keep the order of use unambiguous

    for i in (0, 1, 2):
        read(i)
    assert _cached(src) == {"train/0.bin", "train/1.bin", "train/2.bin"}
    read(0)  # a hit: 0 becomes the most recently used
    read(3)  # 4000 bytes > 3500: the least recently used (1) goes
    assert _cached(src) == {"train/0.bin", "train/2.bin", "train/3.bin"}
    read(4)
    read(5)
    assert _cached(src) == {"train/3.bin", "train/4.bin", "train/5.bin"}
    assert foreign.exists() and writing.exists()
    assert src.read("train/1.bin") == blobs["train/1.bin"], "an evicted file is fetched again"


@pytest.mark.timeout(180)
def test_processes_sharing_a_small_cache_read_correct_bytes(
    s3_prefix: str, cache_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """This process and another one (four threads each) read 30 files in shuffled orders through one cache capped
    at ~5 files: evictions run while the other process reads and writes; every read returns the object's bytes."""
    _blobs(s3_prefix, 30)
    write_dataset(s3_prefix, flat(1, 0))
    monkeypatch.setenv("GANSVC_CACHE_MAX_GB", "0.0000055")
    script = (
        "import random, sys\n"
        "from concurrent.futures import ThreadPoolExecutor\n"
        "from gansvc.data.pipeline import ByteSource\n"
        "src = ByteSource(sys.argv[1])\n"
        "print('READY', flush=True)\n"
        "sys.stdin.readline()\n"
        "rels = [f'train/{i}.bin' for i in range(30)] * 4\n"
        "random.Random(int(sys.argv[2])).shuffle(rels)\n"
        "bad = [r for r, d in zip(rels, ThreadPoolExecutor(4).map(src.read, rels))"
        " if d != bytes([int(r[6:-4])]) * 1000]\n"
        "print('BAD', bad) if bad else print('OK')\n"
    )
    other = subprocess.Popen(
        [sys.executable, "-c", script, s3_prefix, "1"],
        text=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert other.stdout is not None and other.stdin is not None
        assert other.stdout.readline().strip() == "READY", other.stderr.read() if other.poll() is not None else ""
        src = ByteSource(s3_prefix)
        rels = [f"train/{i}.bin" for i in range(30)] * 4
        random.Random(2).shuffle(rels)
        other.stdin.write("go\n")
        other.stdin.flush()
        with ThreadPoolExecutor(4) as pool:
            got = list(pool.map(src.read, rels))
        out, err = other.communicate(timeout=120)
    finally:
        if other.poll() is None:
            other.kill()
            other.wait()
    assert [r for r, d in zip(rels, got, strict=True) if d != bytes([int(r[6:-4])]) * 1000] == []
    assert other.returncode == 0 and out.strip() == "OK", (out, err[-2000:])
    assert src.cache is not None
    cached = sum(f.stat().st_size for f in src.cache.dir.rglob("*.bin"))
    assert 0 < cached <= 5500, "the cache is within its cap once the last writer has evicted"
    assert not list(src.cache.dir.rglob("*.tmp")), "no temp file left behind"


@pytest.mark.parametrize("overwrite", ["same-uris", "new-version"])
def test_reference_statistics_follow_the_dataset_version(s3_prefix: str, tmp_path: Path, overwrite: str) -> None:
    """Both overwrites keep the source fingerprint ("fp") but change the bytes: statistics are recomputed."""
    roots = ("", "") if overwrite == "same-uris" else (".v/aaa", ".v/bbb")
    write_dataset(s3_prefix, flat(4, 40), files_root=roots[0], created="2026-01-01T00:00:00+00:00")
    cfg = DataConfig(uri=s3_prefix, cache_dir=str(tmp_path / "c"))
    first = reference_stats(cfg, None, max_samples=4, quiet=True)
    assert not first.from_cache and set(np.unique(first.swd_images).tolist()) == {40, 41, 42, 43}
    assert reference_stats(cfg, None, max_samples=4, quiet=True).from_cache
    write_dataset(s3_prefix, flat(4, 140), files_root=roots[1], created="2026-02-02T00:00:00+00:00")
    second = reference_stats(cfg, None, max_samples=4, quiet=True)
    assert not second.from_cache and second.uri != first.uri
    assert set(np.unique(second.swd_images).tolist()) == {140, 141, 142, 143}


# ---- D: unsafe names never leave the dataset or the cache folder -------------------------------------------------

BAD_NAMES = [
    "../escape.bin",
    "train/../../escape.bin",
    "/etc/passwd",
    "train//0.png",
    "train\\0.png",
    "./train/0.png",
    "",
    "train/0.png/..",
]


def _files_under(path: Path) -> set[str]:
    return {p.relative_to(path).as_posix() for p in path.rglob("*")}


def test_unsafe_names_are_refused_before_any_read_or_cache_write(s3_prefix: str, tmp_path: Path) -> None:
    write_dataset(s3_prefix, flat(1, 0))
    storage.write_bytes(f"{s3_prefix.rsplit('/', 1)[0]}/escape.bin", b"outside the dataset")
    before = _files_under(tmp_path)
    src = ByteSource(s3_prefix, str(tmp_path / "c"))
    for bad in BAD_NAMES:
        with pytest.raises(UnsafePathError, match="unsafe file"):
            src.read(bad)
        with pytest.raises(UnsafePathError):
            src.warm([bad])
    assert _files_under(tmp_path) == before, "nothing written anywhere"


def test_a_symlink_in_the_cache_never_redirects_a_write(s3_prefix: str, tmp_path: Path) -> None:
    write_dataset(s3_prefix, flat(1, 0))
    src = ByteSource(s3_prefix, str(tmp_path / "c"))
    assert src.cache is not None
    outside = tmp_path / "outside"
    outside.mkdir()
    src.cache.dir.mkdir(parents=True)
    (src.cache.dir / "train").symlink_to(outside)  # planted: train/0.png would land in `outside`
    with pytest.raises(UnsafePathError, match="outside the cache folder"):
        src.read("train/0.png")
    assert not list(outside.iterdir())


def test_local_dataset_reads_never_leave_the_dataset(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    write_dataset(str(root), flat(1, 0))
    (tmp_path / "secret.txt").write_text("not part of the dataset")
    src = ByteSource(str(root))
    for bad in ("../secret.txt", str(tmp_path / "secret.txt"), "train/../../secret.txt"):
        with pytest.raises(UnsafePathError):
            src.read(bad)


def test_an_unsafe_files_root_is_refused(s3_prefix: str, tmp_path: Path) -> None:
    good = write_dataset(s3_prefix, flat(1, 0))
    for bad in ("..", "../other", "/abs", ".v//x"):
        with pytest.raises(UnsafePathError, match="files_root"):
            ByteSource(s3_prefix, str(tmp_path / "c"), manifest=good.model_copy(update={"files_root": bad}))
