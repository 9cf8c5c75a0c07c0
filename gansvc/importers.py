"""Import checkpoints of official implementations (`python -m gansvc.registry import FILE --format NAME`).

Generic: the formats are the families' declarations (`FamilySpec.importers`: format name -> `Importer`); the format
readers live with their family (e.g. `cyclegan-official` in `gansvc.families.cyclegan`, `ugatit-pytorch` in
`gansvc.families.ugatit`). An importer reads the file, checks it strictly, builds the family's networks at the
architecture read from the weights and loads them; this module turns the result into a gansvc model file
(`checkpoint.inference_payload`), which `gansvc.registry.import_checkpoint` registers. Imports point one way:
registry -> importers -> families.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import torch

from gansvc.checkpoint import FORMAT, CheckpointError, inference_payload
from gansvc.families import import_formats
from gansvc.families.base import FamilySpec, Imported, Importer, ImportRequest


def formats() -> dict[str, tuple[FamilySpec[Any], Importer]]:
    """Import format name -> (the family that declares it, its Importer)."""
    return import_formats()


def describe(obj: Any) -> str:
    """A short description of what a file holds, for error messages (naming the declared format it looks like)."""
    if isinstance(obj, Mapping):
        keys = [str(k) for k in list(obj)[:6]]
        more = ", ..." if len(obj) > 6 else ""
        if obj.get("format") == FORMAT:
            return "a gansvc model file (register it with `python -m gansvc.registry promote`)"
        for fmt, (_, importer) in formats().items():
            if importer.looks_like(obj):
                return f"{importer.what} (use --format {fmt})"
        return f"a dict with keys {', '.join(keys)}{more}" if keys else "an empty dict"
    return f"a {type(obj).__name__}"


def read_checkpoint(fmt: str, file: str, b2a: str | None = None) -> Imported:
    """Read an official checkpoint (local path or s3:// URI) of import format `fmt` and check it strictly."""
    known = formats()
    if fmt not in known:
        raise CheckpointError(f"unknown import format {fmt!r}; formats: {', '.join(known)}")
    spec, importer = known[fmt]
    if b2a is not None and importer.b2a is None:
        takers = ", ".join(f for f, (_, imp) in known.items() if imp.b2a is not None)
        raise CheckpointError(f"--b2a is for {takers}; {importer.what} holds both generators")
    return importer.load(ImportRequest(spec, file, b2a, describe))


def model_file(fmt: str, file: str, b2a: str | None = None) -> tuple[bytes, str, dict[str, Any]]:
    """(gansvc model file bytes, source, facts for the registry entry) of an official checkpoint."""
    imp = read_checkpoint(fmt, file, b2a)
    info = {"directions": list(imp.directions), "import_format": fmt, **imp.info}
    payload = inference_payload(imp.spec, imp.config, imp.data, imp.state, {**info, "source": file, "b2a": b2a})
    buf = io.BytesIO()
    torch.save(payload, buf)
    source = file if b2a is None else f"{file} + {b2a}"
    return buf.getvalue(), source, info
