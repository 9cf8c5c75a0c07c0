"""storage: URIs, round trips on the real S3 server and on local folders, one settings source for boto3 and pyarrow."""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from gansvc import local, storage


@pytest.mark.parametrize(
    ("uri", "scheme", "bucket", "key"),
    [("s3://b/k/x.png", "s3", "b", "k/x.png"), ("s3://b", "s3", "b", ""), ("s3://b/p/", "s3", "b", "p")],
)
def test_parse_s3(uri: str, scheme: str, bucket: str, key: str) -> None:
    loc = storage.parse_uri(uri)
    assert (loc.scheme, loc.bucket, loc.key) == (scheme, bucket, key)
    assert loc.join("a", "/b/").uri() == f"s3://{bucket}/{key + '/' if key else ''}a/b"


def test_parse_local(tmp_path: Path) -> None:
    assert storage.parse_uri(str(tmp_path)).path == str(tmp_path)
    assert storage.parse_uri(f"file://{tmp_path}").path == str(tmp_path)
    assert not storage.parse_uri("relative/dir").is_s3


@pytest.mark.parametrize("bad", ["", "gs://bucket/x", "s3:///nobucket"])
def test_parse_rejects(bad: str) -> None:
    with pytest.raises(storage.StorageError):
        storage.parse_uri(bad)


def _roundtrip(root: str) -> None:
    base = storage.parse_uri(root)
    storage.write_bytes(base.join("a/one.bin").uri(), b"\x00\x01payload")
    storage.write_json(base.join("a/meta.json").uri(), {"k": [1, 2]})
    assert storage.read_bytes(base.join("a/one.bin").uri()) == b"\x00\x01payload"
    assert storage.read_json(base.join("a/meta.json").uri()) == {"k": [1, 2]}
    assert storage.exists(base.join("a/one.bin").uri())
    assert not storage.exists(base.join("a/none.bin").uri())
    listed = {o.rel: o.size for o in storage.list_objects(root)}
    assert listed == {"a/one.bin": 9, "a/meta.json": len(storage.read_bytes(base.join("a/meta.json").uri()))}
    with pytest.raises(storage.StorageError, match="no such"):
        storage.read_bytes(base.join("missing").uri())
    storage.delete(base.join("a/one.bin").uri())
    assert not storage.exists(base.join("a/one.bin").uri())


def test_roundtrip_s3(s3_prefix: str) -> None:
    _roundtrip(s3_prefix)


def test_roundtrip_local(tmp_path: Path) -> None:
    _roundtrip(str(tmp_path / "store"))
    assert not list((tmp_path / "store" / "a").glob("*.tmp")), "atomic writes leave no temp files"


def test_etag_is_md5(s3_prefix: str) -> None:
    import hashlib

    storage.write_bytes(f"{s3_prefix}/x", b"hello")
    (obj,) = storage.list_objects(s3_prefix)
    assert obj.etag == hashlib.md5(b"hello").hexdigest()


def test_arrow_filesystem_sees_boto_writes(s3_prefix: str) -> None:
    """boto3 and pyarrow are built from the same settings: what one writes the other reads."""
    storage.write_bytes(f"{s3_prefix}/from-boto.txt", b"boto")
    fs, path = storage.arrow_filesystem(s3_prefix)
    with fs.open_input_stream(f"{path}/from-boto.txt") as f:
        assert f.read() == b"boto"
    with fs.open_output_stream(f"{path}/from-arrow.txt") as f:
        f.write(b"arrow")
    assert storage.read_bytes(f"{s3_prefix}/from-arrow.txt") == b"arrow"


def test_missing_bucket_is_a_clear_error(stack: local.StackState) -> None:
    with pytest.raises(storage.StorageError, match="does not exist"):
        storage.check_bucket("s3://no-such-bucket-here/x")


def test_bad_credentials_are_named(stack: local.StackState, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    with pytest.raises(storage.StorageError, match="AWS_SECRET_ACCESS_KEY"):
        storage.read_bytes(f"s3://{stack.bucket}/anything")


def test_unreachable_endpoint_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # discard port: nothing listens
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("GANSVC_S3_RETRY_SECONDS", "2")  # a refused connection is retried (the server may be starting)
    with pytest.raises(storage.StorageError, match="cannot reach"):
        storage.read_bytes("s3://b/k")


# ------------------------------------------------------------------------------ transient S3 errors (issue 13, 7a)


def _client_error(code: str, status: int) -> Exception:
    """The exception botocore raises for an S3 error answer (an exception object, not a mock of S3)."""
    from botocore.exceptions import ClientError

    return ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject"
    )


@pytest.mark.parametrize(
    ("code", "status", "transient"),
    [
        ("InternalError", 500, True),
        ("SlowDown", 503, True),
        ("ServiceUnavailable", 503, True),
        ("Oops", 502, True),
        ("NoSuchKey", 404, False),
        ("AccessDenied", 403, False),
        ("SignatureDoesNotMatch", 403, False),
        ("NoSuchBucket", 404, False),
    ],
)
def test_transient_errors_are_told_apart(code: str, status: int, transient: bool) -> None:
    assert storage.is_transient(_client_error(code, status)) is transient


def test_a_persistent_internal_error_names_the_server_not_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")
    calls = []

    def failing() -> None:
        calls.append(1)
        raise _client_error("InternalError", 500)

    with pytest.raises(storage.StorageError) as info:
        storage.with_retries(failing, "s3://b/k", budget=1.0)
    message = str(info.value)
    assert "the S3 server at http://127.0.0.1:9 is still starting / not healthy" in message
    assert "InternalError" in message and "check the endpoint, credentials and bucket" not in message
    assert len(calls) >= 3, "retried with backoff"


@pytest.fixture(scope="module")
def own_s3() -> Iterator[Path]:
    """An S3 server of this module's own, to stop and start (the session one serves other tests)."""
    from gansvc import local
    from tests.conftest import free_port_base
    from tests.integration.test_local import short_temp_dir

    state_dir = short_temp_dir("gss-")
    local.up(state_dir, port_base=free_port_base(), with_ray=False)
    try:
        yield state_dir
    finally:
        local.down(state_dir)
        shutil.rmtree(state_dir, ignore_errors=True)


def _use(state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    from gansvc import local

    state = local.load_state(state_dir)
    for key, value in state.env().items():
        monkeypatch.setenv(key, value)
    return f"s3://{state.bucket}/{uuid.uuid4().hex[:8]}"


@pytest.mark.timeout(180)
def test_an_s3_restart_is_ridden_out(own_s3: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """S3 down for 12 s (the process stopped, then started again): reads, writes and listings issued meanwhile wait
    for it and succeed."""
    from gansvc import local

    root = _use(own_s3, monkeypatch)
    monkeypatch.setenv("GANSVC_S3_RETRY_SECONDS", "90")
    storage.write_bytes(f"{root}/a.bin", b"before")
    assert local.stop_s3(own_s3)
    restart = threading.Timer(12, lambda: local.start_s3(own_s3))
    restart.start()
    try:
        t0 = time.monotonic()
        assert storage.read_bytes(f"{root}/a.bin") == b"before"
        assert time.monotonic() - t0 >= 10, "the read waited for the server"
        storage.write_bytes(f"{root}/b.bin", b"after")
        assert {o.rel for o in storage.list_objects(root)} == {"a.bin", "b.bin"}
    finally:
        restart.join()


@pytest.mark.timeout(120)
def test_an_s3_server_that_stays_down_is_named(own_s3: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gansvc import local

    root = _use(own_s3, monkeypatch)
    monkeypatch.setenv("GANSVC_S3_RETRY_SECONDS", "3")
    state = local.load_state(own_s3)
    assert local.stop_s3(own_s3)
    try:
        t0 = time.monotonic()
        with pytest.raises(storage.StorageError, match="still starting / not healthy") as info:
            storage.read_bytes(f"{root}/a.bin")
        assert 2 <= time.monotonic() - t0 < 30
        assert state.s3_endpoint in str(info.value) and "GANSVC_S3_RETRY_SECONDS" in str(info.value)
    finally:
        local.start_s3(own_s3)


def test_retry_budget_is_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GANSVC_S3_RETRY_SECONDS", "soon")
    with pytest.raises(storage.StorageError, match="GANSVC_S3_RETRY_SECONDS"):
        storage.retry_seconds()
