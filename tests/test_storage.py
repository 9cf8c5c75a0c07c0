"""storage: URIs, round trips on the real S3 server and on local folders, one settings source for boto3 and pyarrow."""

from __future__ import annotations

from pathlib import Path

import pytest

from gansvc import storage


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


def test_missing_bucket_is_a_clear_error(stack) -> None:  # noqa: ANN001
    with pytest.raises(storage.StorageError, match="does not exist"):
        storage.check_bucket("s3://no-such-bucket-here/x")


def test_bad_credentials_are_named(stack, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    with pytest.raises(storage.StorageError, match="AWS_SECRET_ACCESS_KEY"):
        storage.read_bytes(f"s3://{stack.bucket}/anything")


def test_unreachable_endpoint_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # discard port: nothing listens
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(storage.StorageError, match="cannot reach"):
        storage.read_bytes("s3://b/k")
