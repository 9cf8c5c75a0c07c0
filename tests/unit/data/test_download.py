"""gansvc.data.download against a real HTTP server on 127.0.0.1 that misbehaves on purpose (issue 13 point 6).

Each path of the server is one behaviour (see `_Handler.do_GET`); the server records every request's path and
headers, so the tests can check that a resume sent `Range` and that a cache hit sent nothing.
"""

from __future__ import annotations

import hashlib
import random
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from gansvc.data.download import DownloadError, fetch, md5_file, sha256_file

pytestmark = pytest.mark.timeout(60)

DATA = random.Random(13).randbytes(300_000)
SHA = hashlib.sha256(DATA).hexdigest()
MD5 = hashlib.md5(DATA).hexdigest()
CUT = 100_000  # where the misbehaving paths drop the connection


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # needed for chunked responses
    server: _Server

    def log_message(self, *args: object) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        path = self.path.partition("?")[0]
        with self.server.lock:
            self.server.requests.append((path, dict(self.headers)))
            n = sum(1 for p, _ in self.server.requests if p == path)  # 1 on this path's first request
        if path == "/missing":
            return self._status(404)
        if path == "/flaky" and n == 1:
            return self._status(500)
        if path == "/ignore-range":
            return self._body(DATA, 0, 200)
        if path == "/chunked-cut-once" and n == 1:
            return self._chunked(DATA, cut=CUT)
        if path == "/chunked":
            return self._chunked(DATA)
        start = self._range_start()
        if start is not None and start >= len(DATA):
            return self._status(416, {"Content-Range": f"bytes */{len(DATA)}"})
        data = DATA[:-1] + bytes([DATA[-1] ^ 1]) if path == "/corrupt" else DATA
        status = 200 if start is None else 206
        cut = CUT if path == "/cut-always" or (path in ("/cut-once", "/stall-once") and n == 1) else None
        self._body(data, start or 0, status, cut=cut, stall=path == "/stall-once" and n == 1, throttle=path == "/slow")

    def _range_start(self) -> int | None:
        value = self.headers.get("Range")
        return int(value.removeprefix("bytes=").rstrip("-")) if value else None

    def _status(self, code: int, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _body(
        self,
        data: bytes,
        start: int,
        status: int,
        *,
        cut: int | None = None,
        stall: bool = False,
        throttle: bool = False,
    ) -> None:
        """`data[start:]` with a true Content-Length; `cut`: send only that many bytes, then drop the connection."""
        self.send_response(status)
        self.send_header("Content-Length", str(len(data) - start))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        body = data[start:] if cut is None else data[start : start + cut]
        for i in range(0, len(body), 30_000):
            self.wfile.write(body[i : i + 30_000])
            if throttle:
                time.sleep(0.05)
        if stall:
            self.wfile.flush()
            time.sleep(3)  # longer than the client's timeout
        if cut is not None:
            self._drop()

    def _chunked(self, data: bytes, *, cut: int | None = None) -> None:
        """The whole file chunked (no Content-Length); `cut`: stop mid-chunk after that many bytes, no last chunk."""
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for i in range(0, len(data), 40_000):
            chunk = data[i : i + 40_000]
            self.wfile.write(f"{len(chunk):x}\r\n".encode())
            if cut is not None and i + len(chunk) > cut:
                self.wfile.write(chunk[: cut - i])
                return self._drop()
            self.wfile.write(chunk + b"\r\n")
        self.wfile.write(b"0\r\n\r\n")

    def _drop(self) -> None:
        self.wfile.flush()
        self.connection.shutdown(socket.SHUT_RDWR)
        self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a stalled handler must not hold up server_close

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.requests: list[tuple[str, dict[str, str]]] = []

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


def _fetch(server: _Server, path: str, dest: Path, **kw: object) -> Path:
    kw = {"progress": False, "timeout": 5.0, **kw}
    return fetch(server.url(path), dest, **kw)  # type: ignore[arg-type]


def _part(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def test_plain_download_and_cache_hit(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "f.bin"
    assert _fetch(server, "/file", dest, sha256=SHA, md5=MD5) == dest
    assert dest.read_bytes() == DATA and not _part(dest).exists()
    assert sha256_file(dest) == SHA and md5_file(dest) == MD5
    # a cache hit sends no request, with or without a checksum
    _fetch(server, "/file", dest, sha256=SHA)
    _fetch(server, "/file", dest)
    assert len(server.hits("/file")) == 1


def test_cut_with_content_length_is_resumed(server: _Server, tmp_path: Path) -> None:
    # the bug: urllib returns b"" at the early EOF and the old code cached the first 100 kB as the file
    dest = tmp_path / "f.bin"
    _fetch(server, "/cut-once", dest)
    first, second = server.hits("/cut-once")
    assert "Range" not in first and second["Range"] == f"bytes={CUT}-"
    assert dest.read_bytes() == DATA and not _part(dest).exists()


def test_cut_chunked_response_is_retried(server: _Server, tmp_path: Path) -> None:
    # the bug: IncompleteRead escaped as a traceback and left a .part behind
    dest = tmp_path / "f.bin"
    _fetch(server, "/chunked-cut-once", dest, sha256=SHA)
    first, second = server.hits("/chunked-cut-once")
    assert "Range" not in first and second["Range"] == f"bytes={CUT}-"  # resumed, hashing the kept prefix first
    assert dest.read_bytes() == DATA and not _part(dest).exists()


def test_stalled_connection_times_out_and_resumes(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "f.bin"
    _fetch(server, "/stall-once", dest, timeout=0.5, md5=MD5)
    assert server.hits("/stall-once")[1]["Range"] == f"bytes={CUT}-"
    assert dest.read_bytes() == DATA


def test_no_retries_left_keeps_part_and_a_later_call_resumes(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "f.bin"
    with pytest.raises(DownloadError, match=r"failed 2 times.*kept in .*\.part: run again to resume"):
        _fetch(server, "/cut-always", dest, retries=1)
    assert not dest.exists()
    assert _part(dest).read_bytes() == DATA[: 2 * CUT]  # each attempt appended what it got
    assert server.hits("/cut-always")[1]["Range"] == f"bytes={CUT}-"
    _fetch(server, "/file", dest, sha256=SHA)
    assert server.hits("/file")[0]["Range"] == f"bytes={2 * CUT}-"
    assert dest.read_bytes() == DATA and not _part(dest).exists()


def test_server_ignoring_range_restarts_from_zero(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "f.bin"
    _part(dest).write_bytes(b"x" * 5000)  # garbage: appending the 200 body to it would corrupt the file
    _fetch(server, "/ignore-range", dest)
    assert server.hits("/ignore-range")[0]["Range"] == "bytes=5000-"
    assert dest.read_bytes() == DATA


def test_416_on_a_complete_part_finishes_it(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "f.bin"
    _part(dest).write_bytes(DATA)  # e.g. a crash between the last byte and the rename
    _fetch(server, "/file", dest, sha256=SHA)
    assert [h["Range"] for h in server.hits("/file")] == [f"bytes={len(DATA)}-"]
    assert dest.read_bytes() == DATA and not _part(dest).exists()


def test_416_on_an_invalid_part_restarts(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "f.bin"
    _part(dest).write_bytes(b"y" * (len(DATA) + 10))  # longer than the file: not this file
    _fetch(server, "/file", dest)
    assert ["Range" in h for h in server.hits("/file")] == [True, False]
    assert dest.read_bytes() == DATA


def test_checksum_mismatch_deletes_everything(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "f.bin"
    with pytest.raises(DownloadError, match=rf"sha256 mismatch: expected {SHA}, got [0-9a-f]{{64}}.*may be corrupt"):
        _fetch(server, "/corrupt", dest, sha256=SHA)
    assert not dest.exists() and not _part(dest).exists()
    with pytest.raises(DownloadError, match=rf"md5 mismatch: expected {MD5}"):
        _fetch(server, "/corrupt", dest, md5=MD5)
    assert len(server.hits("/corrupt")) == 2  # a mismatch is final, not retried


def test_cached_file_failing_its_checksum_is_fetched_again(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "f.bin"
    dest.write_bytes(DATA[:CUT])  # e.g. truncated by the old downloader and cached
    _fetch(server, "/file", dest, sha256=SHA)
    assert len(server.hits("/file")) == 1 and dest.read_bytes() == DATA


def test_oversize_refused_before_download(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "f.bin"
    with pytest.raises(
        DownloadError,
        match=rf"is {len(DATA)} bytes, over the download cap of 1000 bytes.*"
        r"--max-download-gb",
    ):
        _fetch(server, "/file", dest, max_bytes=1000)
    assert not dest.exists() and not _part(dest).exists()


def test_oversize_without_content_length_stops_at_the_cap(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "f.bin"
    with pytest.raises(DownloadError, match=r"sent more than 120000 bytes.*--max-download-gb"):
        _fetch(server, "/chunked", dest, max_bytes=120_000)
    assert not dest.exists() and not _part(dest).exists()
    _fetch(server, "/chunked", dest, max_bytes=len(DATA))  # exactly at the cap is allowed
    assert dest.read_bytes() == DATA


def test_http_errors(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "f.bin"
    with pytest.raises(DownloadError, match=r"HTTP 404 .*Check the URL"):
        _fetch(server, "/missing", dest)
    assert len(server.hits("/missing")) == 1  # a 404 is final, not retried
    assert not dest.exists() and not _part(dest).exists()
    _fetch(server, "/flaky", dest)  # 500 first: retried
    assert len(server.hits("/flaky")) == 2 and dest.read_bytes() == DATA


def test_connection_refused_is_retried_then_reported(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DownloadError, match=r"failed 2 times.*cannot connect"):
        fetch(f"http://127.0.0.1:{port}/f", tmp_path / "f.bin", retries=1, progress=False, timeout=2)


def test_concurrent_fetches_of_one_dest_download_once(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "f.bin"
    errors: list[BaseException] = []

    def run() -> None:
        try:
            _fetch(server, "/slow", dest, sha256=SHA)
        except BaseException as err:  # noqa: BLE001 - reported by the assert below
            errors.append(err)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
        time.sleep(0.1)  # the first one is mid-download (/slow takes ~0.5 s) when the second one starts
    for t in threads:
        t.join(timeout=30)
    assert not errors and dest.read_bytes() == DATA
    assert len(server.hits("/slow")) == 1  # the second waited on the lock, then found the cache hit


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="only http:// and https://"):
        fetch("ftp://127.0.0.1/f", tmp_path / "f")
    with pytest.raises(DownloadError, match="give 64 hexadecimal digits"):
        fetch("http://127.0.0.1/f", tmp_path / "f", sha256="abc")
    with pytest.raises(DownloadError, match="retries >= 0"):
        fetch("http://127.0.0.1/f", tmp_path / "f", retries=-1)


def test_messages_hide_url_credentials(tmp_path: Path, server: _Server) -> None:
    url = server.url("/missing") + "?X-Amz-Signature=secret"  # a presigned URL: its query is a credential
    with pytest.raises(DownloadError) as info:
        fetch(url, tmp_path / "f", progress=False, timeout=5)
    assert "secret" not in str(info.value) and "/missing?…" in str(info.value)
