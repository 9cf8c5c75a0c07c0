"""`gansvc.data put` data safety (issue 13, points 1, 2, 4, 5, 6, 7, 15b, 19) against the real S3 server.

Overwrite deletes only what the previous manifest listed; versions are immutable (`.v/<version>/`, manifest switched
last); a put SIGKILLed at named points (a real `python -m gansvc.data put` process, stopped by the
GANSVC_PUT_PAUSE_AT hook) leaves the old or the new dataset readable, never a mix, and its re-run completes;
unsafe paths are refused everywhere; identity is by content; downloads and zips are bounded.
"""

from __future__ import annotations

import http.server
import io
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from gansvc import storage
from gansvc.data import ingest
from gansvc.data.ingest import DatasetError, put
from gansvc.data.manifest import Manifest, read_manifest, version_root

PAUSED = "GANSVC_PUT_PAUSED"


def png_bytes(seed: int, size: int = 16) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def image_folder(root: Path, seed: int, n: int = 8, extra: int = 0) -> dict[str, bytes]:
    """train/ and test/ images, all valid; the same names for every seed (so a mix of two versions shows), plus
    `extra` names of this seed only. Returns rel -> bytes: what a reader must see, whole."""
    files = {f"train/{i:03d}.png": png_bytes(seed * 1000 + i) for i in range(n)}
    files |= {f"test/{i:03d}.png": png_bytes(seed * 1000 + 500 + i) for i in range(2)}
    files |= {f"train/only{seed}-{i}.png": png_bytes(seed * 1000 + 700 + i) for i in range(extra)}
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def read_dataset(dest: str, manifest: Manifest | None = None) -> dict[str, bytes]:
    """What a reader sees: every image the manifest lists, read through `object_rel`."""
    m = manifest or read_manifest(dest)
    return {rel: storage.read_bytes(f"{dest}/{m.object_rel(rel)}") for s in m.splits.values() for rel in s.files}


def keys(dest: str) -> set[str]:
    return {o.rel for o in storage.list_objects(dest)}


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gansvc.data", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def start_paused_put(src: Path, dest: str, point: str, *extra: str) -> subprocess.Popen[str]:
    """A real put process that stops at `point` (ingest._pause_point) and waits there; returns once it is there."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "gansvc.data", "put", str(src), dest, "--threads", "1", "--quiet", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, ingest.PAUSE_ENV: point},
    )
    deadline, seen = time.monotonic() + 90, []
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stderr], [], [], 1.0)
        if ready:
            line = proc.stderr.readline()
            seen.append(line)
            if line.startswith(f"{PAUSED} {point}"):
                return proc
            if not line and proc.poll() is not None:
                break
    proc.kill()
    out, err = proc.communicate()
    raise AssertionError(f"put never reached {point}: rc={proc.returncode} {''.join(seen)}{err}{out}")


def sigkill(proc: subprocess.Popen[str]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL


# ------------------------------------------------------------------------------------------- 1. destructive overwrite


def test_overwrite_refuses_prefix_without_manifest(tmp_path: Path, s3_prefix: str) -> None:
    """The reported loss: `put SRC DEST --overwrite` onto a prefix holding runs/registry and no manifest."""
    others = {"runs/r1/model.pt": b"weights", "registry/gen/v1.json": b"{}", "notes.txt": b"mine"}
    for rel, data in others.items():
        storage.write_bytes(f"{s3_prefix}/{rel}", data)
    image_folder(tmp_path / "src", seed=1)
    for flags in (["--overwrite"], []):
        out = cli("put", str(tmp_path / "src"), s3_prefix, "--quiet", *flags)
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
        assert "holds no manifest.json" in out.stderr and "runs/r1/model.pt" in out.stderr
        assert "choose an empty prefix" in out.stderr
    assert keys(s3_prefix) == set(others), "nothing deleted, nothing written"
    assert all(storage.read_bytes(f"{s3_prefix}/{rel}") == data for rel, data in others.items())


def test_overwrite_deletes_only_what_the_old_manifest_listed(tmp_path: Path, s3_prefix: str) -> None:
    a = image_folder(tmp_path / "a", seed=1, extra=2)
    old = put(str(tmp_path / "a"), s3_prefix, quiet=True).manifest
    beside = {"runs/r1/model.pt": b"weights", "train/mine.bin": b"not listed", "registry/x.json": b"{}"}
    for rel, data in beside.items():
        storage.write_bytes(f"{s3_prefix}/{rel}", data)
    b = image_folder(tmp_path / "b", seed=2)
    new = put(str(tmp_path / "b"), s3_prefix, overwrite=True, quiet=True).manifest
    assert new.files_root != old.files_root and read_dataset(s3_prefix) == b
    assert keys(s3_prefix) == set(beside) | {new.object_rel(r) for r in new.stored_files()} | {"manifest.json"}
    assert all(storage.read_bytes(f"{s3_prefix}/{rel}") == data for rel, data in beside.items())
    assert not any(storage.exists(f"{s3_prefix}/{old.object_rel(rel)}") for rel in a), "old version deleted"


def _old_style_dataset(tmp_path: Path, dest: str, seed: int) -> dict[str, bytes]:
    """A dataset as puts before versioning wrote it: files at the root, manifest without files_root."""
    files = image_folder(tmp_path / f"old{seed}", seed=seed)
    staged = put(str(tmp_path / f"old{seed}"), f"{dest}-staging", quiet=True).manifest
    for rel, data in files.items():
        storage.write_bytes(f"{dest}/{rel}", data)
    old = staged.model_copy(update={"files_root": "", "fingerprint": "metadata-fingerprint-of-an-old-put"})
    storage.write_json(f"{dest}/manifest.json", old.model_dump())
    return files


def test_overwrite_of_an_unversioned_dataset(tmp_path: Path, s3_prefix: str) -> None:
    """Datasets written before versioning: read as before, replaced by a versioned one, root files listed deleted."""
    old = _old_style_dataset(tmp_path, s3_prefix, seed=3)
    storage.write_bytes(f"{s3_prefix}/runs/keep.pt", b"x")
    assert read_dataset(s3_prefix) == old
    with pytest.raises(DatasetError, match=r"written before datasets were versioned.*--overwrite"):
        put(str(tmp_path / "old3"), s3_prefix, quiet=True)  # its metadata fingerprint cannot be compared
    b = image_folder(tmp_path / "b", seed=4)
    new = put(str(tmp_path / "b"), s3_prefix, overwrite=True, quiet=True).manifest
    assert read_dataset(s3_prefix) == b
    assert keys(s3_prefix) == {"runs/keep.pt", "manifest.json"} | {new.object_rel(r) for r in new.stored_files()}


# --------------------------------------------------------------------------------- 2. immutable versions, killed puts


@pytest.mark.timeout(240)
@pytest.mark.parametrize("point", ["upload:1", "upload:5", "commit", "committed", "delete:3"])
def test_killed_put_leaves_old_or_new_dataset(tmp_path: Path, s3_prefix: str, point: str) -> None:
    a = image_folder(tmp_path / "a", seed=1, extra=2)
    b = image_folder(tmp_path / "b", seed=2, extra=3)
    put(str(tmp_path / "a"), s3_prefix, quiet=True)
    storage.write_bytes(f"{s3_prefix}/runs/keep.pt", b"not the dataset's")
    held = read_manifest(s3_prefix)  # a reader that opened the old version before the put started
    proc = start_paused_put(tmp_path / "b", s3_prefix, point, "--overwrite")
    try:
        switched = point not in ("upload:1", "upload:5", "commit")
        assert read_dataset(s3_prefix) == (b if switched else a), "a new reader sees one whole version"
        if not point.startswith("delete"):
            assert read_dataset(s3_prefix, held) == a, "the held old version stays readable until deleted"
    finally:
        sigkill(proc)
    assert read_dataset(s3_prefix) == (b if switched else a), "after the kill: the old or the new dataset, whole"
    rerun = put(str(tmp_path / "b"), s3_prefix, overwrite=True, quiet=True)
    assert read_dataset(s3_prefix) == b
    if point.startswith("upload"):  # the re-run sends only what the killed put had not
        assert rerun.reused == int(point.split(":")[1]) and rerun.uploaded == len(b) - rerun.reused
    assert rerun.up_to_date == switched
    live = read_manifest(s3_prefix)
    assert keys(s3_prefix) == {"runs/keep.pt", "manifest.json"} | {live.object_rel(r) for r in live.stored_files()}


@pytest.mark.timeout(180)
def test_orphan_version_of_a_killed_put_is_removed(tmp_path: Path, s3_prefix: str) -> None:
    image_folder(tmp_path / "a", seed=1)
    image_folder(tmp_path / "b", seed=2)
    c = image_folder(tmp_path / "c", seed=3, extra=1)
    put(str(tmp_path / "a"), s3_prefix, quiet=True)
    sigkill(start_paused_put(tmp_path / "b", s3_prefix, "upload:4", "--overwrite"))
    assert len({k.split("/")[1] for k in keys(s3_prefix) if k.startswith(".v/")}) == 2, "a's and b's partial"
    new = put(str(tmp_path / "c"), s3_prefix, overwrite=True, quiet=True).manifest
    assert read_dataset(s3_prefix) == c
    assert keys(s3_prefix) == {"manifest.json"} | {new.object_rel(r) for r in new.stored_files()}


def test_local_destination_is_versioned_and_compared_by_content(tmp_path: Path) -> None:
    """A local folder destination: version folder, and a same-size different file left by a killed put is re-sent
    (before: compared by size only, so it was kept and served)."""
    dest = str(tmp_path / "dest")
    a = image_folder(tmp_path / "a", seed=1)
    with ingest.open_source(str(tmp_path / "a")) as source:
        vroot = tmp_path / "dest" / version_root(ingest.fingerprint(source.files))
    stale = vroot / "train" / "000.png"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(bytes(len(a["train/000.png"])))  # same size, other bytes
    result = put(str(tmp_path / "a"), dest, quiet=True)
    assert result.uploaded == len(a) and result.reused == 0
    assert read_dataset(dest) == a and stale.read_bytes() == a["train/000.png"]
    b = image_folder(tmp_path / "b", seed=2)
    put(str(tmp_path / "b"), dest, overwrite=True, quiet=True)
    assert read_dataset(dest) == b and not vroot.exists(), "old version folder removed, empty folders too"


# ------------------------------------------------------------------------------------------------- 4. path escapes

BAD_PATHS = ["../../x.png", "/etc/x.png", "train\\..\\..\\x.png", "train//x.png", "train/./x.png", "", "C:/x.png"]


def _manifest_dict(**over: object) -> dict:
    m = {"layout": "single", "channels": 3, "splits": {"train": {"count": 1, "files": ["train/a.png"], "masks": {}}}}
    m.update(over)
    return m


@pytest.mark.parametrize("bad", BAD_PATHS)
@pytest.mark.parametrize("where", ["files", "mask", "mask key", "labels", "files_root"])
def test_manifest_refuses_unsafe_paths(bad: str, where: str) -> None:
    split = {"count": 1, "files": ["train/a.png"], "masks": {}}
    over: dict[str, object] = {}
    if where == "files":
        split["files"] = [bad]
    elif where == "mask":
        split["masks"] = {"train/a.png": bad}
    elif where == "mask key":
        split["masks"] = {bad: "train_masks/a.png"}
    elif where == "labels":
        over = {"attributes": {"k": ["v"]}, "labels": {bad: ["v"]}}
    else:
        if bad == "":
            pytest.skip('files_root "" means: files at the root (manifests written before versioning)')
        over = {"files_root": bad}
    with pytest.raises(ValidationError, match="unsafe path in") as err:
        Manifest.model_validate(_manifest_dict(splits={"train": split}, **over))
    assert repr(bad) in str(err.value), "the message names the entry"


def test_read_manifest_refuses_escaping_manifest(tmp_path: Path, s3_prefix: str) -> None:
    storage.write_json(
        f"{s3_prefix}/manifest.json", _manifest_dict(splits={"train": {"count": 1, "files": ["../../../etc/passwd"]}})
    )
    with pytest.raises(storage.StorageError, match=r"unsafe path in splits.train.files: '../../../etc/passwd'"):
        read_manifest(s3_prefix)
    image_folder(tmp_path / "src", seed=1)
    with pytest.raises(DatasetError, match="will not replace a manifest it cannot read"):
        put(str(tmp_path / "src"), s3_prefix, overwrite=True, quiet=True)
    assert keys(s3_prefix) == {"manifest.json"}
    Manifest.model_validate(_manifest_dict(files_root=".v/0123456789abcdef"))  # the safe forms load


def test_zip_with_escaping_entries(tmp_path: Path) -> None:
    """Entries like ../../x are skipped with the reason and never written anywhere (local destination)."""
    path = tmp_path / "in" / "evil.zip"
    path.parent.mkdir()
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("tiny/train/a.png", png_bytes(1))
        for name in ("../../evil.png", "/abs.png", "tiny/train/..\\..\\evil2.png", "tiny//train/b.png"):
            zf.writestr(zipfile.ZipInfo(name), png_bytes(2))
    dest = tmp_path / "deep" / "dest"
    m = put(str(path), str(dest), quiet=True).manifest
    assert m.splits["train"].files == ["train/a.png"]
    reasons = {s.path: s.reason for s in m.skipped}
    assert set(reasons) == {"../../evil.png", "/abs.png", "tiny/train/..\\..\\evil2.png", "tiny//train/b.png"}
    assert all(r.startswith("unsafe entry name") for r in reasons.values())
    written = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()}
    assert written == {"in/evil.zip", "deep/dest/manifest.json", f"deep/dest/{m.object_rel('train/a.png')}"}
    assert read_manifest(str(dest)) == m, "the manifest with the skipped names loads (skips are not read)"


# ---------------------------------------------------------------------------------------------- 5. content identity


def test_same_content_extracted_elsewhere_is_the_same_dataset(tmp_path: Path, s3_prefix: str) -> None:
    image_folder(tmp_path / "a", seed=1)
    put(str(tmp_path / "a"), s3_prefix, quiet=True)
    shutil.copytree(tmp_path / "a", tmp_path / "b", copy_function=shutil.copyfile)  # new mtimes
    for p in (tmp_path / "b").rglob("*.png"):
        os.utime(p, ns=(1_000_000_000, 1_000_000_000))
    again = put(str(tmp_path / "b"), s3_prefix, quiet=True)  # before: "already holds a different dataset"
    assert again.up_to_date and again.uploaded == 0


def test_changed_content_with_same_size_and_time_is_a_new_version(tmp_path: Path, s3_prefix: str) -> None:
    a = image_folder(tmp_path / "a", seed=1)
    first = put(str(tmp_path / "a"), s3_prefix, quiet=True).manifest
    target = tmp_path / "a" / "train" / "003.png"
    st = target.stat()
    other = png_bytes(999)
    assert len(other) == len(a["train/003.png"])  # random 16x16 PNGs do not compress: same size
    target.write_bytes(other)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))  # as an archive restores times
    with pytest.raises(DatasetError, match="different dataset"):
        put(str(tmp_path / "a"), s3_prefix, quiet=True)  # before: "up to date", the old bytes kept
    second = put(str(tmp_path / "a"), s3_prefix, overwrite=True, quiet=True)
    assert not second.up_to_date and second.manifest.fingerprint != first.fingerprint
    assert read_dataset(s3_prefix) == a | {"train/003.png": other}


# --------------------------------------------------------------------------------------------- 7. zip limits, 19 close


def _zip(path: Path, entries: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression=method) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return path


def test_zip_bomb_entry_is_skipped(tmp_path: Path, s3_prefix: str) -> None:
    bomb = bytes(20 << 20)  # 20 MiB of zeros: ~1000:1 deflated
    path = _zip(tmp_path / "bomb.zip", {"train/a.png": png_bytes(1), "train/bomb.png": bomb})
    m = put(str(path), s3_prefix, quiet=True).manifest
    reasons = {s.path: s.reason for s in m.skipped}
    assert "zip bomb" in reasons["train/bomb.png"] and m.splits["train"].files == ["train/a.png"]


def test_zip_size_limits(tmp_path: Path, s3_prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _zip(tmp_path / "d.zip", {f"train/{i}.png": png_bytes(i, size=32) for i in range(4)})
    monkeypatch.setattr(ingest, "MAX_UNZIPPED_BYTES", 3 * len(png_bytes(0, size=32)))
    with pytest.raises(DatasetError, match=r"would unpack to .* over the limit"):
        put(str(path), s3_prefix, quiet=True)
    assert not keys(s3_prefix)
    monkeypatch.setattr(ingest, "MAX_UNZIPPED_BYTES", 1 << 30)
    monkeypatch.setattr(ingest, "MAX_FILE_BYTES", 1000)  # the 32x32 PNGs are ~3 KB, the 16x16 one < 1000
    big = _zip(tmp_path / "e.zip", {"train/small.png": png_bytes(9, size=8), "train/big.png": png_bytes(1, size=32)})
    m = put(str(big), s3_prefix, quiet=True).manifest
    assert m.splits["train"].files == ["train/small.png"]
    assert "file too large" in {s.path: s.reason for s in m.skipped}["train/big.png"]


def test_read_budget_bounds_bytes_in_memory() -> None:
    """All reader threads together never hold more than the budget (a file larger than it holds all of it)."""
    budget = ingest._ByteBudget(100)
    peak, lock = [0], threading.Lock()

    def hold(n: int) -> None:
        with budget.hold(n):
            with lock:
                peak[0] = max(peak[0], budget.used)
            time.sleep(0.01)

    threads = [threading.Thread(target=hold, args=(n,)) for n in [40, 70, 30, 500, 10, 60] * 3]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert 0 < peak[0] <= 100 and budget.used == 0


def test_zip_is_closed_after_put(tmp_path: Path, s3_prefix: str) -> None:
    path = _zip(tmp_path / "c.zip", {"train/a.png": png_bytes(1)})
    with ingest.open_source(str(path)) as source:
        assert any(os.path.realpath(f"/proc/self/fd/{fd}") == str(path) for fd in os.listdir("/proc/self/fd"))
        keep = source  # noqa: F841 - holding the source must not keep the file open after the block
    assert not any(_fd_target(fd) == str(path) for fd in os.listdir("/proc/self/fd"))
    put(str(path), s3_prefix, quiet=True)
    assert not any(_fd_target(fd) == str(path) for fd in os.listdir("/proc/self/fd"))


def _fd_target(fd: str) -> str:
    try:
        return os.path.realpath(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


# ------------------------------------------------------------------------------------ 15b. unpaired test split pairs


@pytest.mark.parametrize(("present", "missing"), [("testA", "testB"), ("testB", "testA")])
def test_unpaired_test_split_needs_both_domains(tmp_path: Path, s3_prefix: str, present: str, missing: str) -> None:
    src = tmp_path / "src"
    for split in ("trainA", "trainB", present):
        (src / split).mkdir(parents=True)
        (src / split / "0.png").write_bytes(png_bytes(len(split)))
    with pytest.raises(DatasetError, match=f"{present}/ has 1 valid image.* but {missing}/ is missing"):
        put(str(src), s3_prefix, quiet=True)
    (src / missing).mkdir()
    (src / missing / "0.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=f"{missing}/ has no valid image"):
        put(str(src), s3_prefix, quiet=True)
    assert not keys(s3_prefix), "nothing uploaded"


# ------------------------------------------------------------------------------------------------- 6. http sources


class _Blob(http.server.BaseHTTPRequestHandler):
    """Serves `blob` with Range support; the first `cuts` responses stop halfway (Content-Length says more)."""

    blob = b""
    cuts = 0
    requests: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        cls = type(self)
        rng = self.headers.get("Range")
        cls.requests.append(rng or "")
        start = int(rng.split("=")[1].split("-")[0]) if rng else 0
        body = cls.blob[start:]
        self.send_response(206 if rng else 200)
        if rng:
            self.send_header("Content-Range", f"bytes {start}-{len(cls.blob) - 1}/{len(cls.blob)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if cls.cuts > 0:
            cls.cuts -= 1
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.connection.shutdown(2)  # a cut connection
            return
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def blob_server() -> Iterator[tuple[str, type[_Blob]]]:
    handler = type("Blob", (_Blob,), {"blob": b"", "cuts": 0, "requests": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def test_cut_download_is_resumed_not_cached(
    tmp_path: Path, s3_prefix: str, blob_server: tuple[str, type[_Blob]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: the cut zip was cached for good ("not a valid zip"). Now: resumed with Range, then put."""
    monkeypatch.setenv("GANSVC_CACHE_DIR", str(tmp_path / "cache"))
    url, handler = blob_server
    src = tmp_path / "z"
    files = image_folder(src, seed=5)
    handler.blob = _zip(tmp_path / "d.zip", {f"d/{rel}": data for rel, data in files.items()}).read_bytes()
    handler.cuts = 1
    put(f"{url}/d.zip", s3_prefix, quiet=True)
    assert read_dataset(s3_prefix) == files
    assert handler.requests[0] == "" and handler.requests[1].startswith("bytes="), "resumed, not restarted"
    cached = list((tmp_path / "cache" / "downloads").glob("*d.zip"))
    assert [p.read_bytes() for p in cached] == [handler.blob]


def test_download_cap(tmp_path: Path, s3_prefix: str, blob_server: tuple[str, type[_Blob]]) -> None:
    url, handler = blob_server
    handler.blob = bytes(5000)
    out = cli(
        "put",
        f"{url}/big.zip",
        s3_prefix,
        "--quiet",
        "--max-download-gb",
        "0.000001",
        env={"GANSVC_CACHE_DIR": str(tmp_path / "cache")},
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "cannot download" in out.stderr and "over the download cap of 1000 bytes" in out.stderr
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and not p.name.endswith(".lock")]
    bad = cli("put", f"{url}/big.zip", s3_prefix, "--max-download-gb", "0")
    assert bad.returncode == 2 and "above 0 GB" in bad.stderr
