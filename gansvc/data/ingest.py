"""`gansvc.data put`: validate a local folder, a .zip or an http(s) zip URL and upload it as a dataset.

Layouts (detected from the top-level folders, after stepping into a zip's single top folder as in the official
CycleGAN zips `horse2zebra/trainA/...`):
- unpaired: `trainA/ trainB/` and optional `testA/ testB/`, both or neither (the official CycleGAN layout);
- single:   `train/` and optional `test/`; or images directly at the root (taken as `train`);
- optional `labels.csv` at the root (single layout): header row, first column the file name (as `train/x.png`,
  `x.png` or the bare name), one column per attribute (e.g. `hair_color,eye_color`).
- optional segmentation masks, any layout: one PNG of class indices per image in a parallel folder named after the
  split plus `_masks`, same relative path, extension `.png`: `train/x.jpg` -> `train_masks/x.png`,
  `test/sub/y.png` -> `test_masks/sub/y.png`, `trainA/z.png` -> `trainA_masks/z.png` (images at the root of a single
  dataset take theirs from `train_masks/`). A mask is an 8-bit single-channel PNG (PIL mode L, or P whose palette
  indices are the classes), the size of its image, values 0..K-1 plus 255 = ignore. K is the number of lines of an
  optional `classes.txt` at the root (line i names class i; values >= K are then errors), else max value + 1.
  A split may have no masks at all (e.g. trainB/ without trainB_masks/); in a split that has a masks folder, an image
  without a valid mask and a mask without an image are skipped with the reason (an invalid mask skips its image too).

Every file is decoded; corrupt and non-image files are skipped and listed in the manifest with the reason, as are
unsafe entry names (absolute, `..`, backslashes: never written anywhere) and zip entries over the size limits.

Versions and overwrite (see `gansvc.data.manifest`): a put writes the files to `DEST/.v/<version>/<rel>`, <version>
being the first 16 hex digits of the source's content fingerprint (sha256 over every file's path and sha256), then
writes `manifest.json` last: the commit point. Only after that switch does it delete the previous version's files,
and only those the previous manifest listed (under its files_root, or at the root for manifests written before
versioning), plus `.v/*` folders of killed puts that the live manifest does not use. A prefix that holds objects but
no manifest is refused: put never deletes what it did not write. A killed put leaves the old dataset (or none)
readable; re-running it uploads only what is missing from the version folder (same MD5 = ETag, or same content for a
local destination) and commits. Re-putting a source with the same content is a no-op.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import functools
import hashlib
import io
import os
import sys
import threading
import time
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from collections.abc import Set as AbstractSet
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image
from tqdm import tqdm

from gansvc import __version__, storage
from gansvc.data.imagefile import describe_image_error
from gansvc.data.manifest import (
    CLASSES_NAME,
    LABELS_NAME,
    MANIFEST_NAME,
    SPLITS,
    VERSIONS_DIR,
    Layout,
    Manifest,
    Skipped,
    SplitInfo,
    mask_folder,
    path_problem,
    read_manifest,
    version_root,
)
from gansvc.data.spec import IGNORE_INDEX
from gansvc.paths import cache_home

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".ppm"}
CONTENT_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}
MAX_PIXELS = 64_000_000  # larger images are refused as likely decompression bombs
# Size limits of source files (zip entries and folder files alike). 64 Mpixel RGB is 192 MB uncompressed, so no
# image put accepts is bigger than MAX_FILE_BYTES.
MAX_FILE_BYTES = 256 << 20
# a zip entry that inflates more than this many times, to more than ZIP_RATIO_MIN_BYTES, is taken for a zip bomb:
# image files are compressed already (PNG/JPEG: ratios near 1). Deflate itself tops out near 1032:1, so the size
# limits below (per entry, and of the whole zip) are the guard that always holds; this one names the cause.
MAX_ZIP_RATIO = 200
ZIP_RATIO_MIN_BYTES = 16 << 20
MAX_UNZIPPED_BYTES = 200 << 30  # the whole zip, uncompressed: larger is refused (a bomb, or split the dataset)
# bytes of source files held in memory at once by all validation / hashing / upload threads together
READ_BUDGET_BYTES = 1 << 30
DEFAULT_MAX_DOWNLOAD_GB = 20.0
PAUSE_ENV = "GANSVC_PUT_PAUSE_AT"  # test hook (see `_pause_point`): tests kill a put at a named point


_T = TypeVar("_T")
_R = TypeVar("_R")


class DatasetError(ValueError):
    """The source or destination is not usable as a dataset; the message says what to fix."""


@dataclass(frozen=True)
class SourceFile:
    rel: str  # "/"-separated path relative to the dataset root
    size: int  # bytes (a zip entry: uncompressed, which bounds what reading it can return)
    read: Callable[[], bytes]


@dataclass(frozen=True)
class Checked:
    file: SourceFile
    md5: str = ""
    size_wh: str = ""
    mode: str = ""
    skip_reason: str = ""
    max_class: int = -1  # masks: largest class index present (255 = ignore not counted); -1 if none


@dataclass(frozen=True)
class PutResult:
    uri: str
    manifest: Manifest
    uploaded: int
    reused: int
    up_to_date: bool


@dataclass
class Source:
    """An opened source: its files (after stepping into a lone top folder), and the entries refused up front."""

    files: list[SourceFile]
    described: str
    rejected: list[Skipped] = field(default_factory=list)  # unsafe names, entries over the size limits
    close: Callable[[], None] = lambda: None


class _ByteBudget:
    """Bounds the bytes of source files held at once by all threads (a file larger than the budget takes all of it)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.used = limit, 0
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def hold(self, n: int) -> Iterator[None]:
        n = min(max(n, 1), self.limit)
        with self._cond:
            self._cond.wait_for(lambda: self.used + n <= self.limit)
            self.used += n
        try:
            yield
        finally:
            with self._cond:
                self.used -= n
                self._cond.notify_all()


class _Reader:
    """Reads source files within a memory budget and records each file's sha256 (the content fingerprint's input)."""

    def __init__(self, budget: int) -> None:
        self.budget = _ByteBudget(budget)
        self.sha256: dict[str, str] = {}

    @contextlib.contextmanager
    def read(self, f: SourceFile) -> Iterator[bytes]:
        """The file's bytes, held within the budget while the block runs. OSError / zip errors propagate."""
        with self.budget.hold(f.size):
            data = f.read()
            self.sha256[f.rel] = hashlib.sha256(data).hexdigest()
            yield data


# ---------------------------------------------------------------------------------------------------------- sources


def _ignored(rel: str) -> bool:
    parts = rel.split("/")
    return any(p.startswith(".") or p == "__MACOSX" for p in parts) or parts[-1] in ("Thumbs.db", "desktop.ini")


def _strip_single_top(files: list[SourceFile]) -> list[SourceFile]:
    """Step into a lone top-level folder (official zips: horse2zebra/trainA/...), repeatedly."""
    while files:
        tops = {f.rel.split("/", 1)[0] for f in files}
        if len(tops) != 1 or any("/" not in f.rel for f in files):
            return files
        top = tops.pop()
        if top in SPLITS["single"] or top in SPLITS["unpaired"]:
            return files
        files = [SourceFile(f.rel.split("/", 1)[1], f.size, f.read) for f in files]
    return files


def _too_big(size: int) -> str:
    return (
        f"file too large ({size / 2**20:.0f} MiB; the limit is {MAX_FILE_BYTES / 2**20:.0f} MiB, "
        f"above any image of at most {MAX_PIXELS / 1e6:.0f} Mpixels)"
    )


def folder_source(path: Path) -> tuple[list[SourceFile], list[Skipped]]:
    out, rejected = [], []
    for p in sorted(path.rglob("*")):
        if p.is_file():
            rel = p.relative_to(path).as_posix()
            if problem := path_problem(rel):  # e.g. a backslash in a file name: the manifest could not name it
                rejected.append(Skipped(path=rel, reason=f"unsafe file name: the path {problem}"))
            elif not _ignored(rel):
                size = p.stat().st_size
                if size > MAX_FILE_BYTES:
                    rejected.append(Skipped(path=rel, reason=_too_big(size)))
                else:
                    out.append(SourceFile(rel, size, p.read_bytes))
    return out, rejected


def _zip_entry_problem(info: zipfile.ZipInfo) -> str:
    """Why a zip entry is refused before it is read ("" if it is not): unsafe name, size or compression ratio."""
    if problem := path_problem(info.filename):
        return f"unsafe entry name: the path {problem} (never written anywhere)"
    if info.file_size > MAX_FILE_BYTES:
        return _too_big(info.file_size)
    ratio = info.file_size / max(info.compress_size, 1)
    if info.file_size > ZIP_RATIO_MIN_BYTES and ratio > MAX_ZIP_RATIO:
        return (
            f"compression ratio {ratio:.0f}:1 ({info.compress_size} bytes inflate to {info.file_size}) is that "
            f"of a zip bomb, not of an image (limit {MAX_ZIP_RATIO}:1)"
        )
    return ""


def zip_source(path: Path) -> Source:
    """The entries of a zip, each read on demand (one at a time per thread, capped at its declared size)."""
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise DatasetError(f"{path} is not a valid zip file (truncated download?): fetch it again") from None
    try:
        entries = [i for i in zf.infolist() if not i.is_dir()]
        total = sum(i.file_size for i in entries)
        if total > MAX_UNZIPPED_BYTES:
            raise DatasetError(
                f"{path} would unpack to {total / 2**30:.1f} GiB, over the limit of "
                f"{MAX_UNZIPPED_BYTES / 2**30:.0f} GiB for one put: a zip bomb, or a dataset too "
                "large for one archive. Unpack it yourself and put the folder, or split it"
            )
        out, rejected = [], []
        for info in entries:
            if problem := _zip_entry_problem(info):
                rejected.append(Skipped(path=info.filename, reason=problem))
            elif not _ignored(info.filename):
                out.append(SourceFile(info.filename, info.file_size, functools.partial(_read_entry, zf, info)))
    except BaseException:
        zf.close()
        raise
    return Source(out, str(path.resolve()), rejected, zf.close)


def _read_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    # ZipExtFile stops at the declared file_size (checked above), so this never holds more than MAX_FILE_BYTES
    with zf.open(info) as fh:
        return fh.read(MAX_FILE_BYTES + 1)


def download(url: str, cache_dir: Path | None = None, max_bytes: int | None = None, progress: bool = True) -> Path:
    """Fetch an http(s) URL once into a cache (`$GANSVC_CACHE_DIR/downloads`): resumed, length-checked, capped.

    `gansvc.data.download.fetch` keeps the partial file as `.part` and renames only a complete one onto the cache
    entry, so a cut download is resumed by the next run and never cached.
    """
    from gansvc.data.download import DownloadError, fetch

    cache = cache_dir or cache_home() / "downloads"
    name = Path(url.split("?", 1)[0]).name or "download.zip"
    target = cache / f"{hashlib.sha1(url.encode()).hexdigest()[:12]}-{name}"
    try:
        return fetch(url, target, max_bytes=max_bytes, progress=progress)
    except DownloadError as err:
        text = str(err)
        raise DatasetError(text if text.startswith("cannot download") else f"cannot download: {text}") from None


@contextlib.contextmanager
def open_source(src: str, max_download_bytes: int | None = None, quiet: bool = False) -> Iterator[Source]:
    """A folder, a .zip or an http(s) URL of a zip, opened for reading; closed (zip files) on exit."""
    if src.startswith(("http://", "https://")):
        source = zip_source(download(src, max_bytes=max_download_bytes, progress=not quiet))
        source.described = src
    else:
        path = Path(src).expanduser()
        if not path.exists():
            raise DatasetError(f"{src}: no such file or folder (give a folder, a .zip or an http(s) URL of a zip)")
        if path.is_dir():
            files, rejected = folder_source(path)
            source = Source(files, str(path.resolve()), rejected)
        elif zipfile.is_zipfile(path):
            source = zip_source(path)
        else:
            raise DatasetError(f"{src} is neither a folder nor a .zip file")
    try:
        if not source.files:
            raise DatasetError(
                f"{src} holds no usable files"
                + (
                    f" ({len(source.rejected)} refused: {source.rejected[0].path}: {source.rejected[0].reason})"
                    if source.rejected
                    else ""
                )
            )
        source.files = _strip_single_top(source.files)
        yield source
    finally:
        source.close()


# -------------------------------------------------------------------------------------------------------- validation


def detect_layout(files: Iterable[SourceFile]) -> Layout:
    tops = {f.rel.split("/", 1)[0] for f in files if "/" in f.rel}
    if {"trainA", "trainB"} <= tops:
        return "unpaired"
    if "trainA" in tops or "trainB" in tops:
        raise DatasetError("found only one of trainA/ and trainB/: an unpaired dataset needs both")
    return "single"


def split_of(rel: str, layout: str) -> str | None:
    """The split a file belongs to, or None if it lies outside the layout's folders."""
    if "/" not in rel:
        return "train" if layout == "single" else None
    top = rel.split("/", 1)[0]
    return top if top in SPLITS[layout] else None


_READ_ERRORS = (OSError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError)  # unreadable source file


def check_image(f: SourceFile, reader: _Reader) -> Checked:
    ext = Path(f.rel).suffix.lower()
    if ext not in IMAGE_EXTENSIONS:
        return Checked(f, skip_reason=f"not an image file (extension {ext or 'none'!r})")
    try:
        with reader.read(f) as data:
            return _decode_image(f, data)
    except _READ_ERRORS as err:
        return Checked(f, skip_reason=f"cannot read the file ({type(err).__name__}: {err})")


def _decode_image(f: SourceFile, data: bytes) -> Checked:
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.width * im.height > MAX_PIXELS:
                return Checked(f, skip_reason=f"image too large ({im.width}x{im.height} pixels)")
            im.load()  # a full decode: truncated or damaged files fail here, not at training time
            return Checked(f, md5=hashlib.md5(data).hexdigest(), size_wh=f"{im.width}x{im.height}", mode=im.mode)
    except Exception as err:  # noqa: BLE001 - PIL raises many kinds; all mean "cannot decode"
        return Checked(f, skip_reason=f"corrupt or unreadable image ({describe_image_error(err)})")


def parse_labels(
    raw: bytes, images: dict[str, list[str]], skipped: AbstractSet[str] = frozenset()
) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(attributes -> sorted values, image rel -> values) from labels.csv; strict about names and shape.

    `images` maps split -> valid image paths, `skipped` the paths put skipped. Rows naming a skipped (corrupt) file
    are dropped; rows naming files that do not exist at all are an error, as is a CSV without rows.
    """
    try:
        rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))
    except UnicodeDecodeError:
        raise DatasetError(f"{LABELS_NAME} is not UTF-8 text") from None
    rows = [r for r in rows if any(c.strip() for c in r)]
    if len(rows) < 2:
        raise DatasetError(f"{LABELS_NAME} has no rows: write a header (file,attr1,attr2...) and one row per image")
    header = [h.strip() for h in rows[0]]
    if len(header) < 2 or any(not h for h in header):
        raise DatasetError(
            f"{LABELS_NAME}: the header needs a file column and at least one named attribute column, got {header}"
        )
    attrs = header[1:]
    if len(set(attrs)) != len(attrs):
        raise DatasetError(f"{LABELS_NAME}: duplicate attribute columns in {attrs}")
    all_valid = {rel for rels in images.values() for rel in rels}
    by_name: dict[str, list[str]] = {}
    for rel in all_valid:  # accept "train/x.png", "x.png" (within its split) and the bare name when unique
        by_name.setdefault(rel, []).append(rel)
        inner = rel.split("/", 1)[1] if "/" in rel else rel
        if inner != rel:
            by_name.setdefault(inner, []).append(rel)
        base = rel.rsplit("/", 1)[-1]
        if base not in (rel, inner):
            by_name.setdefault(base, []).append(rel)
    labels: dict[str, list[str]] = {}
    missing: list[str] = []
    for n, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise DatasetError(f"{LABELS_NAME} line {n}: {len(row)} values for {len(header)} columns ({header})")
        name, values = row[0].strip().lstrip("./"), [v.strip() for v in row[1:]]
        if any(not v for v in values):
            raise DatasetError(f"{LABELS_NAME} line {n}: empty attribute value for {name!r}")
        targets = by_name.get(name, [])
        if len(targets) > 1:
            raise DatasetError(
                f"{LABELS_NAME} line {n}: {name!r} matches several files ({targets}); "
                "write the path with its folder, e.g. train/NAME"
            )
        if not targets:
            if not any(s == name or s.endswith("/" + name) for s in skipped):
                missing.append(name)
            continue
        labels[targets[0]] = values
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise DatasetError(f"{LABELS_NAME} names {len(missing)} file(s) that are not in the dataset: {shown}")
    attributes = {a: sorted({row[i] for row in labels.values()}) for i, a in enumerate(attrs)}
    return attributes, labels


# ----------------------------------------------------------------------------------------------------------- masks


def mask_split_of(rel: str, layout: str) -> str | None:
    """The split whose masks folder holds `rel` (`train_masks/x.png` -> `train`), or None."""
    top = rel.split("/", 1)[0]
    return next((s for s in SPLITS[layout] if "/" in rel and top == mask_folder(s)), None)


def mask_rel_for(image_rel: str, layout: str) -> str:
    """Where the mask of an image lives: `train/a/x.jpg` -> `train_masks/a/x.png` (root images: `train_masks/`)."""
    split = split_of(image_rel, layout) or "train"
    inner = image_rel.split("/", 1)[1] if "/" in image_rel else image_rel
    return f"{mask_folder(split)}/{Path(inner).with_suffix('.png').as_posix()}"


def parse_classes(raw: bytes) -> list[str]:
    """Class names from classes.txt: one per line, line i = class i; trailing blank lines ignored."""
    try:
        lines = [ln.strip() for ln in raw.decode("utf-8-sig").splitlines()]
    except UnicodeDecodeError:
        raise DatasetError(f"{CLASSES_NAME} is not UTF-8 text") from None
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise DatasetError(f"{CLASSES_NAME} is empty: write one class name per line (line 1 = class 0)")
    if any(not ln for ln in lines):
        raise DatasetError(f"{CLASSES_NAME} line {lines.index('') + 1} is empty: every class index needs a name")
    if len(set(lines)) != len(lines):
        raise DatasetError(f"{CLASSES_NAME} names a class twice: {sorted({x for x in lines if lines.count(x) > 1})}")
    if len(lines) > IGNORE_INDEX:
        raise DatasetError(
            f"{CLASSES_NAME} has {len(lines)} classes; at most {IGNORE_INDEX} fit in 8-bit masks "
            f"({IGNORE_INDEX} means ignore)"
        )
    return lines


def check_mask(f: SourceFile, image: Checked, num_classes: int | None, reader: _Reader) -> Checked:
    """Decode a mask fully and check it against its image: PNG, single channel (L or P), same size, values in range."""
    if Path(f.rel).suffix.lower() != ".png":
        return Checked(f, skip_reason="masks must be PNG files (lossless class indices)")
    try:
        with reader.read(f) as data:
            return _decode_mask(f, data, image, num_classes)
    except _READ_ERRORS as err:
        return Checked(f, skip_reason=f"cannot read the file ({type(err).__name__}: {err})")


def _decode_mask(f: SourceFile, data: bytes, image: Checked, num_classes: int | None) -> Checked:
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.width * im.height > MAX_PIXELS:
                return Checked(f, skip_reason=f"mask too large ({im.width}x{im.height} pixels)")
            im.load()
            if im.mode not in ("L", "P"):
                return Checked(
                    f,
                    skip_reason=f"a mask must be single-channel class indices (PIL mode L or P), this one is {im.mode}",
                )
            size = f"{im.width}x{im.height}"
            arr = np.asarray(im)
    except Exception as err:  # noqa: BLE001 - PIL raises many kinds; all mean "cannot decode"
        return Checked(f, skip_reason=f"corrupt or unreadable mask ({type(err).__name__}: {err})")
    if size != image.size_wh:
        return Checked(f, skip_reason=f"mask is {size} but its image {image.file.rel} is {image.size_wh}")
    present = np.flatnonzero(np.bincount(arr.ravel(), minlength=256))
    classes = present[present != IGNORE_INDEX]
    if num_classes is not None and classes.size and classes.max() >= num_classes:
        bad = ", ".join(str(v) for v in classes[classes >= num_classes][:5])
        return Checked(
            f,
            skip_reason=f"values {bad} out of range: {CLASSES_NAME} has {num_classes} classes "
            f"(0..{num_classes - 1}; {IGNORE_INDEX} = ignore)",
        )
    return Checked(
        f,
        md5=hashlib.md5(data).hexdigest(),
        size_wh=size,
        mode=im.mode,
        max_class=int(classes.max()) if classes.size else -1,
    )


def pair_masks(
    images: list[Checked],
    masks: list[SourceFile],
    skipped_images: set[str],
    layout: str,
    num_classes: int | None,
    threads: int,
    quiet: bool,
    reader: _Reader,
) -> tuple[list[Checked], dict[str, Checked], list[Skipped]]:
    """Match masks to images and validate them. Returns (images kept, image rel -> valid mask, skips).

    In a split with a masks folder every image needs a valid mask: an image without one is skipped, as is a mask
    without an image (or whose image was skipped) and an invalid mask together with its image.
    """
    by_rel = {f.rel: f for f in masks}
    masked = {mask_split_of(f.rel, layout) for f in masks}
    skips: list[Skipped] = []
    pairs: list[tuple[SourceFile, Checked]] = []
    kept: list[Checked] = []
    claimed: set[str] = set()
    for c in images:
        split = split_of(c.file.rel, layout)
        want = mask_rel_for(c.file.rel, layout)
        if split not in masked:
            kept.append(c)
        elif want in by_rel:
            pairs.append((by_rel[want], c))
            claimed.add(want)
        else:
            skips.append(
                Skipped(
                    path=c.file.rel,
                    reason=f"no mask: expected {want} (every image of a split with "
                    f"a {mask_folder(split or 'train')}/ folder needs one)",
                )
            )
    of_skipped = {mask_rel_for(s, layout) for s in skipped_images}
    for f in masks:
        if f.rel not in claimed:
            skips.append(
                Skipped(
                    path=f.rel,
                    reason="its image was skipped"
                    if f.rel in of_skipped
                    else "no image for this mask (same path under the split folder, any image extension)",
                )
            )
    with ThreadPoolExecutor(threads) as pool:
        checked = list(
            tqdm(
                pool.map(lambda p: check_mask(p[0], p[1], num_classes, reader), pairs),
                total=len(pairs),
                desc="validating masks",
                unit="file",
                disable=quiet or not pairs,
                mininterval=0.5,
            )
        )
    valid: dict[str, Checked] = {}
    for (_, image), mask in zip(pairs, checked, strict=True):
        if mask.skip_reason:
            skips.append(Skipped(path=mask.file.rel, reason=mask.skip_reason))
            skips.append(
                Skipped(path=image.file.rel, reason=f"its mask {mask.file.rel} is invalid: {mask.skip_reason}")
            )
        else:
            kept.append(image)
            valid[image.file.rel] = mask
    return kept, valid, skips


# ------------------------------------------------------------------------------------------------------------- put


def _run(
    fn: Callable[[_T], _R], items: Sequence[_T], threads: int, desc: str, quiet: bool, pause: str = ""
) -> list[_R]:
    """`fn` over `items` in a thread pool with a progress bar. `pause`: the test hook's name for "after N items"."""
    done = [0]
    lock = threading.Lock()

    def one(item: _T) -> _R:
        out = fn(item)
        if pause:
            with lock:
                done[0] += 1
                n = done[0]
            _pause_point(f"{pause}:{n}")
        return out

    with ThreadPoolExecutor(max(1, min(threads, len(items)))) as pool:
        return list(
            tqdm(
                pool.map(one, items),
                total=len(items),
                desc=desc,
                unit="file",
                disable=quiet or not items,
                mininterval=0.5,
            )
        )


def _pause_point(name: str) -> None:
    """Test hook: with GANSVC_PUT_PAUSE_AT=<name>, say so on stderr and wait there to be killed.

    tests/unit/data/test_data_safety.py and tests/unit/data/test_faults_data.py SIGKILL a real
    `python -m gansvc.data put` at these points ("upload:N", "commit", "committed", "delete:N") and check what readers
    see meanwhile and afterwards.
    """
    if os.environ.get(PAUSE_ENV) == name:
        print(f"GANSVC_PUT_PAUSED {name}", file=sys.stderr, flush=True)
        while True:
            time.sleep(60)


def fingerprint(files: list[SourceFile], reader: _Reader | None = None, threads: int = 16) -> str:
    """sha256 over every file's path and content sha256: the same bytes under the same names are the same dataset,
    wherever and whenever they were extracted. Files `reader` has read already are not read again."""
    reader = reader or _Reader(READ_BUDGET_BYTES)

    def hash_one(f: SourceFile) -> None:
        try:
            with reader.read(f):
                pass
        except _READ_ERRORS as err:  # validation skips it with the reason; the fingerprint still counts it
            reader.sha256[f.rel] = f"unreadable {type(err).__name__}"

    _run(hash_one, [f for f in files if f.rel not in reader.sha256], threads, "hashing", quiet=True)
    h = hashlib.sha256(b"gansvc-content/1\n")
    for f in sorted(files, key=lambda f: f.rel):
        h.update(f"{f.rel}\0{reader.sha256[f.rel]}\n".encode())
    return h.hexdigest()


def existing_manifest(dest: str) -> Manifest | None:
    loc = storage.parse_uri(dest)
    if not storage.exists(loc.join(MANIFEST_NAME).uri()):
        return None
    return read_manifest(dest)


def _ours(rel: str) -> bool:
    """Objects a put writes before its manifest: version folders, and a local destination's temp manifest file."""
    return rel.split("/", 1)[0] == VERSIONS_DIR or (rel.startswith(f".{MANIFEST_NAME}.") and rel.endswith(".tmp"))


def _refuse_foreign(dest: str) -> None:
    """A prefix without a manifest may hold only what an unfinished put wrote: put never deletes others' objects,
    and a dataset written among them would be easy to delete by mistake later."""
    foreign: list[str] = []
    for obj in storage.list_objects(dest):
        if not _ours(obj.rel):
            foreign.append(obj.rel)
            if len(foreign) == 5:
                break
    if foreign:
        more = " ..." if len(foreign) == 5 else ""
        raise DatasetError(
            f"{dest} is not empty and holds no {MANIFEST_NAME} (it is not a gansvc dataset): found "
            f"{', '.join(foreign)}{more}. put never deletes or mixes with objects it did not write: "
            "choose an empty prefix (e.g. one named after the dataset), or move those objects away "
            "first if they are not needed"
        )


def put(
    src: str,
    dest: str,
    overwrite: bool = False,
    threads: int = 16,
    quiet: bool = False,
    source_id: str | None = None,
    max_download_bytes: int | None = None,
) -> PutResult:
    """Validate `src` and upload it to `dest` (s3://bucket/prefix or a local folder). See the module doc.

    `source_id` replaces the source's fingerprint when the caller knows better (synthetic data: its parameters).
    `max_download_bytes` caps an http(s) source's download.
    """
    storage.check_bucket(dest)
    try:
        old = existing_manifest(dest)
    except storage.StorageError as err:
        if "not a valid gansvc manifest" not in str(err) and "not valid JSON" not in str(err):
            raise
        raise DatasetError(
            f"{err}. put will not replace a manifest it cannot read (it could not tell which files "
            "are the old dataset's): choose another prefix, or remove that one yourself"
        ) from None
    if old is None:
        _refuse_foreign(dest)
    reader = _Reader(READ_BUDGET_BYTES)
    with open_source(src, max_download_bytes, quiet) as source:
        fp = hashlib.sha256(source_id.encode()).hexdigest() if source_id else ""
        if old is not None and not fp:  # hashing only (no decoding): a re-put of the same content stops here
            fp = fingerprint(source.files, reader, threads)
        if old is not None and old.fingerprint == fp:
            _drop_orphans(dest, old, threads, quiet)  # what a put killed after its switch left behind
            return PutResult(dest, old, 0, 0, up_to_date=True)
        if old is not None and not overwrite:
            legacy = (
                "; it was written before datasets were versioned and identified by content, so even the same "
                "source counts as different once: --overwrite re-ingests it as a versioned dataset"
                if not old.files_root and not source_id
                else ""
            )
            raise DatasetError(
                f"{dest} already holds a different dataset (from {old.source or '?'}, {old.created}"
                f"{legacy}). Choose another prefix, or pass --overwrite to replace it"
            )
        v = _validate(source, threads, quiet, reader)
        fp = fp or fingerprint(source.files, reader, threads)
        manifest = Manifest(
            layout=v.layout,
            splits=v.splits,
            channels=_channels(v.good),
            attributes=v.attributes,
            labels=v.labels,
            num_classes=v.num_classes,
            classes=v.class_names if v.masks else [],
            skipped=v.skipped,
            source=source_id or source.described,
            fingerprint=fp,
            files_root=version_root(fp),
            created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            gansvc_version=__version__,
        )
        sidecars = [f for f in (v.labels_file, v.classes_file if v.masks else None) if f is not None]
        uploaded, reused = _upload(
            v.good + list(v.masks.values()), sidecars, dest, manifest.files_root, threads, quiet, reader
        )
    _pause_point("commit")
    storage.write_json(storage.parse_uri(dest).join(MANIFEST_NAME).uri(), manifest.model_dump())  # the switch
    _pause_point("committed")
    _retire(dest, old, manifest, threads, quiet)
    return PutResult(dest, manifest, uploaded, reused, up_to_date=False)


@dataclass
class _Validated:
    layout: Layout
    splits: dict[str, SplitInfo]
    good: list[Checked]
    masks: dict[str, Checked]
    skipped: list[Skipped]
    labels_file: SourceFile | None
    classes_file: SourceFile | None
    attributes: dict[str, list[str]]
    labels: dict[str, list[str]]
    class_names: list[str]
    num_classes: int


def _validate(source: Source, threads: int, quiet: bool, reader: _Reader) -> _Validated:
    """Decode every file, pair masks, parse labels/classes: what the manifest will say. Raises DatasetError."""
    files, described = source.files, source.described
    layout = detect_layout(files)
    labels_file = next((f for f in files if f.rel == LABELS_NAME), None)
    classes_file = next((f for f in files if f.rel == CLASSES_NAME), None)
    candidates = [f for f in files if f.rel not in (LABELS_NAME, MANIFEST_NAME, CLASSES_NAME)]
    skipped: list[Skipped] = list(source.rejected)
    in_layout: list[SourceFile] = []
    mask_files: list[SourceFile] = []
    for f in candidates:
        if mask_split_of(f.rel, layout) is not None:
            mask_files.append(f)
        elif split_of(f.rel, layout) is None:
            allowed = ", ".join(f"{s}/" for s in SPLITS[layout])
            mask_dirs = ", ".join(f"{mask_folder(s)}/" for s in SPLITS[layout])
            skipped.append(
                Skipped(path=f.rel, reason=f"outside the {layout} layout's folders ({allowed}; masks in {mask_dirs})")
            )
        else:
            in_layout.append(f)
    checked = _run(lambda f: check_image(f, reader), in_layout, threads, "validating", quiet)
    good = [c for c in checked if not c.skip_reason]
    skipped += [Skipped(path=c.file.rel, reason=c.skip_reason) for c in checked if c.skip_reason]
    class_names = parse_classes(_read_small(classes_file, reader)) if classes_file is not None else []
    if class_names and not mask_files:
        raise DatasetError(
            f"{CLASSES_NAME} names mask classes but there are no masks: put them in "
            + ", ".join(f"{mask_folder(s)}/" for s in SPLITS[layout])
        )
    masks: dict[str, Checked] = {}
    if mask_files:
        good, masks, mask_skips = pair_masks(
            good,
            mask_files,
            {c.file.rel for c in checked if c.skip_reason},
            layout,
            len(class_names) or None,
            threads,
            quiet,
            reader,
        )
        skipped += mask_skips
    num_classes = (len(class_names) or max(1, max(m.max_class for m in masks.values()) + 1)) if masks else 0
    splits = _split_infos(good, layout, masks)
    _check_splits(splits, layout, files, described)
    attributes: dict[str, list[str]] = {}
    labels: dict[str, list[str]] = {}
    if labels_file is not None:
        if layout != "single":
            raise DatasetError(f"{LABELS_NAME} is only supported for single-domain datasets (train/ [test/])")
        images = {k: v.files for k, v in splits.items()}
        attributes, labels = parse_labels(_read_small(labels_file, reader), images, {s.path for s in skipped})
        unlabelled = [rel for rel in splits["train"].files if rel not in labels]
        if unlabelled:
            shown = ", ".join(unlabelled[:5]) + (f" and {len(unlabelled) - 5} more" if len(unlabelled) > 5 else "")
            raise DatasetError(
                f"{len(unlabelled)} training image(s) have no row in {LABELS_NAME}: {shown}. "
                "Add rows for them or remove them"
            )
    return _Validated(
        layout, splits, good, masks, skipped, labels_file, classes_file, attributes, labels, class_names, num_classes
    )


def _read_small(f: SourceFile, reader: _Reader) -> bytes:
    try:
        with reader.read(f) as data:
            return data
    except _READ_ERRORS as err:
        raise DatasetError(f"cannot read {f.rel}: {type(err).__name__}: {err}") from None


def _check_splits(splits: dict[str, SplitInfo], layout: str, files: list[SourceFile], described: str) -> None:
    """Every dataset requirement the training side relies on, checked before anything is uploaded."""
    if layout == "unpaired" and not (splits.get("trainA") and splits.get("trainB")):
        raise DatasetError("no valid images in trainA/ or trainB/: an unpaired dataset needs both")
    if not splits.get("train") and layout == "single":
        raise DatasetError(f"no valid images found in {described} (expected train/ [test/] or images at the root)")
    if layout == "unpaired":
        tests = [s for s in ("testA", "testB") if splits.get(s)]
        if len(tests) == 1:
            have, miss = tests[0], "testB" if tests[0] == "testA" else "testA"
            present = any(f.rel.startswith(miss + "/") for f in files)
            raise DatasetError(
                f"{have}/ has {splits[have].count} valid image(s) but {miss}/ "
                f"{'has no valid image' if present else 'is missing'}: an unpaired dataset's test "
                f"split needs both domains (evaluation translates A->B and B->A). Add images to "
                f"{miss}/, or remove {have}/ to have no test split"
            )


def _split_infos(good: list[Checked], layout: str, masks: dict[str, Checked] | None = None) -> dict[str, SplitInfo]:
    out: dict[str, SplitInfo] = {}
    for split in SPLITS[layout]:
        mine = sorted((c for c in good if split_of(c.file.rel, layout) == split), key=lambda c: c.file.rel)
        if not mine:
            continue
        sizes: dict[str, int] = {}
        modes: dict[str, int] = {}
        for c in mine:
            sizes[c.size_wh] = sizes.get(c.size_wh, 0) + 1
            modes[c.mode] = modes.get(c.mode, 0) + 1
        found = {c.file.rel: masks[c.file.rel].file.rel for c in mine if masks and c.file.rel in masks}
        out[split] = SplitInfo(count=len(mine), files=[c.file.rel for c in mine], sizes=sizes, modes=modes, masks=found)
    return out


def _channels(good: list[Checked]) -> int:
    gray = {"1", "L", "LA", "I", "I;16", "F"}
    return 1 if all(c.mode in gray for c in good) else 3


def _upload(
    good: list[Checked],
    sidecars: list[SourceFile],
    dest: str,
    files_root: str,
    threads: int,
    quiet: bool,
    reader: _Reader,
) -> tuple[int, int]:
    """Upload into the version folder what is not there yet (same content = kept: an interrupted put resumes).

    Returns (objects uploaded, images/masks already there).
    """
    vroot = storage.parse_uri(dest).join(files_root)
    existing = {o.rel: o for o in storage.list_objects(vroot.uri())}
    items = good + [Checked(f, md5=hashlib.md5(_read_small(f, reader)).hexdigest()) for f in sidecars]
    present = _run(
        lambda c: _same(vroot, existing.get(c.file.rel), c),
        items,
        threads,
        "comparing",
        quiet or not any(not o.etag for o in existing.values()),
    )
    todo = [c for c, same in zip(items, present, strict=True) if not same]

    def send(c: Checked) -> None:
        with reader.budget.hold(c.file.size):
            data = c.file.read()
            if hashlib.md5(data).hexdigest() != c.md5:  # the source changed since it was validated
                raise DatasetError(f"{c.file.rel} changed while put was running: run put again")
            ext = Path(c.file.rel).suffix.lower()
            storage.write_bytes(vroot.join(c.file.rel).uri(), data, CONTENT_TYPES.get(ext))

    _run(send, todo, threads, "uploading", quiet, pause="upload")
    side = {f.rel for f in sidecars}
    return len(todo), sum(1 for c, same in zip(items, present, strict=True) if same and c.file.rel not in side)


def _same(vroot: storage.Location, obj: storage.ObjectInfo | None, c: Checked) -> bool:
    """Whether the stored object holds the checked file's bytes: by ETag (S3's MD5 of a single-part upload), or by
    reading it (a local destination has no ETag; the size alone misses a same-size different file)."""
    if obj is None or obj.size != c.file.size:
        return False
    if obj.etag:
        return obj.etag == c.md5
    try:
        return hashlib.md5(storage.read_bytes(vroot.join(c.file.rel).uri())).hexdigest() == c.md5
    except storage.StorageError:
        return False


def _retire(dest: str, old: Manifest | None, live: Manifest, threads: int, quiet: bool) -> None:
    """After the switch: delete the previous version's files (only those its manifest listed) and orphans."""
    root = storage.parse_uri(dest)
    if old is not None and old.files_root != live.files_root:
        rels = [old.object_rel(rel) for rel in old.stored_files()]
        _run(
            lambda rel: storage.delete(root.join(rel).uri()),
            rels,
            threads,
            "deleting the old version",
            quiet,
            pause="delete",
        )
        _prune_empty_dirs(root, rels)
    _drop_orphans(dest, live, threads, quiet)


def _drop_orphans(dest: str, live: Manifest, threads: int, quiet: bool) -> None:
    """Delete `.v/*` folders the live manifest does not use: versions of killed puts and of replaced datasets."""
    vdir = storage.parse_uri(dest).join(VERSIONS_DIR)
    live_top = live.files_root.split("/")[1] if live.files_root.startswith(VERSIONS_DIR + "/") else None
    stale = [o.rel for o in storage.list_objects(vdir.uri()) if o.rel.split("/", 1)[0] != live_top]
    _run(lambda rel: storage.delete(vdir.join(rel).uri()), stale, threads, "deleting unused versions", quiet)
    _prune_empty_dirs(vdir, stale)


def _prune_empty_dirs(root: storage.Location, rels: list[str]) -> None:
    """A local destination keeps empty folders after deletes: remove those the deleted files left (S3 has none)."""
    if root.is_s3:
        return
    dirs = {Path(root.path, rel).parent for rel in rels}
    stop = Path(root.path)
    for d in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
        while d != stop and stop in d.parents:
            try:
                d.rmdir()
            except OSError:  # not empty (or gone): leave it
                break
            d = d.parent
