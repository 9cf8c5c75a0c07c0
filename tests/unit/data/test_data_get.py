"""`python -m gansvc.data get`: the catalog, verification, --from, conversion of CIFAR-10's binary format (issue 14.2).

Every download comes from a real HTTP server on 127.0.0.1 started here, serving archives written here in the exact
upstream formats: `cifar-10-binary.tar.gz` (cifar-10-batches-bin/data_batch_1..5.bin, test_batch.bin,
batches.meta.txt; records of 1 label byte + 3072 bytes of R, G, B planes) and a CycleGAN zip (horse2zebra/trainA ...
testB of JPGs). `GANSVC_DATA_MIRROR` points the catalog at that server; `--from` takes a URL or a local file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import random
import re
import socket
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gansvc import storage
from gansvc.data import catalog
from gansvc.data.__main__ import main
from gansvc.data.manifest import read_manifest

pytestmark = pytest.mark.timeout(90)

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


# ------------------------------------------------------------------------------------------------ upstream formats


def cifar_archive(per_batch: int = 3, test: int = 4, seed: int = 0) -> tuple[bytes, dict[str, tuple[int, np.ndarray]]]:
    """A cifar-10-binary.tar.gz as the publisher lays it out, and what it holds: rel -> (label, HxWx3 image)."""
    rng = np.random.default_rng(seed)
    expected: dict[str, tuple[int, np.ndarray]] = {}
    members: list[tuple[str, bytes]] = []
    for b, name in enumerate([*(f"data_batch_{i}.bin" for i in range(1, 6)), "test_batch.bin"]):
        n = test if name == "test_batch.bin" else per_batch
        raw = bytearray()
        for i in range(n):
            label = int(rng.integers(0, 10))
            planes = rng.integers(0, 256, size=(3, 32, 32), dtype=np.uint8)  # R, G, B planes, each row-major
            raw += bytes([label]) + planes.tobytes()
            rel = f"test/{i:05d}.png" if name == "test_batch.bin" else f"train/{b * 10000 + i:05d}.png"
            expected[rel] = (label, planes.transpose(1, 2, 0))
        members.append((f"cifar-10-batches-bin/{name}", bytes(raw)))
    members.append(("cifar-10-batches-bin/batches.meta.txt", ("\n".join(CLASSES) + "\n\n").encode()))
    members.append(("cifar-10-batches-bin/readme.html", b"<html>CIFAR-10</html>"))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue(), expected


def _jpg(seed: int) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(arr).save(out, "JPEG")
    return out.getvalue()


def cyclegan_zip(name: str = "horse2zebra", seed: int = 0) -> bytes:
    """NAME.zip as the CycleGAN host serves it: a top folder NAME/ holding trainA/ trainB/ testA/ testB/."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(f"{name}/", b"")
        for k, split in enumerate(("trainA", "trainB", "testA", "testB")):
            zf.writestr(f"{name}/{split}/", b"")
            for i in range(2 if split.startswith("test") else 3):
                zf.writestr(f"{name}/{split}/n0{k}_{i}.jpg", _jpg(seed * 100 + k * 10 + i))
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------ the server


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        path = self.path.partition("?")[0]
        with self.server.lock:
            self.server.requests.append((path, dict(self.headers)))
            first = sum(1 for p, _ in self.server.requests if p == path) == 1
        data = self.server.files.get(path.rsplit("/", 1)[-1])
        if data is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        rng = self.headers.get("Range")
        start = int(rng.removeprefix("bytes=").rstrip("-")) if rng else 0
        self.send_response(206 if rng else 200)
        self.send_header("Content-Length", str(len(data) - start))
        if rng:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        cutting = (path.startswith("/cut/") and self.server.cutting) or (path.startswith("/cut-once/") and first)
        cut = self.server.cut_at if cutting else None
        self.wfile.write(data[start:] if cut is None else data[start : start + cut])
        if cut is not None:  # drop the connection with the Content-Length unmet (the truncated download)
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.files: dict[str, bytes] = {}
        # /cut/NAME sends `cut_at` bytes of each response while `cutting` is set; /cut-once/NAME on its first request
        self.cutting = True
        self.cut_at = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"

    def hits(self, path: str) -> list[dict[str, str]]:
        with self.lock:
            return [h for p, h in self.requests if p == path]


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)


@pytest.fixture
def env(server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> _Server:
    """A fresh download cache, no GANSVC_STORAGE, and the catalog pointed at the local server."""
    monkeypatch.setenv("GANSVC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("GANSVC_STORAGE", raising=False)
    monkeypatch.setenv(catalog.MIRROR_ENV, server.url("/mirror/"))
    return server


def _pin_cifar(monkeypatch: pytest.MonkeyPatch, archive: bytes) -> None:
    """The catalog pins the publisher's MD5; this test's archive is another file, so pin its MD5 instead."""
    e = catalog.CATALOG["cifar10"]
    monkeypatch.setitem(catalog.CATALOG, "cifar10", dataclasses.replace(e, md5=hashlib.md5(archive).hexdigest()))


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(["get", *args, "--quiet"] if args and args[0] != "--list" else ["get", *args])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err


def _records(tmp_path: Path) -> dict[str, dict[str, str]]:
    return json.loads((tmp_path / "cache" / "downloads" / "catalog-sha256.json").read_text())


# ------------------------------------------------------------------------------------------------ tests


def test_cifar10_from_catalog_url_parses_every_record(
    env: _Server, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data, expected = cifar_archive()
    env.files["cifar-10-binary.tar.gz"] = data
    _pin_cifar(monkeypatch, data)
    dest = tmp_path / "cifar"
    rc, out, err = _run(capsys, "cifar10", str(dest))
    assert rc == 0, err
    assert len(env.hits("/mirror/cifar-10-binary.tar.gz")) == 1
    m = read_manifest(str(dest))
    assert m.layout == "single" and m.splits["train"].count == 15 and m.splits["test"].count == 4
    assert m.attributes == {"class": sorted({CLASSES[label] for label, _ in expected.values()})}
    assert m.source == catalog.source_id("cifar10", hashlib.sha256(data).hexdigest())
    # parse-equality: every image pixel for pixel, every label by its name in batches.meta.txt
    assert set(m.labels) == set(expected) == set(m.splits["train"].files) | set(m.splits["test"].files)
    for rel, (label, image) in expected.items():
        with Image.open(dest / m.object_rel(rel)) as im:
            assert im.mode == "RGB" and np.array_equal(np.asarray(im), image), rel
        assert m.labels[rel] == [CLASSES[label]]
    assert "flip is right" in out
    # a re-run on the up-to-date destination: no request, no conversion, no write
    rc, out, _ = _run(capsys, "cifar10", str(dest))
    assert rc == 0 and "up to date" in out
    assert len(env.hits("/mirror/cifar-10-binary.tar.gz")) == 1
    assert read_manifest(str(dest)).created == m.created
    # data info: the manifest names the catalog entry, so the advice is the entry's
    assert main(["info", str(dest)]) == 0
    assert "advice    augmentation: cifar10: a random horizontal flip is right" in capsys.readouterr().out


def test_pinned_md5_mismatch_is_refused_and_nothing_is_written(
    env: _Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, _ = cifar_archive()
    env.files["cifar-10-binary.tar.gz"] = data  # not the publisher's file: the pinned MD5 refuses it
    dest = tmp_path / "cifar"
    rc, _, err = _run(capsys, "cifar10", str(dest))
    assert rc == 2
    assert "c32a1d4ab5d03f1284b67883e8d87530" in err and hashlib.md5(data).hexdigest() in err
    assert "--skip-checksum" in err and "Nothing was written" in err
    assert not dest.exists()
    cached = [p.name for p in (tmp_path / "cache" / "downloads").rglob("*") if p.is_file()]
    assert not [n for n in cached if not n.endswith(".lock")], cached  # the bad download is not cached
    # the same file from a local copy: refused the same way
    local = tmp_path / "cifar-10-binary.tar.gz"
    local.write_bytes(data)
    rc, _, err = _run(capsys, "cifar10", str(dest), "--from", str(local))
    assert rc == 2 and "c32a1d4ab5d03f1284b67883e8d87530" in err and not dest.exists()
    # --skip-checksum takes it
    rc, _, err = _run(capsys, "cifar10", str(dest), "--from", str(local), "--skip-checksum")
    assert rc == 0, err
    assert read_manifest(str(dest)).splits["train"].count == 15


def test_cyclegan_zip_from_file_records_sha256_and_refuses_another_copy(
    env: _Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "horse2zebra.zip"
    good.write_bytes(cyclegan_zip())
    rc, _out, err = _run(capsys, "horse2zebra", str(tmp_path / "h2z"), "--from", str(good))
    assert rc == 0, err
    m = read_manifest(str(tmp_path / "h2z"))
    assert m.layout == "unpaired" and {k: s.count for k, s in m.splits.items()} == {
        "trainA": 3,
        "trainB": 3,
        "testA": 2,
        "testB": 2,
    }  # the zip's top folder horse2zebra/ was stepped into
    sha = hashlib.sha256(good.read_bytes()).hexdigest()
    assert _records(tmp_path)["horse2zebra"]["sha256"] == sha and m.source == f"catalog:horse2zebra:sha256={sha}"
    assert env.requests == []  # a local file: no download
    # a later copy that differs from the recorded hash: refused, both hashes and the way out named
    other = tmp_path / "other" / "horse2zebra.zip"
    other.parent.mkdir()
    other.write_bytes(cyclegan_zip(seed=1))
    rc, _, err = _run(capsys, "horse2zebra", str(tmp_path / "h2z-2"), "--from", str(other))
    assert rc == 2
    assert sha in err and hashlib.sha256(other.read_bytes()).hexdigest() in err
    assert "catalog-sha256.json" in err and "--skip-checksum" in err
    assert not (tmp_path / "h2z-2").exists()
    # the same refusal for a download of the other archive from a mirror URL
    env.files["horse2zebra.zip"] = other.read_bytes()
    rc, _, err = _run(capsys, "horse2zebra", str(tmp_path / "h2z-2"))
    assert rc == 2 and "sha256 mismatch" in err and "catalog-sha256.json" in err
    assert not (tmp_path / "h2z-2").exists()


def test_cyclegan_zip_from_catalog_url_to_s3(env: _Server, s3_prefix: str, capsys: pytest.CaptureFixture[str]) -> None:
    env.files["horse2zebra.zip"] = cyclegan_zip()
    rc, out, err = _run(capsys, "horse2zebra", s3_prefix)
    assert rc == 0, err
    m = read_manifest(s3_prefix)
    assert m.layout == "unpaired" and m.splits["trainB"].count == 3
    assert storage.exists(storage.parse_uri(s3_prefix).join(m.object_rel(m.splits["testA"].files[0])).uri())
    rc, out, _ = _run(capsys, "horse2zebra", s3_prefix)  # recorded hash = the dataset's source: nothing to do
    assert rc == 0 and "up to date" in out and len(env.hits("/mirror/horse2zebra.zip")) == 1


def test_from_mirror_url_and_default_dest(
    env: _Server, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    env.files["apple2orange.zip"] = cyclegan_zip("apple2orange")
    rc, _, err = _run(capsys, "apple2orange", "--from", env.url("/elsewhere/apple2orange.zip"))
    assert rc == 2 and "GANSVC_STORAGE" in err and "DEST" in err  # no destination given, none configured
    monkeypatch.setenv("GANSVC_STORAGE", str(tmp_path / "store"))
    rc, _out, err = _run(capsys, "apple2orange", "--from", env.url("/elsewhere/apple2orange.zip"))
    assert rc == 0, err
    assert read_manifest(str(tmp_path / "store" / "datasets" / "apple2orange")).splits["trainA"].count == 3
    assert len(env.hits("/elsewhere/apple2orange.zip")) == 1 and not env.hits("/mirror/apple2orange.zip")


def test_cut_download_is_refused_cleanly_then_resumed(
    env: _Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = cyclegan_zip("facades")
    env.files["facades.zip"] = data
    env.cut_at = len(data) // 3
    url = env.url("/cut/facades.zip")
    dest = tmp_path / "facades"
    rc, _, err = _run(capsys, "facades", str(dest), "--from", url, "--retries", "1")
    assert rc == 2 and "run again to resume" in err and "--from" in err
    assert not dest.exists()  # nothing partial in DEST
    parts = list((tmp_path / "cache" / "downloads").rglob("*.part"))
    assert len(parts) == 1 and parts[0].stat().st_size == 2 * env.cut_at  # kept for the resume
    env.cutting = False
    rc, _, err = _run(capsys, "facades", str(dest), "--from", url)
    assert rc == 0, err
    assert env.hits("/cut/facades.zip")[-1]["Range"] == f"bytes={2 * env.cut_at}-"  # resumed, not restarted
    assert read_manifest(str(dest)).splits["testB"].count == 2
    assert _records(tmp_path)["facades"]["sha256"] == hashlib.sha256(data).hexdigest()


def test_cut_once_is_resumed_within_one_run(env: _Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = cyclegan_zip("maps")
    env.files["maps.zip"] = data
    env.cut_at = len(data) // 2

    rc, out, err = _run(capsys, "maps", str(tmp_path / "maps"), "--from", env.url("/cut-once/maps.zip"))
    assert rc == 0, err
    first, second = env.hits("/cut-once/maps.zip")
    assert "Range" not in first and second["Range"] == f"bytes={env.cut_at}-"
    assert read_manifest(str(tmp_path / "maps")).splits["trainA"].count == 3
    assert "flip is wrong" in out and "--set data.flip=false" in out  # maps carry text


def test_unreachable_url_says_to_use_from(env: _Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rc, _, err = _run(
        capsys, "horse2zebra", str(tmp_path / "d"), "--from", f"http://127.0.0.1:{port}/h.zip", "--retries", "0"
    )
    assert rc == 2 and "--from URL_OR_FILE with a mirror or a local copy" in err
    rc, _, err = _run(capsys, "horse2zebra", str(tmp_path / "d"))  # the mirror has no such file: HTTP 404
    assert rc == 2 and "HTTP 404" in err and "--from" in err
    assert not (tmp_path / "d").exists()


def test_list_names_every_entry_and_its_verification(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = _run(capsys, "--list")
    assert rc == 0
    rows = {line.split()[0]: line for line in out.splitlines() if line and not line.startswith((" ", "-", "NAME"))}
    for name in (
        "horse2zebra",
        "apple2orange",
        "summer2winter_yosemite",
        "monet2photo",
        "vangogh2photo",
        "facades",
        "maps",
        "cifar10",
        "selfie2anime",
        "cat2dog",
        "anime-faces",
        "gta2cityscapes",
    ):
        assert name in rows, name
    assert catalog.PINNED in rows["cifar10"] and "162 MB" in rows["cifar10"]
    assert catalog.RECORDED in rows["horse2zebra"] and catalog.MANUAL in rows["gta2cityscapes"]
    assert " NO " in rows["maps"] and " yes " in rows["horse2zebra"]
    assert "acgan" in rows["cifar10"] and "001" in rows["gta2cityscapes"]


def test_manual_entry_prints_where_and_the_put_command(
    env: _Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, err = _run(capsys, "selfie2anime", str(tmp_path / "s2a"))
    assert rc == 3 and "1xOWj1UVgp6NKMT3HbPhBbtq2A4EDkghF" in out
    assert f"python -m gansvc.data put selfie2anime.zip {tmp_path / 's2a'}" in out
    rc, out, _ = _run(capsys, "gta5")  # an alias
    assert rc == 3 and "cityscapes-dataset.com" in out and "download.visinf.tu-darmstadt.de" in out
    assert "labelIds" in out and "255" in out and "trainA_masks" in out and "classes.txt" in out
    assert "python -m gansvc.data put FOLDER_OR_ZIP $GANSVC_STORAGE/datasets/gta2cityscapes" in out
    assert not (tmp_path / "s2a").exists() and env.requests == []
    # a manual entry that is one archive takes it with --from (recorded like a download)
    z = tmp_path / "selfie2anime.zip"
    z.write_bytes(cyclegan_zip("selfie2anime"))
    rc, out, err = _run(capsys, "selfie2anime", str(tmp_path / "s2a"), "--from", str(z))
    assert rc == 0, err
    assert read_manifest(str(tmp_path / "s2a")).layout == "unpaired"


def test_unknown_name_lists_close_names(capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = _run(capsys, "horse2zebr", "/nonexistent")
    assert rc == 2 and "did you mean horse2zebra" in err and "--list" in err
    rc, _, err = _run(capsys)
    assert rc == 2 and "give a dataset name" in err


def test_catalog_api_for_the_training_cli() -> None:
    assert catalog.get_command("horse2zebra") == "python -m gansvc.data get horse2zebra"
    assert catalog.entry("GTA5").name == "gta2cityscapes"
    from gansvc.families import FAMILIES  # each family names its report dataset (FamilySpec.dataset): one list

    assert FAMILIES["cyclegan"].dataset == "horse2zebra" and FAMILIES["ugatit"].dataset == "selfie2anime"
    # the catalog's notes on which families train on a dataset name registered families, and agree with each family's
    # own report dataset; a new family needs no catalog edit (its dataset must only exist: entry() raises otherwise)
    mentioned = {f for e in catalog.CATALOG.values() for f in e.families}
    assert mentioned <= set(FAMILIES), mentioned - set(FAMILIES)
    for family, spec in FAMILIES.items():
        assert spec.dataset is None or catalog.entry(spec.dataset).name == spec.dataset, family
        if spec.dataset is not None and family in mentioned:
            assert family in catalog.entry(spec.dataset).families, (family, spec.dataset)
    assert catalog.entry("cifar10").flip and catalog.entry("cifar10").family == "dcgan"
    assert not catalog.entry("maps").flip
    assert "data.flip=false" in catalog.flip_advice("maps") and "wrong" in catalog.flip_advice("maps")
    assert "handedness" in catalog.flip_advice(None) and "data.flip" in catalog.flip_advice("not-a-dataset")
    assert catalog.name_of_source(catalog.source_id("cifar10", "ab" * 32)) == "cifar10"
    assert catalog.name_of_source("/some/folder") is None
    with pytest.raises(catalog.UnknownDataset, match="did you mean cifar10"):
        catalog.entry("cifar-10")


def test_cifar_parser_refuses_a_truncated_batch(tmp_path: Path) -> None:
    from gansvc.data.cifar import CifarFormatError, convert

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        raw = bytes([3]) + bytes(3072) + bytes([1]) + bytes(100)  # the second record is cut
        info = tarfile.TarInfo("cifar-10-batches-bin/data_batch_1.bin")
        info.size = len(raw)
        tar.addfile(info, io.BytesIO(raw))
    (tmp_path / "a.tar.gz").write_bytes(buf.getvalue())
    with pytest.raises(CifarFormatError, match="record 1 is 101 bytes"):
        convert(tmp_path / "a.tar.gz", tmp_path / "out")
    (tmp_path / "b.tar.gz").write_bytes(random.Random(0).randbytes(5000))
    with pytest.raises(CifarFormatError, match=re.escape("not a readable .tar.gz")):
        convert(tmp_path / "b.tar.gz", tmp_path / "out2")


def test_wrong_file_is_neither_recorded_nor_kept(
    env: _Server, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # a first download has no hash to check: an error page served as the zip must not become the recorded hash
    env.files["horse2zebra.zip"] = b"<html>quota exceeded</html>"
    rc, _, err = _run(capsys, "horse2zebra", str(tmp_path / "h"))
    assert rc == 2 and "not a zip file" in err and not (tmp_path / "h").exists()
    assert not (tmp_path / "cache" / "downloads" / "catalog-sha256.json").exists()
    env.files["horse2zebra.zip"] = good = cyclegan_zip()
    rc, _, err = _run(capsys, "horse2zebra", str(tmp_path / "h"))  # downloaded again, not the cached error page
    assert rc == 0, err
    assert _records(tmp_path)["horse2zebra"]["sha256"] == hashlib.sha256(good).hexdigest()
    # the same for a cifar10 archive that is not CIFAR-10's binary version
    bad, _ = cifar_archive()
    with tarfile.open(fileobj=io.BytesIO(bad)) as tar, tarfile.open(tmp_path / "c.tar.gz", "w:gz") as out:
        for m in tar.getmembers():
            if not m.name.endswith("test_batch.bin"):
                out.addfile(m, tar.extractfile(m))
    _pin_cifar(monkeypatch, (tmp_path / "c.tar.gz").read_bytes())
    rc, _, err = _run(capsys, "cifar10", str(tmp_path / "c"), "--from", str(tmp_path / "c.tar.gz"))
    assert rc == 2 and "lacks test_batch.bin" in err and not (tmp_path / "c").exists()
    assert "cifar10" not in _records(tmp_path)


def test_cityscapes_masks_convert_label_ids_for_put(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # gtFine's label-id PNGs (mode L) and GTA5's palette labels (mode P, indices = the same ids) -> trainIds
    ids = np.array([[7, 26, 0, 33], [24, 1, 8, 255]], dtype=np.uint8)
    want = np.array([[0, 13, 255, 18], [11, 255, 1, 255]], dtype=np.uint8)
    city = tmp_path / "gtFine" / "train" / "aachen"
    city.mkdir(parents=True)
    Image.fromarray(ids, "L").save(city / "aachen_000000_000019_gtFine_labelIds.png")
    Image.fromarray(np.zeros((2, 4, 4), np.uint8), "RGBA").save(city / "aachen_000000_000019_gtFine_color.png")
    gta = tmp_path / "GTA5" / "labels"
    gta.mkdir(parents=True)
    pal = Image.fromarray(ids, "P")
    pal.putpalette(list(range(256)) * 3)
    pal.save(gta / "00001.png")
    ds = tmp_path / "ds"
    assert (
        main(
            [
                "cityscapes-masks",
                str(tmp_path / "gtFine" / "train"),
                str(ds / "trainB_masks"),
                "--classes",
                str(ds / "classes.txt"),
                "--quiet",
            ]
        )
        == 0
    )
    assert main(["cityscapes-masks", str(gta), str(ds / "trainA_masks"), "--quiet"]) == 0
    capsys.readouterr()
    got = np.asarray(Image.open(ds / "trainB_masks" / "aachen" / "aachen_000000_000019_leftImg8bit.png"))
    assert np.array_equal(got, want) and np.array_equal(np.asarray(Image.open(ds / "trainA_masks" / "00001.png")), want)
    assert not list((ds / "trainB_masks").rglob("*color*"))
    # the layout the manual entry describes is what put reads: images beside their converted masks
    (ds / "trainB" / "aachen").mkdir(parents=True)
    (ds / "trainA").mkdir()
    Image.new("RGB", (4, 2)).save(ds / "trainB" / "aachen" / "aachen_000000_000019_leftImg8bit.png")
    Image.new("RGB", (4, 2)).save(ds / "trainA" / "00001.png")
    assert main(["put", str(ds), str(tmp_path / "out"), "--quiet"]) == 0
    m = read_manifest(str(tmp_path / "out"))
    assert m.num_classes == 19 and m.classes[13] == "car" and m.masked_splits() == ["trainA", "trainB"]
    capsys.readouterr()
    assert main(["info", str(tmp_path / "out")]) == 0  # not a catalog dataset: the general rule
    assert f"advice    augmentation: {catalog.FLIP_RULE}" in capsys.readouterr().out
