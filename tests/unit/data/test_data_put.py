"""`gansvc.data put/synth/info` against the real S3 server: validation, manifest, idempotence, resume, zips, URLs."""

from __future__ import annotations

import functools
import http.server
import io
import os
import subprocess
import sys
import threading
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gansvc import storage
from gansvc.data.ingest import DatasetError, fingerprint, open_source, put
from gansvc.data.manifest import read_manifest, version_root
from gansvc.data.synth import synth


def _png(path: Path, size: tuple[int, int] = (16, 16), mode: str = "RGB", seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)


def make_folder(root: Path) -> Path:
    """train/: 4 valid RGB pngs, 1 grayscale jpg of another size, a truncated png and a text file; test/: 2 pngs."""
    for i in range(4):
        _png(root / "train" / f"img{i}.png", seed=i)
    gray = Image.fromarray(np.full((20, 24), 128, np.uint8), "L")
    gray.save(root / "train" / "gray.jpg")
    good = io.BytesIO()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(good, format="PNG")
    (root / "train" / "broken.png").write_bytes(good.getvalue()[:40])  # truncated: header only
    (root / "train" / "notes.txt").write_text("not an image")
    for i in range(2):
        _png(root / "test" / f"t{i}.png", seed=10 + i)
    return root


def test_put_folder_validates_and_writes_manifest(tmp_path: Path, s3_prefix: str) -> None:
    src = make_folder(tmp_path / "src")
    result = put(str(src), s3_prefix, quiet=True)
    m = read_manifest(s3_prefix)
    assert result.manifest == m
    assert m.layout == "single"
    assert m.splits["train"].count == 5 and m.splits["test"].count == 2
    assert m.splits["train"].sizes == {"16x16": 4, "24x20": 1}
    assert m.splits["train"].modes == {"RGB": 4, "L": 1}
    assert m.channels == 3
    reasons = {s.path: s.reason for s in m.skipped}
    assert set(reasons) == {"train/broken.png", "train/notes.txt"}
    assert "corrupt" in reasons["train/broken.png"] and "not an image" in reasons["train/notes.txt"]
    assert not any("BytesIO" in r or " at 0x" in r for r in reasons.values()), reasons  # words, not object addresses
    # skipped files are not uploaded; valid ones are, byte for byte, in the version's folder
    keys = {o.rel for o in storage.list_objects(s3_prefix)}
    assert m.files_root == version_root(m.fingerprint) and m.files_root.startswith(".v/")
    assert m.object_rel("train/broken.png") not in keys and m.object_rel("train/notes.txt") not in keys
    assert "train/broken.png" not in keys and "train/notes.txt" not in keys
    assert keys == {m.object_rel(rel) for rel in m.stored_files()} | {"manifest.json"}
    assert (
        storage.read_bytes(f"{s3_prefix}/{m.object_rel('train/img0.png')}") == (src / "train" / "img0.png").read_bytes()
    )


def test_reput_same_source_is_a_noop(tmp_path: Path, s3_prefix: str) -> None:
    src = make_folder(tmp_path / "src")
    put(str(src), s3_prefix, quiet=True)
    before = storage.read_bytes(f"{s3_prefix}/manifest.json")
    again = put(str(src), s3_prefix, quiet=True)
    assert again.up_to_date and again.uploaded == 0
    assert storage.read_bytes(f"{s3_prefix}/manifest.json") == before


def test_interrupted_put_completes_on_rerun(tmp_path: Path, s3_prefix: str) -> None:
    """Simulate a put killed mid-upload: some objects in its version folder, no manifest. The re-run uploads only the
    rest. (tests/unit/data/test_data_safety.py kills real put processes.)"""
    src = make_folder(tmp_path / "src")
    with open_source(str(src)) as source:
        vroot = f"{s3_prefix}/{version_root(fingerprint(source.files))}"
    storage.write_bytes(f"{vroot}/train/img0.png", (src / "train" / "img0.png").read_bytes())
    storage.write_bytes(f"{vroot}/train/img1.png", (src / "train" / "img1.png").read_bytes())
    storage.write_bytes(f"{vroot}/train/img2.png", b"half-written garbage")  # differs: must be re-sent
    with pytest.raises(storage.StorageError, match="not a gansvc dataset"):
        read_manifest(s3_prefix)  # readers never see the unfinished dataset
    result = put(str(src), s3_prefix, quiet=True)
    assert result.reused == 2 and result.uploaded == 5  # img2, img3, gray, test x2
    assert storage.read_bytes(f"{vroot}/train/img2.png") == (src / "train" / "img2.png").read_bytes()
    assert read_manifest(s3_prefix).splits["train"].count == 5


def test_different_dataset_needs_overwrite(tmp_path: Path, s3_prefix: str) -> None:
    put(str(make_folder(tmp_path / "one")), s3_prefix, quiet=True)
    other = tmp_path / "two"
    _png(other / "train" / "x.png", seed=99)
    with pytest.raises(DatasetError, match="--overwrite"):
        put(str(other), s3_prefix, quiet=True)
    new = put(str(other), s3_prefix, overwrite=True, quiet=True).manifest
    keys = {o.rel for o in storage.list_objects(s3_prefix)}
    assert keys == {new.object_rel("train/x.png"), "manifest.json"}, "overwrite removes the old dataset's objects"


def _official_zip(tmp_path: Path) -> Path:
    """A zip laid out like the official CycleGAN ones: horse2zebra/trainA/..., with a macOS folder to ignore."""
    path = tmp_path / "tiny2zebra.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for split, n in (("trainA", 3), ("trainB", 2), ("testA", 1), ("testB", 1)):
            for i in range(n):
                buf = io.BytesIO()
                Image.fromarray(np.full((8, 12, 3), 40 * i, np.uint8)).save(buf, format="JPEG")
                zf.writestr(f"tiny2zebra/{split}/{i}.jpg", buf.getvalue())
        zf.writestr("__MACOSX/tiny2zebra/._junk", b"junk")
    return path


def test_put_zip_official_layout(tmp_path: Path, s3_prefix: str) -> None:
    put(str(_official_zip(tmp_path)), s3_prefix, quiet=True)
    m = read_manifest(s3_prefix)
    assert m.layout == "unpaired"
    assert {k: v.count for k, v in m.splits.items()} == {"trainA": 3, "trainB": 2, "testA": 1, "testB": 1}
    assert m.splits["trainA"].sizes == {"12x8": 3}
    assert storage.exists(f"{s3_prefix}/{m.object_rel('trainA/0.jpg')}") and m.skipped == []


@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real HTTP server on 127.0.0.1 serving a folder."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()


def test_put_url_of_zip(
    tmp_path: Path, s3_prefix: str, http_dir: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, root = http_dir
    monkeypatch.setenv("GANSVC_CACHE_DIR", str(tmp_path / "cache"))
    _official_zip(tmp_path).rename(root / "tiny2zebra.zip")
    put(f"{url}/tiny2zebra.zip", s3_prefix, quiet=True)
    assert read_manifest(s3_prefix).splits["trainB"].count == 2
    with pytest.raises(DatasetError, match="cannot download"):
        put(f"{url}/missing.zip", f"{s3_prefix}-2", quiet=True)


def _labelled(root: Path, csv_text: str) -> Path:
    for i in range(3):
        _png(root / "train" / f"{i}.png", seed=i)
    (root / "labels.csv").write_text(csv_text)
    return root


def test_labels_csv(tmp_path: Path, s3_prefix: str) -> None:
    src = _labelled(
        tmp_path / "src", "file,hair_color,eye_color\ntrain/0.png,blue,red\n1.png,blonde,red\n2.png,blue,green\n"
    )
    put(str(src), s3_prefix, quiet=True)
    m = read_manifest(s3_prefix)
    assert m.attributes == {"hair_color": ["blonde", "blue"], "eye_color": ["green", "red"]}
    assert m.labels == {
        "train/0.png": ["blue", "red"],
        "train/1.png": ["blonde", "red"],
        "train/2.png": ["blue", "green"],
    }
    assert storage.exists(f"{s3_prefix}/{m.object_rel('labels.csv')}")


@pytest.mark.parametrize(
    ("csv_text", "message"),
    [
        ("file,hair\n", "no rows"),
        ("", "no rows"),
        ("file,hair\n0.png,blue\n1.png,red\n2.png,red\nghost.png,blue\n", "not in the dataset: ghost.png"),
        ("file,hair\n0.png,blue\n1.png,red\n", "no row in labels.csv: train/2.png"),
        ("file,hair\n0.png,blue,extra\n", "3 values for 2 columns"),
        ("file,hair\n0.png,\n", "empty attribute value"),
    ],
)
def test_bad_labels_are_rejected(tmp_path: Path, s3_prefix: str, csv_text: str, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        put(str(_labelled(tmp_path / "src", csv_text)), s3_prefix, quiet=True)
    assert not storage.exists(f"{s3_prefix}/manifest.json"), "a rejected dataset is never committed"


def test_labels_of_corrupt_files_are_dropped(tmp_path: Path, s3_prefix: str) -> None:
    src = _labelled(tmp_path / "src", "file,hair\n0.png,blue\n1.png,red\n2.png,red\nbad.png,red\n")
    (src / "train" / "bad.png").write_bytes(b"\x89PNG garbage")
    put(str(src), s3_prefix, quiet=True)
    m = read_manifest(s3_prefix)
    assert "train/bad.png" not in m.labels and len(m.labels) == 3
    assert [s.path for s in m.skipped] == ["train/bad.png"]


def test_source_errors(tmp_path: Path, s3_prefix: str) -> None:
    with pytest.raises(DatasetError, match="no such file"):
        put(str(tmp_path / "nowhere"), s3_prefix, quiet=True)
    only_a = tmp_path / "a"
    _png(only_a / "trainA" / "x.png")
    with pytest.raises(DatasetError, match="trainB"):
        put(str(only_a), s3_prefix, quiet=True)
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "readme.txt").write_text("x")
    with pytest.raises(DatasetError, match="no valid images"):
        put(str(junk), s3_prefix, quiet=True)


@pytest.mark.parametrize("name", ["shapes", "stripes"])
def test_synth_is_deterministic(name: str, tmp_path: Path) -> None:
    a, b = (synth(name, count=12, size=16, seed=3, out=tmp_path / d) for d in "ab")
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files_a == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files_a)
    c = synth(name, count=12, size=16, seed=4, out=tmp_path / "c")
    assert any((a / f).read_bytes() != (c / f).read_bytes() for f in files_a if f.suffix == ".png")
    with pytest.raises(ValueError, match="not empty"):
        synth(name, count=12, size=16, seed=3, out=a)


def test_synth_stripes_b_differs_from_a_in_colour_and_texture(tmp_path: Path) -> None:
    root = synth("stripes", count=40, size=32, seed=0, test_count=0, out=tmp_path / "s")

    def stats(split: str) -> tuple[float, float]:
        ims = [np.asarray(Image.open(p), np.float32) for p in sorted((root / split).glob("*.png"))]
        x = np.stack(ims)
        saturation = float((x.max(-1) - x.min(-1)).mean())
        edges = float(np.abs(np.diff(x.mean(-1), axis=2)).mean())
        return saturation, edges

    (sat_a, edge_a), (sat_b, edge_b) = stats("trainA"), stats("trainB")
    assert edge_b > 1.5 * edge_a, "B has stripes: much more horizontal texture"
    assert sat_b < sat_a, "B's stripes are black and white: less colour"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gansvc.data", *args], capture_output=True, text=True, timeout=300, env=dict(os.environ)
    )


def test_cli_synth_put_info(tmp_path: Path, s3_prefix: str) -> None:
    out = _cli("synth", "shapes", f"{s3_prefix}/shapes", "--count", "60", "--size", "16", "--quiet")
    assert out.returncode == 0, out.stderr
    assert "wrote 66 images" in out.stdout and "shape:" in out.stdout
    m = read_manifest(f"{s3_prefix}/shapes")
    assert set(m.attributes) == {"shape", "color"} and len(m.labels) == 66
    again = _cli("synth", "shapes", f"{s3_prefix}/shapes", "--count", "60", "--size", "16", "--quiet")
    assert "up to date" in again.stdout
    put_out = _cli("put", str(make_folder(tmp_path / "src")), f"{s3_prefix}/mine", "--quiet")
    assert put_out.returncode == 0, put_out.stderr
    info = _cli("info", f"{s3_prefix}/mine")
    assert info.returncode == 0 and "skipped   2 file(s)" in info.stdout and "train/notes.txt" in info.stdout
    bad = _cli("info", f"{s3_prefix}/nothing-here")
    assert bad.returncode == 2 and "not a gansvc dataset" in bad.stderr and "Traceback" not in bad.stderr


def test_info_json_leaves_file_lists_out_unless_asked_and_preview_counts_pairs(
    tmp_path: Path, synth_put: Callable[..., str], capsys: pytest.CaptureFixture[str]
) -> None:
    """`data info --json` is a summary (counts, no per-file lists) unless `--files`; `preview --n 4` of unpaired
    data says 4 pairs, not 8 images (issue 16.10)."""
    import json

    from gansvc.data.__main__ import main

    dest = synth_put("stripes", str(tmp_path / "stripes"), count=12, size=16, seed=0, test_count=2, masks=True)
    capsys.readouterr()
    assert main(["info", dest, "--json"]) == 0
    short = json.loads(capsys.readouterr().out)
    assert main(["info", dest, "--json", "--files"]) == 0
    full = json.loads(capsys.readouterr().out)
    assert full == read_manifest(dest).model_dump()  # --files: the manifest itself
    for name, split in short["splits"].items():
        assert "files" not in split and "masks" not in split
        assert split["count"] == len(full["splits"][name]["files"])
        assert split["mask_count"] == len(full["splits"][name]["masks"]) > 0
    assert "labels" not in short and short["label_count"] == len(full["labels"])
    assert main(["preview", dest, str(tmp_path / "p.png"), "--n", "4"]) == 0
    out = capsys.readouterr().out
    assert "4 pairs (row A above row B)" in out and Image.open(tmp_path / "p.png").size[1] > 0
