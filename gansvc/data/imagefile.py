"""What went wrong reading an image file, in words a user can act on (no torch import: light for every CLI)."""

from __future__ import annotations

import re

from PIL import UnidentifiedImageError

# PIL names the in-memory buffer it was given: "cannot identify image file <_io.BytesIO object at 0x7f...>"
_BUFFER = re.compile(r"\s*<_io\.BytesIO object at 0x[0-9a-fA-F]+>")


def describe_image_error(err: BaseException) -> str:
    """PIL's error as one readable phrase: what is wrong with the file, never the address of a Python object."""
    if isinstance(err, UnidentifiedImageError):
        return "not an image format PIL can read (PNG, JPEG, WebP, BMP, GIF, TIFF...)"
    text = _BUFFER.sub("", str(err)).strip()
    return f"{type(err).__name__}: {text}" if text else type(err).__name__
