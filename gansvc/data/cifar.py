"""CIFAR-10's binary archive (`cifar-10-binary.tar.gz`) -> a single-domain gansvc dataset folder with labels.csv.

The binary version is parsed byte by byte; the Python version's pickles are never loaded (unpickling runs code).
Format, from the CIFAR page (https://www.cs.toronto.edu/~kriz/cifar.html, "Binary version"): the archive holds
`cifar-10-batches-bin/data_batch_1.bin` ... `data_batch_5.bin` (training) and `test_batch.bin`, each 10000 records of
`<1 x label><3072 x pixel>`: the label byte (0-9), then the 1024 red, 1024 green and 1024 blue values of a 32x32
image, each plane row-major. `batches.meta.txt` names the classes, line i = label i.

The tar is read as a stream (`r|gz`: one pass, members in archive order), one record at a time, so memory stays at one
record whatever the archive's size, and nothing but the PNGs is written to disk.
"""

from __future__ import annotations

import csv
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image

SIDE = 32
RECORD = 1 + 3 * SIDE * SIDE  # label byte + R, G, B planes
TRAIN_BATCHES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_BATCH = "test_batch.bin"
META = "batches.meta.txt"
ATTRIBUTE = "class"  # the labels.csv column acgan/wacgan condition on


class CifarFormatError(ValueError):
    """The archive is not CIFAR-10's binary version; the message says what was found."""


@dataclass(frozen=True)
class Converted:
    folder: Path
    classes: tuple[str, ...]
    counts: dict[str, int]  # split -> images


def records(stream: IO[bytes], member: str) -> Iterator[tuple[int, np.ndarray]]:
    """(label, HxWx3 uint8 image) for each record of one batch file."""
    n = 0
    while True:
        rec = stream.read(RECORD)
        if not rec:
            return
        if len(rec) != RECORD:
            raise CifarFormatError(
                f"{member}: record {n} is {len(rec)} bytes, not {RECORD} (1 label + 3072 pixels): "
                "the archive is truncated or not CIFAR-10's binary version"
            )
        label = rec[0]
        if label > 9:
            raise CifarFormatError(f"{member}: record {n} has label {label}; CIFAR-10 labels are 0-9")
        planes = np.frombuffer(rec, dtype=np.uint8, offset=1).reshape(3, SIDE, SIDE)
        yield label, np.ascontiguousarray(planes.transpose(1, 2, 0))  # CHW planes -> HWC for PIL
        n += 1


def parse_meta(raw: bytes) -> tuple[str, ...]:
    """The 10 class names of batches.meta.txt (blank lines ignored)."""
    names = tuple(line.strip() for line in raw.decode("utf-8", "replace").splitlines() if line.strip())
    if len(names) != 10:
        raise CifarFormatError(f"{META} names {len(names)} classes, CIFAR-10 has 10: {names[:12]}")
    if len(set(names)) != 10 or any("," in n or '"' in n for n in names):
        raise CifarFormatError(f"{META}: class names must be distinct and free of commas/quotes, got {names}")
    return names


def convert(archive: Path, out: Path) -> Converted:
    """Write `out/train/NNNNN.png` (50000 upstream), `out/test/NNNNN.png` (10000) and `out/labels.csv`.

    Images are numbered in archive order (batches 1..5 for train), so the same archive gives the same files.
    """
    labels: dict[str, int] = {}
    counts = {"train": 0, "test": 0}
    classes: tuple[str, ...] | None = None
    seen: set[str] = set()
    try:
        with tarfile.open(archive, mode="r|gz") as tar:
            for member in tar:
                base = member.name.rsplit("/", 1)[-1]
                if not member.isfile() or base not in (*TRAIN_BATCHES, TEST_BATCH, META):
                    continue
                fh = tar.extractfile(member)
                assert fh is not None  # a regular file
                seen.add(base)
                if base == META:
                    classes = parse_meta(fh.read(1 << 16))
                    continue
                split = "test" if base == TEST_BATCH else "train"
                # train images are numbered by batch so that the order of members cannot change the names
                first = TRAIN_BATCHES.index(base) * 10000 if split == "train" else 0
                folder = out / split
                folder.mkdir(parents=True, exist_ok=True)
                for i, (label, image) in enumerate(records(fh, base)):
                    rel = f"{split}/{first + i:05d}.png"
                    Image.fromarray(image, "RGB").save(out / rel, compress_level=1)  # fast; PNG stays lossless
                    labels[rel] = label
                    counts[split] += 1
    except (tarfile.TarError, EOFError, OSError) as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise CifarFormatError(
            f"{archive.name} is not a readable .tar.gz ({type(err).__name__}: {err}): a truncated "
            "download or another file"
        ) from None
    missing = [m for m in (*TRAIN_BATCHES, TEST_BATCH, META) if m not in seen]
    if missing:
        raise CifarFormatError(
            f"{archive.name} lacks {', '.join(missing)}: not CIFAR-10's binary version "
            "(cifar-10-binary.tar.gz holds cifar-10-batches-bin/data_batch_1..5.bin, test_batch.bin "
            "and batches.meta.txt)"
        )
    assert classes is not None
    with open(out / "labels.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["file", ATTRIBUTE])
        for rel, label in labels.items():
            w.writerow([rel, classes[label]])
    return Converted(out, classes, counts)
