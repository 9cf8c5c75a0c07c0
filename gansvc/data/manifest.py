"""`manifest.json`: the description of a dataset in storage, written last by `gansvc.data put` (its commit point).

Readers (the training input pipeline, `data info`, the training CLI's dry run) go through the manifest only: they never
list the bucket, so a half-uploaded dataset (no manifest yet) is never read, and skipped files are never seen.

Datasets are versioned: a put writes every file of a version under `.v/<version>/` (`files_root`; <version> = the
first 16 hex digits of the source's content fingerprint) and switches `manifest.json` last, so the files a manifest
names never change while it is live; readers resolve a listed file with `Manifest.object_rel`. Manifests written
before versioning have `files_root` "" (files at the dataset root) and load unchanged.

Every path a manifest names (files, masks, label keys, files_root) must be a plain relative "/"-separated path: no
absolute paths, `..` or `.` parts, backslashes or empty parts (a crafted `../../x` would make a reader's cache write
outside its folder). The model refuses such manifests, naming the entry, so every reader gets the check.

Segmentation masks (optional; see `gansvc.data.ingest` for the layout) are recorded per split as image -> mask paths
(`SplitInfo.masks`), with the dataset's `num_classes` and optional class names (`classes.txt`). Manifests written
before masks existed have neither field and load unchanged.
"""

from __future__ import annotations

import re
from typing import Final, Literal

from pydantic import Field, model_validator

from gansvc import storage
from gansvc.data.spec import DataSpec
from gansvc.strict import Strict

MANIFEST_NAME = "manifest.json"
FORMAT: Final = "gansvc-dataset/1"
LABELS_NAME = "labels.csv"
CLASSES_NAME = "classes.txt"  # optional: one class name per line, line i names mask value i
VERSIONS_DIR = ".v"  # DEST/.v/<version>/<rel>: the immutable files of each dataset version
MASKS_SUFFIX = "_masks"  # masks of split `train` live in `train_masks/`, of `trainA` in `trainA_masks/`

Layout = Literal["single", "unpaired"]  # a dataset's folder layout (see gansvc.data.ingest)
# the splits each layout may have; the first is the training split of each domain
SPLITS: dict[str, tuple[str, ...]] = {"single": ("train", "test"), "unpaired": ("trainA", "trainB", "testA", "testB")}


def mask_folder(split: str) -> str:
    """The folder holding the masks of a split's images: `train` -> `train_masks`, `trainA` -> `trainA_masks`."""
    return split + MASKS_SUFFIX


_DRIVE = re.compile(r"^[A-Za-z]:")
# the common case in one regex (manifests list 100k+ files): non-empty parts without "\\" or control characters
_PLAIN = re.compile(r"(?:[^/\\\x00-\x1f]+/)*[^/\\\x00-\x1f]+")


def path_problem(rel: str) -> str:
    """Why `rel` is not a safe dataset-relative path ("" when it is): what a reader may join to a root."""
    if _PLAIN.fullmatch(rel) and not _DRIVE.match(rel) and "/./" not in f"/{rel}/" and "/../" not in f"/{rel}/":
        return ""
    if not rel:
        return "is empty"
    if "\\" in rel:
        return "contains a backslash"
    if rel.startswith("/") or _DRIVE.match(rel):
        return "is absolute"
    if any(ord(c) < 32 for c in rel):
        return "contains a control character"
    parts = rel.split("/")
    if any(p == "" for p in parts):
        return "has an empty part (// or a trailing /)"
    if any(p in (".", "..") for p in parts):
        return "has a '.' or '..' part"
    return ""


def version_root(fingerprint: str) -> str:
    """The folder (relative to the dataset root) holding the files of the version with this content fingerprint."""
    return f"{VERSIONS_DIR}/{fingerprint[:16]}"


class Skipped(Strict):
    path: str
    reason: str


class SplitInfo(Strict):
    count: int
    files: list[str]  # paths relative to the dataset root, "/"-separated
    sizes: dict[str, int] = Field(default_factory=dict)  # "WxH" -> number of images
    modes: dict[str, int] = Field(default_factory=dict)  # PIL mode (RGB, L, RGBA, P...) -> number of images
    # image path -> mask path (e.g. "train/x.jpg" -> "train_masks/x.png"); empty when the split has no masks, else
    # every image of the split has one (put skips images without)
    masks: dict[str, str] = Field(default_factory=dict)


class Manifest(Strict):
    format: Literal["gansvc-dataset/1"] = FORMAT
    layout: Layout
    splits: dict[str, SplitInfo]
    channels: int  # 3 if any image has colour, else 1
    # attribute -> sorted values; labels[file] = values in attribute order (label-conditioned datasets only)
    attributes: dict[str, list[str]] = Field(default_factory=dict)
    labels: dict[str, list[str]] = Field(default_factory=dict)
    # segmentation masks: number of classes (0 = no masks) and their names when classes.txt gave them
    num_classes: int = 0
    classes: list[str] = Field(default_factory=list)
    skipped: list[Skipped] = Field(default_factory=list)
    source: str = ""
    fingerprint: str = ""  # of the source's contents: a re-put of the same source is a no-op
    # where the files of this version live, relative to the dataset root ("" = at the root, as manifests written
    # before versioned datasets). A put writes every file under `.v/<version>/` and switches manifest.json last, so
    # a reader that holds a manifest always reads one consistent, immutable version.
    files_root: str = ""
    created: str = ""
    gansvc_version: str = ""

    @property
    def sizes(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for s in self.splits.values():
            for k, v in s.sizes.items():
                total[k] = total.get(k, 0) + v
        return total

    def data_spec(self, height: int | None = None, width: int | None = None, channels: int | None = None) -> DataSpec:
        """The spec a family is built for: training size (default: the most common image size) and channels."""
        if height is None or width is None:
            w, h = (int(x) for x in max(self.sizes.items(), key=lambda kv: kv[1])[0].split("x"))
            height, width = height or h, width or w
        attrs = {k: tuple(v) for k, v in self.attributes.items()}
        return DataSpec(
            layout=self.layout,
            height=height,
            width=width,
            channels=channels or self.channels,
            attributes=attrs,
            num_classes=self.num_classes,
        )

    @model_validator(mode="after")
    def _safe_paths(self) -> Manifest:
        """Refuse any path a reader would join to the dataset root that could leave it (see the module doc)."""

        def check(where: str, rel: str) -> None:
            problem = path_problem(rel)
            if problem:
                raise ValueError(
                    f"unsafe path in {where}: {rel!r} {problem}; dataset paths must be relative, "
                    "'/'-separated, without '..', '.', backslashes or empty parts. Re-ingest the "
                    "dataset with `python -m gansvc.data put`"
                )

        if self.files_root:
            check("files_root", self.files_root)
        for name, split in self.splits.items():
            for rel in split.files:
                check(f"splits.{name}.files", rel)
            for image, mask in split.masks.items():
                check(f"splits.{name}.masks (key)", image)
                check(f"splits.{name}.masks[{image!r}]", mask)
        for rel in self.labels:
            check("labels (key)", rel)
        return self

    def stored_files(self) -> list[str]:
        """Every file this version stored (images, masks, and the labels.csv / classes.txt it was made from)."""
        out = [rel for s in self.splits.values() for rel in (*s.files, *s.masks.values())]
        if self.attributes:
            out.append(LABELS_NAME)
        if self.classes:
            out.append(CLASSES_NAME)
        return list(dict.fromkeys(out))

    def object_rel(self, rel: str) -> str:
        """Where the file `rel` (as listed in `splits`, `labels`, `masks`) lives, relative to the dataset root."""
        return f"{self.files_root}/{rel}" if self.files_root else rel

    def masked_splits(self) -> list[str]:
        """The splits whose images all have masks."""
        return [name for name, s in self.splits.items() if s.masks and len(s.masks) == s.count]


def read_manifest(root_uri: str) -> Manifest:
    """The manifest at a dataset root, with a clear error if there is none (not a dataset, or an unfinished put)."""
    uri = storage.parse_uri(root_uri).join(MANIFEST_NAME).uri()
    try:
        raw = storage.read_json(uri)
    except storage.StorageError as err:
        if "no such" in str(err):
            raise storage.StorageError(
                f"{root_uri} is not a gansvc dataset (no {MANIFEST_NAME}): ingest it with `python -m gansvc.data put "
                f"SRC {root_uri}` or write a synthetic one with `python -m gansvc.data synth shapes {root_uri}`; "
                "an interrupted put is completed by running it again"
            ) from None
        raise
    try:
        return Manifest.model_validate(raw)
    except Exception as err:  # noqa: BLE001 - pydantic's message names the field
        raise storage.StorageError(f"{uri} is not a valid gansvc manifest: {err}") from None


def format_manifest(m: Manifest, uri: str) -> str:
    """Readable summary for `data info`."""
    lines = [f"dataset   {uri}", f"layout    {m.layout}", f"channels  {m.channels}"]
    for name, s in m.splits.items():
        sizes = ", ".join(f"{k} x{v}" for k, v in sorted(s.sizes.items(), key=lambda kv: -kv[1])[:4])
        masks = f"   masks: {len(s.masks)}" if s.masks else ""
        lines.append(f"  {name:<8} {s.count:>7} images   sizes: {sizes}{masks}")
    if m.attributes:
        lines.append(f"labels    {len(m.labels)} labelled images")
        for a, vals in m.attributes.items():
            counts = {v: 0 for v in vals}
            idx = list(m.attributes).index(a)
            for row in m.labels.values():
                counts[row[idx]] += 1
            lines.append(f"  {a}: " + ", ".join(f"{v} ({n})" for v, n in counts.items()))
    if m.num_classes:
        names = ", ".join(f"{i} {n}" for i, n in enumerate(m.classes)) if m.classes else "unnamed (no classes.txt)"
        lines.append(f"classes   {m.num_classes}: {names}")
    if m.skipped:
        lines.append(f"skipped   {len(m.skipped)} file(s)")
        lines.extend(f"  {s.path}: {s.reason}" for s in m.skipped[:20])
        if len(m.skipped) > 20:
            lines.append(f"  ... and {len(m.skipped) - 20} more (see {MANIFEST_NAME})")
    lines.append(f"source    {m.source or '-'}")
    lines.append(f"created   {m.created or '-'}  (gansvc {m.gansvc_version or '?'})")
    return "\n".join(lines)
