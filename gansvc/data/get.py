"""`python -m gansvc.data get NAME [DEST]`: fetch a catalog dataset, verify it, convert it if needed, and `put` it.

Verification (`gansvc.data.catalog.Entry.verification`):
- pinned: the publisher's checksum (CIFAR-10's MD5 from its page) is checked on every download and copy;
- recorded: the first verified-by-nobody download's SHA-256 is recorded in `<cache>/downloads/catalog-sha256.json`
  (trust on first use) and every later download or `--from` copy must match it.
`--skip-checksum` turns both off (nothing is recorded then).

Downloads go through `gansvc.data.download.fetch` (progress bar, resume of a cut download from its `.part`, a
complete file renamed into the cache only once verified) into `<cache>/downloads/catalog/NAME/`; a cached archive
that verifies is reused without a request. The archive then goes through `gansvc.data.ingest.put` (the same
validation, versioning and manifest as `data put`) with the source `catalog:NAME:sha256=<archive sha256>`, so a
re-run on an up-to-date destination is a no-op, and `data info` knows which catalog entry a dataset came from.
Nothing is written to DEST before the archive is verified.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from gansvc import storage
from gansvc.data import catalog
from gansvc.data.catalog import Entry
from gansvc.data.cifar import CifarFormatError
from gansvc.data.download import DownloadError, fetch, md5_file, sha256_file
from gansvc.data.ingest import PutResult, existing_manifest, put
from gansvc.paths import cache_home

RECORD_NAME = "catalog-sha256.json"
MANUAL_EXIT = 3  # `data get` of a manual entry: instructions printed, nothing fetched


class GetError(ValueError):
    """`data get` cannot go on; the message says what was wrong and what to do."""


class ManualStep(Exception):
    """The entry needs an account or a manual step; the message is the instructions."""


@dataclass(frozen=True)
class Archive:
    path: Path
    sha256: str
    origin: str  # the URL or file it came from (for messages)


# ------------------------------------------------------------------------------------------------ the --list table


def list_table() -> str:
    """`data get --list`: one row per entry, then its description, terms and caveats."""
    head = f"{'NAME':<23}{'SIZE':<22}{'LAYOUT':<34}{'VERIFICATION':<35}{'FLIP':<6}FAMILIES / REPORT"
    lines = [head, "-" * len(head)]
    for e in catalog.CATALOG.values():
        layout = e.layout.split(" (", 1)[0] if len(e.layout) > 32 else e.layout
        lines.append(
            f"{e.name:<23}{e.size:<22}{layout:<34}{e.verification:<35}{'yes' if e.flip else 'NO':<6}"
            f"{', '.join(e.families)} / report {e.report}"
        )
        lines.append(f"    {e.what}")
        lines.append(f"    terms: {e.licence}")
        lines.append(f"    flip: {e.flip_why}")
        if e.aliases:
            lines.append(f"    also called: {', '.join(e.aliases)}")
        if e.notes:
            lines.append(f"    note: {e.notes}")
    lines += [
        "",
        f"`python -m gansvc.data get NAME [DEST]` fetches an entry (DEST defaults to "
        "$GANSVC_STORAGE/datasets/NAME); entries marked 'manual step' print where to get the files and the "
        "`data put` command to run. --from URL_OR_FILE takes the same archive from a mirror or a local file; "
        f"${catalog.MIRROR_ENV} points every download at a mirror.",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ recorded hashes


def downloads_dir() -> Path:
    return cache_home() / "downloads"


def record_file() -> Path:
    return downloads_dir() / RECORD_NAME


def _records() -> dict[str, dict[str, str]]:
    path = record_file()
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise GetError(
            f"cannot read the recorded checksums in {path} ({err}): fix or delete that file (the next "
            "download records the hashes again)"
        ) from None
    return data if isinstance(data, dict) else {}


def recorded_sha256(name: str) -> str | None:
    rec = _records().get(name)
    return str(rec["sha256"]) if isinstance(rec, dict) and rec.get("sha256") else None


def _record(name: str, sha256: str, origin: str) -> None:
    """Write `name`'s archive hash (atomically: a killed write leaves the old file)."""
    data = _records()
    data[name] = {"sha256": sha256, "from": origin, "recorded": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    path = record_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------------ destinations


def default_dest(name: str, env: dict[str, str] | None = None) -> str:
    """`$GANSVC_STORAGE/datasets/NAME`, or a GetError saying both ways to give a destination."""
    base = (os.environ if env is None else env).get("GANSVC_STORAGE", "").strip()
    if not base:
        raise GetError(
            f"where should {name} go? Give DEST (`python -m gansvc.data get {name} s3://bucket/datasets/"
            f"{name}` or a local folder), or set GANSVC_STORAGE (then it goes to "
            f"$GANSVC_STORAGE/datasets/{name}, where training looks for it)"
        )
    return storage.parse_uri(base).join("datasets", name).uri()


def _dest_shown(name: str) -> str:
    try:
        return default_dest(name)
    except GetError:
        return f"$GANSVC_STORAGE/datasets/{name}"


def manual_message(e: Entry, dest: str | None = None) -> str:
    put_src = "selfie2anime.zip" if e.name == "selfie2anime" else "FOLDER_OR_ZIP"
    target = dest or _dest_shown(e.name)
    text = [
        f"{e.name}: {e.what}",
        f"terms: {e.licence}",
        "",
        e.manual,
        "",
        "Then run:",
        f"  python -m gansvc.data put {put_src} {target}",
    ]
    if e.archive:
        text.append(
            f"or, with the same archive: python -m gansvc.data get {e.name} {dest or ''} --from {e.archive}".replace(
                "  ", " "
            )
        )
    if e.notes:
        text += ["", f"note: {e.notes}"]
    return "\n".join(text)


# ------------------------------------------------------------------------------------------------ obtaining the archive


def _pinned_mismatch(e: Entry, origin: str, got: str) -> GetError:
    return GetError(
        f"{origin}: md5 {got} does not match the publisher's {e.md5} for {e.name} (pinned from its "
        f"download page in gansvc/data/catalog.py). The file is corrupt, cut short or another version: "
        f"nothing was written to the destination. Download it again, use another mirror (--from "
        f"URL_OR_FILE), or pass --skip-checksum if you trust this file"
    )


def _recorded_mismatch(e: Entry, origin: str, got: str, want: str) -> GetError:
    return GetError(
        f"{origin}: sha256 {got} differs from {want}, recorded at the first download of {e.name} in "
        f"{record_file()}. The file is corrupt or another version: nothing was written to the destination. "
        f'If the publisher changed {e.archive} on purpose, delete the "{e.name}" entry of that file (or '
        f"the file) to record the new hash, or pass --skip-checksum"
    )


def _cache_target(e: Entry, url: str) -> Path:
    # one cache file per URL: an unverified (--skip-checksum) mirror copy never stands in for the publisher's file
    return downloads_dir() / "catalog" / e.name / f"{hashlib.sha1(url.encode()).hexdigest()[:12]}-{e.archive}"


def _download(e: Entry, url: str, skip: bool, max_bytes: int | None, quiet: bool, retries: int) -> Archive:
    want_sha = None if skip or e.md5 else recorded_sha256(e.name)
    try:
        path = fetch(
            url,
            _cache_target(e, url),
            max_bytes=max_bytes,
            md5=None if skip else (e.md5 or None),
            sha256=want_sha,
            retries=retries,
            progress=not quiet,
        )
    except DownloadError as err:
        text = str(err)
        if "mismatch" in text:
            where = (
                "pinned from the publisher's page in gansvc/data/catalog.py"
                if e.md5
                else f"recorded at the first download in {record_file()}: if the publisher changed the archive on "
                f'purpose, delete the "{e.name}" entry of that file to record the new hash'
            )
            raise GetError(f"{text}. The expected hash is {where}. Nothing was written to the destination") from None
        raise GetError(
            f"{text}. If {url} is unreachable from here, use --from URL_OR_FILE with a mirror or a local "
            f"copy of {e.archive} (or set {catalog.MIRROR_ENV}); it is verified the same way"
        ) from None
    return Archive(path, sha256_file(path), url)


def _local(e: Entry, src: str, skip: bool) -> Archive:
    path = Path(src).expanduser()
    if not path.is_file():
        raise GetError(f"--from {src}: no such file (give the {e.archive} archive, or an http(s) URL of it)")
    sha = sha256_file(path)
    if not skip:
        if e.md5:
            if (got := md5_file(path)) != e.md5:
                raise _pinned_mismatch(e, str(path), got)
        elif (want := recorded_sha256(e.name)) and want != sha:
            raise _recorded_mismatch(e, str(path), sha, want)
    return Archive(path, sha, str(path.resolve()))


def obtain(
    e: Entry,
    src: str | None = None,
    *,
    skip_checksum: bool = False,
    max_bytes: int | None = None,
    quiet: bool = False,
    retries: int = 5,
) -> Archive:
    """The entry's archive, verified (unless `skip_checksum`): from `src` (URL or file) or the catalog's URL.

    Nothing is recorded here: `get` records a first hash only once the archive made a valid dataset, so a wrong file
    (an HTML error page, another archive) is never trusted."""
    if src is not None and not src.startswith(("http://", "https://")):
        return _local(e, src, skip_checksum)
    return _download(e, src or e.source_url(), skip_checksum, max_bytes, quiet, retries)


def _record_first(e: Entry, archive: Archive, skip_checksum: bool) -> None:
    """Trust on first use: record the hash of an archive that made a valid dataset (pinned entries: for the no-op
    check of later runs; their MD5 stays the check)."""
    if not skip_checksum and (e.md5 or recorded_sha256(e.name) is None):
        _record(e.name, archive.sha256, archive.origin)


# ------------------------------------------------------------------------------------------------ get


@contextlib.contextmanager
def _converted(e: Entry, archive: Archive) -> Iterator[str]:
    """The folder or file `put` reads: the zip itself, or CIFAR-10's binary records written out as PNGs."""
    if e.kind != "cifar10-binary":
        yield str(archive.path)
        return
    from gansvc.data.cifar import convert  # numpy / PIL: only for the entry that needs them

    # beside the download (the cache disk), not in $TMPDIR: 60,000 PNGs are about 150 MB
    work = downloads_dir() / "catalog" / e.name
    work.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="convert-", dir=work))
    try:
        convert(archive.path, folder)
        yield str(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _up_to_date(dest: str, sid: str) -> PutResult | None:
    done = existing_manifest(dest)
    if done is not None and done.source == sid:
        return PutResult(dest, done, 0, 0, up_to_date=True)
    return None


def get(
    name: str,
    dest: str | None = None,
    src: str | None = None,
    *,
    overwrite: bool = False,
    skip_checksum: bool = False,
    max_bytes: int | None = None,
    quiet: bool = False,
    retries: int = 5,
    threads: int = 16,
) -> PutResult:
    """Fetch catalog entry `name` into `dest` (default `$GANSVC_STORAGE/datasets/NAME`). See the module doc.

    Raises GetError (and the DatasetError / StorageError of put) with a message saying what to do, and ManualStep
    for entries that need a manual step (unless `src` gives their archive).
    """
    e = catalog.entry(name)
    if e.kind == "manual" and not (src and e.archive):
        raise ManualStep(manual_message(e, dest))
    dest = dest or default_dest(e.name)
    storage.check_bucket(dest)
    if (
        src is None
        and not skip_checksum
        and (sha := recorded_sha256(e.name))
        and (done := _up_to_date(dest, catalog.source_id(e.name, sha))) is not None
    ):
        return done  # the verified archive is already in dest: no download, no conversion
    archive = obtain(e, src, skip_checksum=skip_checksum, max_bytes=max_bytes, quiet=quiet, retries=retries)
    sid = catalog.source_id(e.name, archive.sha256)
    if (done := _up_to_date(dest, sid)) is None:
        if e.kind != "cifar10-binary" and not zipfile.is_zipfile(archive.path):
            _drop_unverified(e, archive, skip_checksum)
            raise GetError(
                f"{archive.origin} is not a zip file (an error page, or another file?): {e.name} comes as "
                f"{e.archive}. Check the URL or file; nothing was written to the destination"
            )
        try:
            with _converted(e, archive) as folder:
                # put's own errors (the destination, the dataset's content) pass through as they are
                done = put(folder, dest, overwrite, threads, quiet, source_id=sid, max_download_bytes=max_bytes)
        except CifarFormatError as err:
            _drop_unverified(e, archive, skip_checksum)
            raise GetError(f"{archive.origin}: {err}. Nothing was written to the destination") from None
    _record_first(e, archive, skip_checksum)
    return done


def _drop_unverified(e: Entry, archive: Archive, skip_checksum: bool) -> None:
    """A downloaded archive that no known hash vouched for and that is not a valid dataset (an error page, another
    file) leaves the cache, so that the next run downloads again instead of reusing it."""
    vouched = not skip_checksum and (e.md5 or recorded_sha256(e.name))
    if not vouched and archive.path.is_relative_to(downloads_dir()):
        archive.path.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------------ mask conversion


def cityscapes_masks(src: Path, dst: Path, quiet: bool = False) -> int:
    """Convert Cityscapes-id label PNGs (gtFine `*_gtFine_labelIds.png`, GTA5 `labels/*.png`) under `src` into the
    masks gansvc reads (values = trainIds 0..18, 255 = ignore) under `dst`, keeping relative paths; gtFine names
    become their image's (`x_gtFine_labelIds.png` -> `x_leftImg8bit.png`). Returns the number of masks written."""
    import numpy as np
    from PIL import Image
    from tqdm import tqdm

    lut = np.full(256, 255, dtype=np.uint8)  # every id outside the 19 evaluated classes is ignored
    for label_id, train_id in catalog.CITYSCAPES_TRAIN_IDS.items():
        lut[label_id] = train_id
    # gtFine also ships colour, instance and polygon files next to the label ids: only label-id PNGs are converted
    files = [
        p for p in sorted(src.rglob("*.png")) if "_gtFine_" not in p.name or p.name.endswith("_gtFine_labelIds.png")
    ]
    if not files:
        raise GetError(f"{src}: no label PNGs found (expected gtFine/**/*_gtFine_labelIds.png or GTA5 labels/*.png)")
    for p in tqdm(files, desc="converting masks", unit="mask", disable=quiet):
        rel = p.relative_to(src)
        with Image.open(p) as im:
            if im.mode not in ("L", "P"):  # P: GTA5's palette indices are the ids; L: gtFine's grey values are
                raise GetError(
                    f"{p}: a {im.mode} image; label-id PNGs are single-channel (L) or palette (P) images "
                    "(the *_color.png files are not label ids)"
                )
            ids = np.asarray(im)
        out = dst / rel.parent / rel.name.replace("_gtFine_labelIds.png", "_leftImg8bit.png")
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(lut[ids], "L").save(out)
    return len(files)


def write_classes(path: Path) -> None:
    """classes.txt naming the 19 Cityscapes trainId classes (line i = class i)."""
    path.write_text("\n".join(catalog.CITYSCAPES_CLASSES) + "\n")
