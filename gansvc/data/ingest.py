"""`gansvc.data put`: validate a local folder, a .zip or an http(s) zip URL and upload it as a dataset.

Layouts (detected from the top-level folders, after stepping into a zip's single top folder as in the official
CycleGAN zips `horse2zebra/trainA/...`):
- unpaired: `trainA/ trainB/` and optional `testA/ testB/` (the official CycleGAN layout);
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

Every file is decoded; corrupt and non-image files are skipped and listed in the manifest with the reason. The upload
skips objects already present with the same content (MD5 = ETag), so re-running an interrupted put completes it, and
the manifest, written last, makes the dataset visible. Re-putting the same source is a no-op.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import os
import urllib.request
import zipfile
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from gansvc import __version__, storage
from gansvc.data.manifest import (CLASSES_NAME, LABELS_NAME, MANIFEST_NAME, SPLITS, Manifest, Skipped, SplitInfo,
                                  mask_folder, read_manifest)
from gansvc.data.spec import IGNORE_INDEX

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".ppm"}
CONTENT_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}
MAX_PIXELS = 64_000_000  # larger images are refused as likely decompression bombs


class DatasetError(ValueError):
    """The source or destination is not usable as a dataset; the message says what to fix."""


@dataclass(frozen=True)
class SourceFile:
    rel: str  # "/"-separated path relative to the dataset root
    size: int
    stamp: str  # cheap change marker (zip CRC, or mtime) for the source fingerprint
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
        files = [SourceFile(f.rel.split("/", 1)[1], f.size, f.stamp, f.read) for f in files]
    return files


def folder_source(path: Path) -> list[SourceFile]:
    out = []
    for p in sorted(path.rglob("*")):
        if p.is_file():
            rel = p.relative_to(path).as_posix()
            if not _ignored(rel):
                st = p.stat()
                out.append(SourceFile(rel, st.st_size, str(st.st_mtime_ns), (lambda q=p: q.read_bytes())))
    return out


def zip_source(path: Path) -> list[SourceFile]:
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise DatasetError(f"{path} is not a valid zip file (truncated download?): fetch it again") from None
    out = []
    for info in zf.infolist():
        if not info.is_dir() and not _ignored(info.filename):
            out.append(SourceFile(info.filename.strip("/"), info.file_size, f"{info.CRC:08x}",
                                  (lambda n=info.filename: zf.read(n))))
    return out


def download(url: str, cache_dir: Path | None = None) -> Path:
    """Fetch an http(s) URL once into a cache (`~/.cache/gansvc/downloads`), with a progress bar."""
    cache = cache_dir or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gansvc" / "downloads"
    cache.mkdir(parents=True, exist_ok=True)
    name = Path(url.split("?", 1)[0]).name or "download.zip"
    target = cache / f"{hashlib.sha1(url.encode()).hexdigest()[:12]}-{name}"
    if target.exists():
        return target
    part = target.with_suffix(target.suffix + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, open(part, "wb") as out:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {name}") as bar:
                while chunk := resp.read(1 << 20):
                    out.write(chunk)
                    bar.update(len(chunk))
    except OSError as err:
        part.unlink(missing_ok=True)
        raise DatasetError(f"cannot download {url}: {err}. Download it yourself and pass the local .zip or folder, "
                           "or a dataset already in S3") from None
    os.replace(part, target)
    return target


def open_source(src: str) -> tuple[list[SourceFile], str]:
    """(files, description) of a folder, a .zip or an http(s) URL of a zip."""
    if src.startswith(("http://", "https://")):
        return _strip_single_top(zip_source(download(src))), src
    path = Path(src).expanduser()
    if not path.exists():
        raise DatasetError(f"{src}: no such file or folder (give a folder, a .zip or an http(s) URL of a zip)")
    if path.is_dir():
        files = folder_source(path)
    elif zipfile.is_zipfile(path):
        files = zip_source(path)
    else:
        raise DatasetError(f"{src} is neither a folder nor a .zip file")
    if not files:
        raise DatasetError(f"{src} holds no files")
    return _strip_single_top(files), str(path.resolve())


# -------------------------------------------------------------------------------------------------------- validation

def detect_layout(files: Iterable[SourceFile]) -> str:
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


def check_image(f: SourceFile) -> Checked:
    ext = Path(f.rel).suffix.lower()
    if ext not in IMAGE_EXTENSIONS:
        return Checked(f, skip_reason=f"not an image file (extension {ext or 'none'!r})")
    data = f.read()
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.width * im.height > MAX_PIXELS:
                return Checked(f, skip_reason=f"image too large ({im.width}x{im.height} pixels)")
            im.load()  # a full decode: truncated or damaged files fail here, not at training time
            return Checked(f, md5=hashlib.md5(data).hexdigest(), size_wh=f"{im.width}x{im.height}", mode=im.mode)
    except Exception as err:  # noqa: BLE001 - PIL raises many kinds; all mean "cannot decode"
        return Checked(f, skip_reason=f"corrupt or unreadable image ({type(err).__name__}: {err})")


def parse_labels(raw: bytes, images: dict[str, list[str]],
                 skipped: set[str] = frozenset()) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
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
        raise DatasetError(f"{LABELS_NAME}: the header needs a file column and at least one named attribute column, "
                           f"got {header}")
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
            raise DatasetError(f"{LABELS_NAME} line {n}: {name!r} matches several files ({targets}); "
                               "write the path with its folder, e.g. train/NAME")
        if not targets:
            if not any(s == name or s.endswith("/" + name) for s in skipped):
                missing.append(name)
            continue
        labels[targets[0]] = values
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise DatasetError(f"{LABELS_NAME} names {len(missing)} file(s) that are not in the dataset: {shown}")
    values = {a: sorted({row[i] for row in labels.values()}) for i, a in enumerate(attrs)}
    return values, labels


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
        raise DatasetError(f"{CLASSES_NAME} has {len(lines)} classes; at most {IGNORE_INDEX} fit in 8-bit masks "
                           f"({IGNORE_INDEX} means ignore)")
    return lines


def check_mask(f: SourceFile, image: Checked, num_classes: int | None) -> Checked:
    """Decode a mask fully and check it against its image: PNG, single channel (L or P), same size, values in range."""
    if Path(f.rel).suffix.lower() != ".png":
        return Checked(f, skip_reason="masks must be PNG files (lossless class indices)")
    data = f.read()
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.width * im.height > MAX_PIXELS:
                return Checked(f, skip_reason=f"mask too large ({im.width}x{im.height} pixels)")
            im.load()
            if im.mode not in ("L", "P"):
                return Checked(f, skip_reason=f"a mask must be single-channel class indices (PIL mode L or P), "
                                              f"this one is {im.mode}")
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
        return Checked(f, skip_reason=f"values {bad} out of range: {CLASSES_NAME} has {num_classes} classes "
                                      f"(0..{num_classes - 1}; {IGNORE_INDEX} = ignore)")
    return Checked(f, md5=hashlib.md5(data).hexdigest(), size_wh=size, mode=im.mode,
                   max_class=int(classes.max()) if classes.size else -1)


def pair_masks(images: list[Checked], masks: list[SourceFile], skipped_images: set[str], layout: str,
               num_classes: int | None, threads: int, quiet: bool
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
            skips.append(Skipped(path=c.file.rel, reason=f"no mask: expected {want} (every image of a split with "
                                                         f"a {mask_folder(split or 'train')}/ folder needs one)"))
    of_skipped = {mask_rel_for(s, layout) for s in skipped_images}
    for f in masks:
        if f.rel not in claimed:
            skips.append(Skipped(path=f.rel, reason="its image was skipped" if f.rel in of_skipped else
                                 "no image for this mask (same path under the split folder, any image extension)"))
    with ThreadPoolExecutor(threads) as pool:
        checked = list(tqdm(pool.map(lambda p: check_mask(p[0], p[1], num_classes), pairs), total=len(pairs),
                            desc="validating masks", unit="file", disable=quiet or not pairs, mininterval=0.5))
    valid: dict[str, Checked] = {}
    for (_, image), mask in zip(pairs, checked, strict=True):
        if mask.skip_reason:
            skips.append(Skipped(path=mask.file.rel, reason=mask.skip_reason))
            skips.append(Skipped(path=image.file.rel,
                                 reason=f"its mask {mask.file.rel} is invalid: {mask.skip_reason}"))
        else:
            kept.append(image)
            valid[image.file.rel] = mask
    return kept, valid, skips


# ------------------------------------------------------------------------------------------------------------- put

def fingerprint(files: list[SourceFile]) -> str:
    h = hashlib.sha256()
    for f in sorted(files, key=lambda f: f.rel):
        h.update(f"{f.rel}\0{f.size}\0{f.stamp}\n".encode())
    return h.hexdigest()


def existing_manifest(dest: str) -> Manifest | None:
    loc = storage.parse_uri(dest)
    if not storage.exists(loc.join(MANIFEST_NAME).uri()):
        return None
    return read_manifest(dest)


def put(src: str, dest: str, overwrite: bool = False, threads: int = 16, quiet: bool = False,
        source_id: str | None = None) -> PutResult:
    """Validate `src` and upload it to `dest` (s3://bucket/prefix or a local folder). See the module doc.

    `source_id` replaces the source's fingerprint when the caller knows better (synthetic data: its parameters).
    """
    storage.check_bucket(dest)
    files, described = open_source(src)
    fp = hashlib.sha256(source_id.encode()).hexdigest() if source_id else fingerprint(files)
    old = existing_manifest(dest)
    if old is not None and old.fingerprint == fp:
        return PutResult(dest, old, 0, 0, up_to_date=True)
    if old is not None and not overwrite:
        raise DatasetError(f"{dest} already holds a different dataset (from {old.source or '?'}, {old.created}). "
                           "Choose another prefix, or pass --overwrite to replace it")
    layout = detect_layout(files)
    labels_file = next((f for f in files if f.rel == LABELS_NAME), None)
    classes_file = next((f for f in files if f.rel == CLASSES_NAME), None)
    candidates = [f for f in files if f.rel not in (LABELS_NAME, MANIFEST_NAME, CLASSES_NAME)]
    skipped: list[Skipped] = []
    in_layout: list[SourceFile] = []
    mask_files: list[SourceFile] = []
    for f in candidates:
        if mask_split_of(f.rel, layout) is not None:
            mask_files.append(f)
        elif split_of(f.rel, layout) is None:
            allowed = ", ".join(f"{s}/" for s in SPLITS[layout])
            masks = ", ".join(f"{mask_folder(s)}/" for s in SPLITS[layout])
            skipped.append(Skipped(path=f.rel, reason=f"outside the {layout} layout's folders ({allowed}; "
                                                      f"masks in {masks})"))
        else:
            in_layout.append(f)
    with ThreadPoolExecutor(threads) as pool:
        checked = list(tqdm(pool.map(check_image, in_layout), total=len(in_layout), desc="validating",
                            unit="file", disable=quiet, mininterval=0.5))
    good = [c for c in checked if not c.skip_reason]
    skipped += [Skipped(path=c.file.rel, reason=c.skip_reason) for c in checked if c.skip_reason]
    class_names = parse_classes(classes_file.read()) if classes_file is not None else []
    if class_names and not mask_files:
        raise DatasetError(f"{CLASSES_NAME} names mask classes but there are no masks: put them in "
                           + ", ".join(f"{mask_folder(s)}/" for s in SPLITS[layout]))
    masks: dict[str, Checked] = {}
    if mask_files:
        good, masks, mask_skips = pair_masks(good, mask_files, {c.file.rel for c in checked if c.skip_reason},
                                             layout, len(class_names) or None, threads, quiet)
        skipped += mask_skips
    num_classes = (len(class_names) or max(1, max(m.max_class for m in masks.values()) + 1)) if masks else 0
    splits = _split_infos(good, layout, masks)
    if layout == "unpaired" and not (splits.get("trainA") and splits.get("trainB")):
        raise DatasetError("no valid images in trainA/ or trainB/: an unpaired dataset needs both")
    if not splits.get("train") and layout == "single":
        raise DatasetError(f"no valid images found in {described} (expected train/ [test/] or images at the root)")
    attributes: dict[str, list[str]] = {}
    labels: dict[str, list[str]] = {}
    if labels_file is not None:
        if layout != "single":
            raise DatasetError(f"{LABELS_NAME} is only supported for single-domain datasets (train/ [test/])")
        images = {k: v.files for k, v in splits.items()}
        attributes, labels = parse_labels(labels_file.read(), images, {s.path for s in skipped})
        unlabelled = [rel for rel in splits["train"].files if rel not in labels]
        if unlabelled:
            shown = ", ".join(unlabelled[:5]) + (f" and {len(unlabelled) - 5} more" if len(unlabelled) > 5 else "")
            raise DatasetError(f"{len(unlabelled)} training image(s) have no row in {LABELS_NAME}: {shown}. "
                               "Add rows for them or remove them")
    uploaded, reused = _upload(good + list(masks.values()), labels_file, dest, overwrite, threads, quiet,
                               classes_file if masks else None)
    manifest = Manifest(layout=layout, splits=splits, channels=_channels(good), attributes=attributes, labels=labels,
                        num_classes=num_classes, classes=class_names if masks else [], skipped=skipped,
                        source=source_id or described, fingerprint=fp,
                        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), gansvc_version=__version__)
    storage.write_json(storage.parse_uri(dest).join(MANIFEST_NAME).uri(), manifest.model_dump())
    return PutResult(dest, manifest, uploaded, reused, up_to_date=False)


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
        out[split] = SplitInfo(count=len(mine), files=[c.file.rel for c in mine], sizes=sizes, modes=modes,
                               masks=found)
    return out


def _channels(good: list[Checked]) -> int:
    gray = {"1", "L", "LA", "I", "I;16", "F"}
    return 1 if all(c.mode in gray for c in good) else 3


def _upload(good: list[Checked], labels_file: SourceFile | None, dest: str, overwrite: bool, threads: int,
            quiet: bool, classes_file: SourceFile | None = None) -> tuple[int, int]:
    """Upload what is not there yet (same MD5/ETag = same content); with overwrite, drop objects not in the set."""
    root = storage.parse_uri(dest)
    existing = {o.rel: o for o in storage.list_objects(dest)}
    todo = [c for c in good if existing.get(c.file.rel) is None or not _same(existing[c.file.rel], c)]
    sidecars = [f for f in (labels_file, classes_file) if f is not None]
    for side in sidecars:
        todo.append(Checked(side, md5=hashlib.md5(side.read()).hexdigest()))

    def send(c: Checked) -> None:
        ext = Path(c.file.rel).suffix.lower()
        storage.write_bytes(root.join(c.file.rel).uri(), c.file.read(), CONTENT_TYPES.get(ext))

    with ThreadPoolExecutor(threads) as pool:
        list(tqdm(pool.map(send, todo), total=len(todo), desc="uploading", unit="file", disable=quiet,
                  mininterval=0.5))
    if overwrite:
        keep = {c.file.rel for c in good} | {LABELS_NAME, CLASSES_NAME, MANIFEST_NAME}
        for rel in existing:
            if rel not in keep:
                storage.delete(root.join(rel).uri())
    return len(todo), len(good) - sum(1 for c in todo if c.file.rel not in (LABELS_NAME, CLASSES_NAME))


def _same(obj: storage.ObjectInfo, c: Checked) -> bool:
    if obj.etag:
        return obj.etag == c.md5
    return obj.size == c.file.size and not obj.etag  # local destination: size match (written atomically)
