"""One place that turns `s3://bucket/key` URIs and local paths into I/O.

Both the boto3 client (ingestion, manifests, registry) and the pyarrow filesystem (Ray Train / Ray Data storage) are
built from the same settings, taken from the standard AWS environment variables:
`AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL` (optional: any S3-compatible store, e.g. the embedded one),
`AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN` (optional: else the default credential chain,
e.g. an instance profile), `AWS_REGION` / `AWS_DEFAULT_REGION`. So one command works on AWS S3, any S3-compatible
store and the embedded stack.

Writes are atomic per object: a local file is written to a temporary name and renamed; an S3 PUT is atomic. A set of
objects (a dataset, a checkpoint) is committed by writing its manifest last: readers go through the manifest only.

Transient S3 failures (a server still starting or restarting: InternalError, SlowDown, other 5xx, connection refused
or reset, timeouts) are retried with bounded exponential backoff for up to `$GANSVC_S3_RETRY_SECONDS` (default 30 s);
when they persist the error names the server as not healthy, not the endpoint, credentials or bucket.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import random
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

DEFAULT_REGION = "us-east-1"
DEFAULT_RETRY_SECONDS = 30.0
# Attempts of pyarrow's S3 retry strategy (AWS "standard": jittered exponential backoff capped at 20 s). Measured here
# against a closed port: 3 attempts (pyarrow's default) give up at once, 5 after 12 s, 10 after 80 s.
ARROW_RETRY_ATTEMPTS = 10
# Error codes of a server that is up but not serving yet (SeaweedFS answers InternalError while its volume servers
# register, "volume 1 not found" in its log) or overloaded: worth retrying, unlike 4xx answers.
TRANSIENT_CODES = frozenset(
    {
        "InternalError",
        "ServiceUnavailable",
        "SlowDown",
        "RequestTimeout",
        "Throttling",
        "ThrottlingException",
        "500",
        "502",
        "503",
        "504",
    }
)
T = TypeVar("T")
_log = logging.getLogger(__name__)


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
    """`s3://bucket/key` -> s3 location; `file:///x`, `/x` or `rel/x` -> local absolute path. Other schemes are
    errors."""
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
        raise StorageError(
            f"unsupported URI scheme {parsed.scheme!r} in {uri!r}: use s3://bucket/prefix or a local path"
        )
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
        return cls(
            endpoint, region, e.get("AWS_ACCESS_KEY_ID"), e.get("AWS_SECRET_ACCESS_KEY"), e.get("AWS_SESSION_TOKEN")
        )

    def describe(self) -> str:
        return self.endpoint_url or f"AWS S3 ({self.region})"


def s3_client(settings: S3Settings | None = None) -> Any:
    """A boto3 S3 client for these settings (cached per settings; clients are thread-safe)."""
    return _s3_client(settings or S3Settings.from_env())


@functools.lru_cache(maxsize=8)
def _s3_client(settings: S3Settings) -> Any:
    import boto3
    from botocore.config import Config

    cfg = Config(
        retries={"max_attempts": 5, "mode": "standard"},
        max_pool_connections=32,
        s3={"addressing_style": "path"} if settings.endpoint_url else {},
    )
    return boto3.client(
        "s3",
        endpoint_url=settings.endpoint_url,
        region_name=settings.region,
        aws_access_key_id=settings.access_key,
        aws_secret_access_key=settings.secret_key,
        aws_session_token=settings.session_token,
        config=cfg,
    )


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
    return retrying_s3_filesystem(kwargs), loc.arrow_path()


def retrying_s3_filesystem(kwargs: dict[str, Any]) -> Any:
    """A pyarrow S3FileSystem that retries ARROW_RETRY_ATTEMPTS times, also after pickling.

    Ray Train writes checkpoints and its controller's state through this filesystem, in other processes (it pickles
    it). A controller write that fails fails the whole run (FailureConfig retries worker errors only), and pyarrow's
    default (3 attempts) gives up within seconds of an S3 restart. pyarrow's own pickling drops the retry strategy
    (S3FileSystem.__reduce__ in pyarrow 26 omits it), hence the subclass."""
    return _retrying_class()(**kwargs)


@functools.lru_cache(maxsize=1)
def _retrying_class() -> type:
    import pyarrow.fs as pafs

    # the ignore: pyarrow ships no type information, so its classes are Any to mypy (disallow_subclassing_any)
    class RetryingS3FileSystem(pafs.S3FileSystem):  # type: ignore[misc]
        def __init__(self, **kwargs: Any) -> None:
            strategy = pafs.AwsStandardS3RetryStrategy(max_attempts=ARROW_RETRY_ATTEMPTS)
            super().__init__(**kwargs, retry_strategy=strategy)
            self._kwargs = kwargs

        def __reduce__(self) -> tuple[Any, tuple[dict[str, Any]]]:
            return retrying_s3_filesystem, (self._kwargs,)

    return RetryingS3FileSystem


def retry_seconds() -> float:
    """The retry budget for transient S3 errors ($GANSVC_S3_RETRY_SECONDS; 0 disables retries)."""
    raw = os.environ.get("GANSVC_S3_RETRY_SECONDS", "")
    try:
        value = float(raw) if raw.strip() else DEFAULT_RETRY_SECONDS
    except ValueError:
        raise StorageError(
            f"GANSVC_S3_RETRY_SECONDS={raw!r} is not a number of seconds (e.g. 30; 0 = no retries)"
        ) from None
    if value < 0:
        raise StorageError(f"GANSVC_S3_RETRY_SECONDS={raw!r} must be >= 0")
    return value


def is_transient(err: BaseException) -> bool:
    """True for errors a healthy server would not give: 5xx/throttling answers, refused or broken connections.

    Wrapped errors count by their cause (boto3's upload_file raises S3UploadFailedError from the ClientError)."""
    seen: BaseException | None = err
    for _ in range(5):
        if seen is None:
            return False
        if _is_transient_one(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _is_transient_one(err: BaseException) -> bool:
    from botocore.exceptions import (
        ClientError,
        ConnectionClosedError,
        ConnectTimeoutError,
        EndpointConnectionError,
        ReadTimeoutError,
        ResponseStreamingError,
    )

    if isinstance(err, ClientError):
        error = err.response.get("Error", {})
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return str(error.get("Code")) in TRANSIENT_CODES or int(status) >= 500
    if isinstance(
        err,
        (EndpointConnectionError, ConnectionClosedError, ConnectTimeoutError, ReadTimeoutError, ResponseStreamingError),
    ):
        return True
    try:
        from urllib3.exceptions import ProtocolError
    except ImportError:  # pragma: no cover - urllib3 comes with botocore
        return False
    return isinstance(err, (ProtocolError, ConnectionError))


def _error_code(err: BaseException) -> str:
    return str(getattr(err, "response", {}).get("Error", {}).get("Code") or type(err).__name__)


def with_retries(call: Callable[[], T], uri: str, budget: float | None = None) -> T:
    """Run one S3 operation; retry transient errors with backoff (0.2 s doubling, capped at 3 s, jittered) until the
    budget is spent, then raise StorageError saying the server is not healthy. Other errors propagate unchanged."""
    limit = retry_seconds() if budget is None else budget
    start = time.monotonic()
    delay = 0.2
    attempts = 0
    while True:
        attempts += 1
        try:
            return call()
        except Exception as err:
            if not is_transient(err):
                raise
            waited = time.monotonic() - start
            if waited >= limit:
                raise StorageError(_unhealthy_message(err, uri, attempts, waited)) from err
            if attempts == 1 and limit >= 5:
                _log.warning(
                    "%s: %s from %s; retrying for up to %.0f s (GANSVC_S3_RETRY_SECONDS)",
                    uri,
                    _error_code(err),
                    S3Settings.from_env().describe(),
                    limit,
                )
            time.sleep(min(delay * (0.5 + random.random() / 2), limit - waited))
            delay = min(delay * 2, 3.0)


def _unhealthy_message(err: BaseException, uri: str, attempts: int, waited: float) -> str:
    endpoint = S3Settings.from_env().describe()
    tried = f"{_error_code(err)}: {err}; {attempts} attempt(s) over {waited:.1f} s"
    if _server_answered(err):  # it runs, but does not serve yet
        return (
            f"{uri}: the S3 server at {endpoint} is still starting / not healthy ({tried}). This is not a problem "
            "with the endpoint, credentials or bucket: wait and retry, check the server's log (embedded stack: "
            "python -m gansvc.local status; logs/s3.log), or allow a longer wait with GANSVC_S3_RETRY_SECONDS"
        )
    return (
        f"{uri}: cannot reach {endpoint}: the S3 server at {endpoint} is still starting / not healthy, or nothing "
        f"listens there ({tried}). Is the S3 endpoint up? (embedded stack: python -m gansvc.local up; "
        'eval "$(python -m gansvc.local env)"); a longer wait: GANSVC_S3_RETRY_SECONDS'
    )


def _server_answered(err: BaseException) -> bool:
    """True if the error (or what it wraps) is an HTTP answer of the server, not a connection failure."""
    from botocore.exceptions import ClientError

    seen: BaseException | None = err
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(seen, ClientError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


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
        raise StorageError(
            f"{uri}: cannot reach {settings.describe()}: {err}. Is the S3 endpoint up? (embedded "
            'stack: python -m gansvc.local up; eval "$(python -m gansvc.local env)")'
        ) from err
    raise err


def exists(uri: str) -> bool:
    loc = parse_uri(uri)
    if not loc.is_s3:
        return Path(loc.path).exists()
    from botocore.exceptions import ClientError

    try:
        with_retries(lambda: s3_client().head_object(Bucket=loc.bucket, Key=loc.key), uri)
        return True
    except StorageError:
        raise
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
        # the body is read inside the retried call: a connection cut mid-body is retried as a whole
        data: bytes = with_retries(lambda: s3_client().get_object(Bucket=loc.bucket, Key=loc.key)["Body"].read(), uri)
        return data
    except StorageError:
        raise
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
        with_retries(lambda: s3_client().put_object(Bucket=loc.bucket, Key=loc.key, Body=data, **extra), uri)
    except StorageError:
        raise
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
    token: str | None = None
    while True:  # page by page (not the paginator): a transient error retries one page, not the whole listing
        kwargs: dict[str, Any] = {"Bucket": loc.bucket, "Prefix": prefix}
        if token:
            kwargs["ContinuationToken"] = token
        try:
            page = with_retries(functools.partial(_list_page, kwargs), uri)
        except StorageError:
            raise
        except Exception as err:  # noqa: BLE001
            _reraise(err, uri)
        for obj in page.get("Contents", []):
            if obj["Key"] == prefix or obj["Key"].endswith("/"):
                continue  # directory markers (pyarrow writes them)
            yield ObjectInfo(obj["Key"][len(prefix) :], int(obj["Size"]), obj.get("ETag", "").strip('"'))
        token = page.get("NextContinuationToken") if page.get("IsTruncated") else None
        if not token:
            return


def _list_page(kwargs: dict[str, Any]) -> Any:
    """One page of an S3 listing (list_objects_v2 with `kwargs`)."""
    return s3_client().list_objects_v2(**kwargs)


def upload_file(local_path: str | Path, uri: str, content_type: str | None = None) -> None:
    loc = parse_uri(uri)
    if not loc.is_s3:
        write_bytes(uri, Path(local_path).read_bytes())
        return
    extra = {"ContentType": content_type} if content_type else None
    try:
        with_retries(lambda: s3_client().upload_file(str(local_path), loc.bucket, loc.key, ExtraArgs=extra), uri)
    except StorageError:
        raise
    except Exception as err:  # noqa: BLE001
        _reraise(err, uri)


def delete(uri: str) -> None:
    loc = parse_uri(uri)
    if not loc.is_s3:
        Path(loc.path).unlink(missing_ok=True)
        return
    try:
        with_retries(lambda: s3_client().delete_object(Bucket=loc.bucket, Key=loc.key), uri)
    except StorageError:
        raise
    except Exception as err:  # noqa: BLE001
        _reraise(err, uri)


def check_bucket(uri: str) -> None:
    """Fail early with a clear message when an s3 URI's bucket is missing or unreachable (no-op for local paths)."""
    loc = parse_uri(uri)
    if not loc.is_s3:
        return
    try:
        with_retries(lambda: s3_client().head_bucket(Bucket=loc.bucket), uri)
    except StorageError:
        raise
    except Exception as err:  # noqa: BLE001
        code = getattr(err, "response", {}).get("Error", {}).get("Code")
        if code in ("404", "NoSuchBucket", "NotFound"):
            raise StorageError(
                f"bucket {loc.bucket!r} does not exist at {S3Settings.from_env().describe()}: "
                "create it first (aws s3 mb s3://BUCKET) or use an existing one"
            ) from None
        _reraise(err, uri)
