"""Download an http(s) URL to a file: resumed after a cut, size-checked, verified, capped, never cached half-done.

Why every byte count is checked here: urllib does not notice a Content-Length response cut short.
`http.client.HTTPResponse.read(amt)` just returns b"" at the early EOF ("Ideally, we would raise IncompleteRead if the
content-length wasn't satisfied, but it might break compatibility" - CPython Lib/http/client.py), so a plain read loop
caches a truncated file for good (issue 13 point 6). A cut *chunked* response does raise IncompleteRead.

The file grows in `<dest>.part`; a failed attempt keeps it and the next attempt (or the next call) asks for the rest
with `Range: bytes=N-` (RFC 9110 14.2). Only a complete, verified file is fsynced and renamed onto `dest`, so `dest`
is never partial. A lock on `<dest>.lock` makes concurrent fetches of one dest (e.g. Ray workers loading the same
weights) wait for each other instead of appending to the same .part.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.client
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

_CHUNK = 1 << 20
_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}  # transient by RFC 9110 / common practice; others are final
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_HEX_LEN = {"sha256": 64, "md5": 32}


class DownloadError(ValueError):
    """A download that failed; the message says what went wrong and what to do."""


class _Retry(Exception):
    """A transient failure of one attempt (cut connection, timeout, 5xx): pause, then resume from the .part."""


def sha256_file(path: Path) -> str:
    return _hash_file(path, "sha256")


def md5_file(path: Path) -> str:
    return _hash_file(path, "md5")


def _hash_file(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def fetch(
    url: str,
    dest: Path,
    *,
    max_bytes: int | None = None,
    sha256: str | None = None,
    md5: str | None = None,
    retries: int = 5,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Download `url` to `dest` (returned). An existing dest that verifies is a cache hit: no request is made.

    Tries 1 + `retries` times, resuming each time; `timeout` bounds each connect and each read (not the whole
    download). Raises DownloadError on a final HTTP error, too many failures, a size over `max_bytes` or a checksum
    mismatch.
    """
    dest, shown = Path(dest), _shown(url)
    expected = _check_args(shown, url, sha256=sha256, md5=md5, retries=retries, max_bytes=max_bytes, timeout=timeout)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    with _locked(dest, progress):
        if dest.exists():
            if _mismatch(_hashers(expected, dest)) is None:
                return dest
            dest.unlink()  # a cached file that fails its checksum is corrupt or stale: fetch it again
        for attempt in range(1, retries + 2):
            try:
                _attempt(url, shown, part, expected, max_bytes, progress, timeout)
                break
            except _Retry as err:
                last = err
                if attempt <= retries:
                    time.sleep(min(0.5 * attempt, 5.0))  # short, bounded backoff: most cuts are one-off
        else:
            kept = part.stat().st_size if part.exists() else 0
            raise DownloadError(
                f"downloading {shown} failed {retries + 1} times (last: {last}). The {kept} bytes "
                f"received so far are kept in {part}: run again to resume from there, or download "
                f"the file yourself and pass the local path"
            )
        os.replace(part, dest)  # atomic: dest is either absent or complete
        _fsync_dir(dest.parent)
    return dest


def _attempt(
    url: str, shown: str, part: Path, expected: dict[str, str], max_bytes: int | None, progress: bool, timeout: float
) -> None:
    """One request: resume `part` from its size and stream the rest. Returns when `part` is complete and verified."""
    offset = part.stat().st_size if part.exists() else 0
    if max_bytes is not None and offset > max_bytes:
        offset = _truncate(part)
    hashers = _hashers(expected, part if offset else None)  # hash the kept prefix before the connection waits on us
    # identity: Content-Length then counts the file's own bytes, which is what we compare against
    headers = {"User-Agent": "gansvc-download", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as err:
        err.close()
        if err.code == 416 and offset:  # nothing left past `offset`: the .part is complete, or it is not this file
            whole = err.headers.get("Content-Range", "").rpartition("/")[2].strip()  # "bytes */<size>"
            if whole == str(offset) and _mismatch(hashers) is None:
                return
            _truncate(part)
            return _attempt(url, shown, part, expected, max_bytes, progress, timeout)  # offset 0: no Range, no 416
        if err.code in _RETRY_STATUS:
            raise _Retry(f"HTTP {err.code} {err.reason}") from None
        raise DownloadError(
            f"cannot download {shown}: HTTP {err.code} {err.reason}. Check the URL (and access "
            f"rights), or download the file yourself and pass the local path"
        ) from None
    except (OSError, http.client.HTTPException) as err:  # refused, reset, DNS, timeout: maybe transient
        raise _Retry(f"cannot connect: {err}") from None
    with resp:
        length = resp.headers.get("Content-Length", "")
        length_n = int(length) if length.isdigit() else None
        if resp.status == 206:
            got = _CONTENT_RANGE.fullmatch(resp.headers.get("Content-Range", "").strip())
            if not got or int(got[1]) != offset:  # not the range asked for: appending would corrupt the file
                _truncate(part)
                raise _Retry(
                    f"server answered Range bytes={offset}- with Content-Range "
                    f"{resp.headers.get('Content-Range')!r}; restarting from 0"
                )
            total = int(got[3]) if got[3] != "*" else (offset + length_n if length_n is not None else None)
        else:  # 200: the whole file; a server that ignored our Range sends it all again, so start over
            if offset:
                offset = _truncate(part)
                hashers = _hashers(expected, None)
            total = length_n
        if max_bytes is not None and total is not None and total > max_bytes:
            part.unlink(missing_ok=True)
            raise _too_big(shown, f"is {total} bytes", max_bytes)
        size = _stream(resp, part, offset, total, hashers, max_bytes, shown, progress)
    if total is not None and size != total:  # the cut that urllib lets through (see the module docstring)
        raise _Retry(f"connection closed after {size} of {total} bytes")
    if (bad := _mismatch(hashers)) is not None:
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"{shown}: {bad}. The source or its mirror may be corrupt, or the file changed since the "
            f"checksum was recorded; the download was deleted. Try again later or another mirror, or "
            f"skip the check where the command offers it (e.g. --skip-checksum) if you trust it"
        )


def _stream(
    resp: http.client.HTTPResponse,
    part: Path,
    offset: int,
    total: int | None,
    hashers: dict[str, tuple[str, hashlib._Hash]],
    max_bytes: int | None,
    shown: str,
    progress: bool,
) -> int:
    """Append the body to `part` (kept on a cut, for the resume); returns the file's size."""
    size = offset
    with (
        open(part, "ab" if offset else "wb") as out,
        tqdm(
            total=total,
            initial=offset,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=f"downloading {part.name[:-5]}",
            disable=not progress,
            file=sys.stderr,
        ) as bar,
    ):
        while True:
            try:
                # read1: what has arrived, so a cut or a timeout loses nothing already received (read(n) would)
                chunk = resp.read1(_CHUNK)
            except (OSError, http.client.HTTPException) as err:  # IncompleteRead (cut chunked), reset, timeout
                raise _Retry(f"connection lost after {size} of {total or '?'} bytes: {err!r}") from None
            if not chunk:
                break
            size += len(chunk)
            if max_bytes is not None and size > max_bytes:  # no (or a lying) Content-Length: cap what arrives
                out.close()
                part.unlink(missing_ok=True)
                raise _too_big(shown, f"sent more than {max_bytes} bytes", max_bytes)
            try:
                out.write(chunk)
            except OSError as err:  # disk full / read-only: retrying will not help
                raise DownloadError(
                    f"cannot write {part}: {err}. Free disk space or use another cache directory"
                ) from None
            for _, h in hashers.values():
                h.update(chunk)
            bar.update(len(chunk))
        out.flush()
        os.fsync(out.fileno())
    return size


def _check_args(
    shown: str, url: str, *, sha256: str | None, md5: str | None, retries: int, max_bytes: int | None, timeout: float
) -> dict[str, str]:
    """Validate the arguments; returns {algorithm: expected lowercase hex digest}."""
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise DownloadError(
            f"cannot download {shown}: only http:// and https:// URLs are fetched; download it "
            f"yourself and pass the local path"
        )
    if retries < 0 or timeout <= 0 or (max_bytes is not None and max_bytes <= 0):
        raise DownloadError(
            f"bad download settings retries={retries} timeout={timeout} max_bytes={max_bytes}: "
            f"use retries >= 0, timeout > 0 and max_bytes > 0 (or no cap)"
        )
    expected = {algo: v.strip().lower() for algo, v in (("sha256", sha256), ("md5", md5)) if v}
    for algo, v in expected.items():
        if not re.fullmatch(f"[0-9a-f]{{{_HEX_LEN[algo]}}}", v):
            raise DownloadError(f"{algo} {v!r} is not a {algo} digest: give {_HEX_LEN[algo]} hexadecimal digits")
    return expected


def _hashers(expected: dict[str, str], prefix: Path | None) -> dict[str, tuple[str, hashlib._Hash]]:
    """{algo: (expected, hasher)}, fed with the bytes already in `prefix`."""
    hashers = {algo: (want, hashlib.new(algo)) for algo, want in expected.items()}
    if hashers and prefix is not None:
        with open(prefix, "rb") as f:
            while chunk := f.read(_CHUNK):
                for _, h in hashers.values():
                    h.update(chunk)
    return hashers


def _mismatch(hashers: dict[str, tuple[str, hashlib._Hash]]) -> str | None:
    for algo, (want, h) in hashers.items():
        if (got := h.hexdigest()) != want:
            return f"{algo} mismatch: expected {want}, got {got}"
    return None


def _too_big(shown: str, what: str, max_bytes: int) -> DownloadError:
    return DownloadError(
        f"{shown} {what}, over the download cap of {max_bytes} bytes ({max_bytes / 1e9:.3g} GB); "
        f"nothing was kept. Raise the cap (--max-download-gb) if this size is expected"
    )


def _truncate(part: Path) -> int:
    part.unlink(missing_ok=True)
    return 0


def _shown(url: str) -> str:
    """The URL for messages, without user info or query: presigned URLs carry credentials there."""
    p = urllib.parse.urlsplit(url)
    bare = urllib.parse.urlunsplit((p.scheme, p.netloc.rpartition("@")[2], p.path, "", ""))
    return bare + ("?…" if p.query else "")


@contextlib.contextmanager
def _locked(dest: Path, progress: bool) -> Iterator[None]:
    """Exclusive flock on `<dest>.lock` for the whole fetch. The file stays: unlinking it would race a waiter."""
    with open(dest.with_name(dest.name + ".lock"), "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if progress:
                print(f"waiting for another process downloading {dest.name}", file=sys.stderr)
            fcntl.flock(f, fcntl.LOCK_EX)
        except OSError:  # a filesystem without flock (some network mounts): go on unlocked
            pass
        yield


def _fsync_dir(path: Path) -> None:
    """Persist the rename itself (POSIX: a rename is durable only once its directory is synced)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
