"""Reading a translate upload safely: bounded body, allowed content types, PNG/JPEG only, pixel limit before decoding.

The server only ever reads the request body: no field names a file, path or URI.
"""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import AsyncIterable

import numpy as np
from PIL import Image

from gansvc.imaging import on_white

IMAGE_TYPES = ("image/png", "image/jpeg")
PART_TYPES = (*IMAGE_TYPES, "application/octet-stream")
FILE_FIELDS = ("image", "file")


class ApiError(Exception):
    """A request the API refuses: HTTP status, a stable machine-readable code and a message saying what to do."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


async def read_body(stream: AsyncIterable[bytes], content_length: str | None, max_bytes: int) -> bytes:
    """The whole body, refusing (413) more than max_bytes whether or not Content-Length was sent."""
    too_big = ApiError(413, "payload_too_large", f"the request body exceeds {max_bytes} bytes (max_request_bytes)")
    if content_length and content_length.isdigit() and int(content_length) > max_bytes:
        raise too_big
    buf = bytearray()
    async for chunk in stream:
        buf += chunk
        if len(buf) > max_bytes:
            raise too_big
    return bytes(buf)


def _param(header: str, name: str) -> str | None:
    m = re.search(rf'(?:^|;)\s*{name}="([^"]*)"', header) or re.search(rf"(?:^|;)\s*{name}=([^;\s]+)", header)
    return m.group(1) if m else None


def multipart_file(body: bytes, content_type: str) -> bytes:
    """The bytes of the first file part (field `image` or `file`, or any part with a filename) of a form upload."""
    boundary = _param(content_type, "boundary")
    if not boundary:
        raise ApiError(400, "invalid_multipart", "multipart/form-data without a boundary")
    for chunk in body.split(b"--" + boundary.encode("latin-1"))[1:]:
        if chunk.startswith(b"--"):
            break
        head, sep, data = chunk.partition(b"\r\n\r\n")
        if not sep:
            continue
        headers = {}
        for line in head.decode("latin-1").split("\r\n"):
            key, _, value = line.partition(":")
            if value:
                headers[key.strip().lower()] = value.strip()
        disposition = headers.get("content-disposition", "")
        if _param(disposition, "name") not in FILE_FIELDS and _param(disposition, "filename") is None:
            continue
        part_type = headers.get("content-type", "application/octet-stream").split(";")[0].strip().lower()
        if part_type not in PART_TYPES:
            raise ApiError(
                415,
                "unsupported_media_type",
                f"the uploaded file is {part_type}: upload a PNG or JPEG image (image/png or image/jpeg)",
            )
        return data[:-2] if data.endswith(b"\r\n") else data
    raise ApiError(400, "invalid_multipart", "no file in the form: send the image in a field named 'image'")


def upload_bytes(content_type: str | None, body: bytes) -> bytes:
    """The image bytes of a raw image/png|image/jpeg body or a multipart/form-data upload; 415 for anything else."""
    mime = (content_type or "").split(";")[0].strip().lower()
    if mime in IMAGE_TYPES:
        return body
    if mime == "multipart/form-data":
        return multipart_file(body, content_type or "")
    raise ApiError(
        415,
        "unsupported_media_type",
        f"got {mime or 'no content type'}: send the image as the body with "
        "Content-Type image/png or image/jpeg, or as multipart/form-data "
        "with a file field named 'image'",
    )


def decode_image(data: bytes, channels: int, max_pixels: int, min_side: int) -> np.ndarray:
    """PNG/JPEG bytes -> (H, W, C) uint8 with the model's channels. Size is checked from the header, before decoding."""
    if not data:
        raise ApiError(400, "invalid_image", "the upload is empty: send a PNG or JPEG image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img: Image.Image = Image.open(io.BytesIO(data), formats=("PNG", "JPEG"))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ApiError(413, "image_too_large", f"the image has more than {max_pixels} pixels (max_pixels)") from None
    except Exception:  # noqa: BLE001 - PIL raises several types for data it cannot identify
        raise ApiError(400, "invalid_image", "the upload is not a readable PNG or JPEG image") from None
    w, h = img.size
    if w * h > max_pixels:
        raise ApiError(
            413,
            "image_too_large",
            f"the image is {w}x{h} = {w * h} pixels; the limit is {max_pixels} (max_pixels): resize it first",
        )
    if min(w, h) < min_side:
        raise ApiError(400, "image_too_small", f"the image is {w}x{h}; both sides must be at least {min_side} pixels")
    try:  # transparency on white, the one rule training uses (gansvc.imaging.on_white)
        img = on_white(img).convert("L" if channels == 1 else "RGB")
    except Exception:  # noqa: BLE001 - truncated or corrupt pixel data shows up on decode
        raise ApiError(400, "invalid_image", "the image data is corrupt or truncated") from None
    arr = np.asarray(img, dtype=np.uint8)
    return arr.reshape(arr.shape[0], arr.shape[1], -1)
