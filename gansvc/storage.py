"""One place that turns `s3://bucket/key` URIs and local paths into I/O.

Both the boto3 client (ingestion, manifests, registry) and the pyarrow filesystem (Ray Train / Ray Data storage) are
built from the same settings, taken from the standard AWS environment variables:
`AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL` (optional: any S3-compatible store, e.g. the embedded one),
`AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN` (optional: else the default credential chain,
e.g. an instance profile), `AWS_REGION` / `AWS_DEFAULT_REGION`. So one command works on AWS S3, any S3-compatible
store and the embedded stack.

Writes are atomic per object: a local file is written to a temporary name and renamed; an S3 PUT is atomic. A set of
objects (a dataset, a checkpoint) is committed by writing its manifest last: readers go through the manifest only.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

DEFAULT_REGION = "us-east-1"


class StorageError(RuntimeError):
    """A storage operation failed; the message says which URI and what to check."""


@dataclass(frozen=True)
class Location:
    """A parsed URI: `scheme` is "s3" or "file"; for s3, `bucket` and `key` (no leading slash); for file, `path`."""

    scheme: str
    bucket: str = ""
    key: str = ""
    path: str = ""

    @property
    def is_s3(self) -> bool:
        return self.scheme == "s3"

    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}".rstrip("/") if self.is_s3 else self.path

    def join(self, *parts: str) -> Location:
        rel = "/".join(p.strip("/") for p in parts if p.strip("/"))
        if self.is_s3:
            key = f"{self.key.rstrip('/')}/{rel}" if self.key else rel
            return Location("s3", self.bucket, key.strip("/"))
        return Location("file", path=str(Path(self.path, rel)) if rel else self.path)

    def arrow_path(self) -> str:
        """The path form pyarrow filesystems (and Ray's `storage_path` with `storage_filesystem`) take."""
        return f"{self.bucket}/{self.key}".rstrip("/") if self.is_s3 else self.path


def parse_uri(uri: str) -> Location:
    """`s3://bucket/key` -> s3 location; `file:///x`, `/x` or `rel/x` -> local absolute path. Other schemes are errors."""
    if not uri or not uri.strip():
        raise StorageError("empty storage URI: give s3://bucket/prefix or a local path")
    uri = uri.strip()
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise StorageError(f"{uri!r} has no bucket: write s3://BUCKET/prefix")
        return Location("s3", parsed.netloc, parsed.path.lstrip("/").rstrip("/"))
    if parsed.scheme == "file":
        return Location("file", path=str(Path(parsed.path).resolve()))
    if parsed.scheme and len(parsed.scheme) > 1:  # one letter = a Windows drive, not a scheme
        raise StorageError(f"unsupported URI scheme {parsed.scheme!r} in {uri!r}: use s3://bucket/prefix or a local path")
    return Location("file", path=str(Path(uri).expanduser().resolve()))


@dataclass(frozen=True)
class S3Settings:
    endpoint_url: str | None
    region: str
    access_key: str | None
    secret_key: str | None
    session_token: str | None

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> S3Settings:
        e = os.environ if env is None else env
        endpoint = e.get("AWS_ENDPOINT_URL_S3") or e.get("AWS_ENDPOINT_URL") or None
        region = e.get("AWS_REGION") or e.get("AWS_DEFAULT_REGION") or DEFAULT_REGION
        return cls(endpoint, region, e.get("AWS_ACCESS_KEY_ID"), e.get("AWS_SECRET_ACCESS_KEY"),
                   e.get("AWS_SESSION_TOKEN"))

    def describe(self) -> str:
        return self.endpoint_url or f"AWS S3 ({self.region})"


def s3_client(settings: S3Settings | None = None) -> Any:
    """A boto3 S3 client for these settings (cached per settings; clients are thread-safe)."""
    return _s3_client(settings or S3Settings.from_env())


@functools.lru_cache(maxsize=8)
def _s3_client(settings: S3Settings) -> Any:
    import boto3
    from botocore.config import Config

    cfg = Config(retries={"max_attempts": 5, "mode": "standard"}, max_pool_connections=32,
                 s3={"addressing_style": "path"} if settings.endpoint_url else {})
    return boto3.client("s3", endpoint_url=settings.endpoint_url, region_name=settings.region,
                        aws_access_key_id=settings.access_key, aws_secret_access_key=settings.secret_key,
                        aws_session_token=settings.session_token, config=cfg)


def arrow_filesystem(uri: str, settings: S3Settings | None = None) -> tuple[Any, str]:
    """(pyarrow filesystem, path) for a URI, from the same settings as `s3_client` (for Ray Train / Ray Data)."""
    import pyarrow.fs as pafs

    loc = parse_uri(uri)
    if not loc.is_s3:
        return pafs.LocalFileSystem(), loc.path
    s = settings or S3Settings.from_env()
    kwargs: dict[str, Any] = {"region": s.region}
    if s.endpoint_url:
        parsed = urlparse(s.endpoint_url)
        kwargs["endpoint_override"] = parsed.netloc or s.endpoint_url
        kwargs["scheme"] = parsed.scheme or "https"
    if s.access_key and s.secret_key:
        kwargs.update(access_key=s.access_key, secret_key=s.secret_key)
        if s.session_token:
            kwargs["session_token"] = s.session_token
    return pafs.S3FileSystem(**kwargs), loc.arrow_path()


def _client_error_message(err: Exception, uri: str, settings: S3Settings) -> str:
    code = getattr(err, "response", {}).get("Error", {}).get("Code", type(err).__name__)
    hints = {
        "NoSuchBucket": "the bucket does not exist: create it, or use an existing bucket",
        "InvalidAccessKeyId": "the access key is not known: check AWS_ACCESS_KEY_ID",
        "SignatureDoesNotMatch": "the secret key is wrong: check AWS_SECRET_ACCESS_KEY",
        "AccessDenied": "these credentials may not access this object",
    }
    hint = hints.get(str(code), "check the endpoint, credentials and bucket")
    return f"{uri}: {code} at {settings.describe()} ({hint})"


def _reraise(err: Exception, uri: str) -> None:
    """Re-raise a boto error as a StorageError that names the URI, the endpoint and what to check."""
    from botocore.exceptions import BotoCoreError, ClientError

    settings = S3Settings.from_env()
    if isinstance(err, ClientError):
        raise StorageError(_client_error_message(err, uri, settings)) from err
    if isinstance(err, BotoCoreError):
        raise StorageError(f"{uri}: cannot reach {settings.describe()}: {err}. Is the S3 endpoint up? (embedded "
                           "stack: python -m gansvc.local up; eval \"$(python -m gansvc.local env)\")") from err
    raise err


def exists(uri: str) -> bool:
    loc = parse_uri(uri)
    if not loc.is_s3:
        return Path(loc.path).exists()
    from botocore.exceptions import ClientError

    try:
        s3_client().head_object(Bucket=loc.bucket, Key=loc.key)
        return True
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return False
        _reraise(err, uri)
    except Exception as err:  # noqa: BLE001 - re-raised with a readable message
        _reraise(err, uri)
    return False


def read_bytes(uri: str) -> bytes:
    loc = parse_uri(uri)
    if not loc.is_s3:
        try:
            return Path(loc.path).read_bytes()
        except FileNotFoundError:
            raise StorageError(f"{uri}: no such file") from None
    from botocore.exceptions import ClientError

    try:
        return s3_client().get_object(Bucket=loc.bucket, Key=loc.key)["Body"].read()
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            raise StorageError(f"{uri}: no such object") from None
        _reraise(err, uri)
    except Exception as err:  # noqa: BLE001
        _reraise(err, uri)
    raise AssertionError("unreachable")


def write_bytes(uri: str, data: bytes, content_type: str | None = None) -> None:
    """Write one object atomically (local: temp file + rename; S3: a single PUT is atomic)."""
    loc = parse_uri(uri)
    if not loc.is_s3:
        path = Path(loc.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return
    extra = {"ContentType": content_type} if content_type else {}
    try:
        s3_client().put_object(Bucket=loc.bucket, Key=loc.key, Body=data, **extra)
    except Exception as err:  # noqa: BLE001
        _reraise(err, uri)


def read_json(uri: str) -> Any:
    raw = read_bytes(uri)
    try:
        return json.loads(raw)
    except json.JSONDecodeError as err:
        raise StorageError(f"{uri}: not valid JSON ({err})") from None


def write_json(uri: str, obj: Any) -> None:
    write_bytes(uri, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode(), "application/json")


@dataclass(frozen=True)
class ObjectInfo:
    rel: str  # path relative to the listed prefix, "/"-separated
    size: int
    etag: str  # S3 ETag without quotes (MD5 hex for single-part uploads); "" for local files


def list_objects(uri: str) -> Iterator[ObjectInfo]:
    """Every object (recursively) under a prefix / directory."""
    loc = parse_uri(uri)
    if not loc.is_s3:
        root = Path(loc.path)
        if not root.exists():
            return
        for p in sorted(root.rglob("*")):
            if p.is_file():
                yield ObjectInfo(p.relative_to(root).as_posix(), p.stat().st_size, "")
        return
    prefix = f"{loc.key}/" if loc.key else ""
    try:
        pages = s3_client().get_paginator("list_objects_v2").paginate(Bucket=loc.bucket, Prefix=prefix)
        for page in pages:
            for obj in page.get("Contents", []):
                if obj["Key"] == prefix or obj["Key"].endswith("/"):
                    continue  # directory markers (pyarrow writes them)
                yield ObjectInfo(obj["Key"][len(prefix):], int(obj["Size"]), obj.get("ETag", "").strip('"'))
    except Exception as err:  # noqa: BLE001
        _reraise(err, uri)


def upload_file(local_path: str | Path, uri: str, content_type: str | None = None) -> None:
    loc = parse_uri(uri)
    if not loc.is_s3:
        write_bytes(uri, Path(local_path).read_bytes())
        return
    extra = {"ContentType": content_type} if content_type else None
    try:
        s3_client().upload_file(str(local_path), loc.bucket, loc.key, ExtraArgs=extra)
    except Exception as err:  # noqa: BLE001
        _reraise(err, uri)


def delete(uri: str) -> None:
    loc = parse_uri(uri)
    if not loc.is_s3:
        Path(loc.path).unlink(missing_ok=True)
        return
    try:
        s3_client().delete_object(Bucket=loc.bucket, Key=loc.key)
    except Exception as err:  # noqa: BLE001
        _reraise(err, uri)


def check_bucket(uri: str) -> None:
    """Fail early with a clear message when an s3 URI's bucket is missing or unreachable (no-op for local paths)."""
    loc = parse_uri(uri)
    if not loc.is_s3:
        return
    try:
        s3_client().head_bucket(Bucket=loc.bucket)
    except Exception as err:  # noqa: BLE001
        code = getattr(err, "response", {}).get("Error", {}).get("Code")
        if code in ("404", "NoSuchBucket", "NotFound"):
            raise StorageError(f"bucket {loc.bucket!r} does not exist at {S3Settings.from_env().describe()}: "
                               "create it first (aws s3 mb s3://BUCKET) or use an existing one") from None
        _reraise(err, uri)
