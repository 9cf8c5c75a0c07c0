"""The model registry: promoted models by name, kept in storage (`python -m gansvc.registry`).

Layout under the registry root (`--registry`, else `$GANSVC_REGISTRY`, else `$GANSVC_STORAGE/registry`, else
`~/.gansvc/registry`):
    entries/NAME.json                 the entry (written last: it commits a promotion)
    models/NAME/vN/model.pt           a copy of the promoted inference weights (a run may delete its old checkpoints)

An entry names the family, task, family config, data spec (size, channels, attributes), source run or checkpoint,
dataset, metrics (with `metric_protocol`: how they were computed, when the run recorded it), version and creation
time. `load_model(NAME)` is the one load path of Serve and the offline CLIs. `export NAME --format onnx|torchscript
OUT` writes a model's inference graphs for use outside Ray (gansvc.export).

Start-up time: the listing commands (`list`, `show`, `delete`, `--help`) never import torch (`python -m
gansvc.registry list` in well under a second, not 3-4 s): the modules that need it (checkpoint, importers, the
families) are imported inside the functions that load or build models.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gansvc import storage
from gansvc.checkpoint_layout import META_FILE, MODEL_FILE, CheckpointError, read_best
from gansvc.paths import RUN_CONFIG_FILE

if TYPE_CHECKING:
    from gansvc.checkpoint import InferenceModel

# The one rule for registry names (issue 13 #11): a name becomes a storage key (entries/NAME.json, models/NAME/...),
# so it must never hold "/", "\\" or a leading "." (no "..": no escape from the registry root). Checked by
# `check_name` wherever a name enters: register/promote/import, get_entry/show, load_model (Serve, CLIs), delete.
NAME_RULE = "[a-z0-9][a-z0-9._-]{0,63}"
NAME_PATTERN = rf"^{NAME_RULE}$"  # anchored, for pydantic/JSON-schema users (serve/schemas.py)


class RegistryError(RuntimeError):
    """A registry operation could not be done; the message says why and what to do."""


def default_root() -> str:
    if os.environ.get("GANSVC_REGISTRY"):
        return os.environ["GANSVC_REGISTRY"]
    if os.environ.get("GANSVC_STORAGE"):
        return f"{os.environ['GANSVC_STORAGE'].rstrip('/')}/registry"
    return str(Path.home() / ".gansvc" / "registry")


def check_name(name: str) -> str:
    """`name` if it follows the registry name rule, else RegistryError naming the rule."""
    import re

    # fullmatch, not match + "$": "$" also matches before a trailing newline ("x\n" would pass)
    if not isinstance(name, str) or re.fullmatch(NAME_RULE, name) is None:
        raise RegistryError(
            f"invalid model name {name!r}: a registry name must match {NAME_RULE} (lowercase "
            "letters, digits, '.', '_' or '-', at most 64 characters, starting with a letter or "
            "digit; no '/' or '..')"
        )
    return name


_check_name = check_name  # the old private name


def _entry_uri(root: str, name: str) -> str:
    check_name(name)  # every path into storage goes through here or _models_uri
    return storage.parse_uri(root).join("entries", f"{name}.json").uri()


def _models_uri(root: str, name: str, *parts: str) -> str:
    check_name(name)
    return storage.parse_uri(root).join("models", name, *parts).uri()


def get_entry(name: str, root: str | None = None) -> dict[str, Any]:
    check_name(name)
    root = root or default_root()
    uri = _entry_uri(root, name)
    if not storage.exists(uri):
        known = ", ".join(e["name"] for e in list_entries(root)) or "none"
        raise RegistryError(f"no model named {name!r} in the registry at {root} (models: {known})")
    entry: dict[str, Any] = storage.read_json(uri)
    return entry


def list_entries(root: str | None = None) -> list[dict[str, Any]]:
    root = root or default_root()
    out = []
    for obj in storage.list_objects(storage.parse_uri(root).join("entries").uri()):
        if obj.rel.endswith(".json") and "/" not in obj.rel:
            out.append(storage.read_json(storage.parse_uri(root).join("entries", obj.rel).uri()))
    return sorted(out, key=lambda e: e["name"])


def load_model(name: str, root: str | None = None, device: str = "cpu") -> tuple[dict[str, Any], InferenceModel]:
    """(entry, inference model) of a registered name: the load path of Serve, generate and translate."""
    from gansvc.checkpoint import load_inference  # deferred (torch): start-up time of the listing commands

    check_name(name)
    entry = get_entry(name, root)
    return entry, load_inference(entry["checkpoint"], device)


# ---------------------------------------------------------------------------------------------------------- promote


def _checkpoints(run: storage.Location) -> list[tuple[int, str, dict[str, Any]]]:
    """(step, checkpoint URI, meta) of every checkpoint of a run."""
    found = []
    for obj in storage.list_objects(run.uri()):
        parts = obj.rel.split("/")
        if len(parts) == 2 and parts[0].startswith("checkpoint") and parts[1] == META_FILE:
            meta = storage.read_json(run.join(obj.rel).uri())
            found.append((int(meta.get("step", 0)), run.join(parts[0]).uri(), meta))
    return sorted(found)


def resolve_source(source: str, metric: str | None, runs_root: str | None = None) -> tuple[str, dict[str, Any]]:
    """A model file URI and its metadata from a checkpoint dir, a run dir or a run name (best checkpoint wins)."""
    loc = storage.parse_uri(source)
    if not source.startswith(("s3://", "/", ".", "file:")) and not Path(source).exists():
        from gansvc.config import RunSection

        loc = storage.parse_uri(RunSection(storage=runs_root or "").storage_root()).join(source)
    if storage.exists(loc.join(MODEL_FILE).uri()):  # a checkpoint directory
        meta_uri = loc.join(META_FILE).uri()
        return loc.join(MODEL_FILE).uri(), storage.read_json(meta_uri) if storage.exists(meta_uri) else {}
    if not storage.exists(loc.join(RUN_CONFIG_FILE).uri()):
        raise RegistryError(
            f"{loc.uri()} is neither a gansvc checkpoint (no {MODEL_FILE}) nor a training run "
            f"(no {RUN_CONFIG_FILE}): give a run name, a run URI or a checkpoint URI"
        )
    committed = read_best(loc.uri())  # None when best/ has no meta.json matching its model (a torn write)
    if committed is not None:
        best, best_model = committed
        if metric is None or best.get("metric") == metric:
            return best_model, {**best, "metrics": best.get("metrics", {})}
    ckpts = _checkpoints(loc)
    if not ckpts:
        raise RegistryError(f"run {loc.uri()} has no checkpoint yet")
    if metric is not None:
        scored = [c for c in ckpts if metric in c[2].get("metrics", {})]
        if not scored:
            raise RegistryError(
                f"no checkpoint of {loc.uri()} has metric {metric!r}; drop --metric to take the "
                "latest, or evaluate with that metric"
            )
        ordered = sorted(scored, key=lambda c: c[2]["metrics"][metric])
    else:
        ordered = ckpts[::-1]
    for _, uri, meta in ordered:  # the preferred checkpoint, unless its model.pt is damaged: then the next one
        model_uri = storage.parse_uri(uri).join(MODEL_FILE).uri()
        want = (meta.get("files") or {}).get(MODEL_FILE)
        if want is None or hashlib.sha256(storage.read_bytes(model_uri)).hexdigest() == want:
            return model_uri, meta
        print(f"warning: {model_uri} does not match the SHA-256 in its meta.json (damaged): skipped", file=sys.stderr)
    raise RegistryError(f"every checkpoint of {loc.uri()} is damaged (model.pt does not match its meta.json)")


def register(
    name: str,
    model_bytes: bytes,
    source: str,
    metrics: dict[str, Any],
    dataset: str = "",
    root: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Store a model file under NAME (validated by loading it) and write its entry; re-registering bumps the version."""
    check_name(name)
    root = root or default_root()
    from gansvc.checkpoint import _load_bytes, load_inference_payload  # deferred (torch): start-up time

    model = load_inference_payload(_load_bytes(model_bytes, source), source)  # refuse what will not load
    previous = storage.read_json(_entry_uri(root, name)) if storage.exists(_entry_uri(root, name)) else None
    version = (previous or {}).get("version", 0) + 1
    model_uri = _models_uri(root, name, f"v{version}", MODEL_FILE)
    storage.write_bytes(model_uri, model_bytes)
    entry = {
        "name": name,
        "version": version,
        "family": model.spec.name,
        "task": model.spec.task,
        "checkpoint": model_uri,
        "source": source,
        "dataset": dataset,
        "config": json.loads(model.config.model_dump_json()),
        "data_spec": model.data.to_dict(),
        "metrics": {k: v for k, v in metrics.items() if isinstance(v, int | float)},
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        **(extra or {}),
    }
    storage.write_json(_entry_uri(root, name), entry)
    return entry


def promote(
    source: str, name: str, metric: str | None = None, root: str | None = None, runs_root: str | None = None
) -> dict[str, Any]:
    check_name(name)  # before reading the source
    model_uri, meta = resolve_source(source, metric, runs_root)
    dataset = ""
    config_uri = _run_config_uri(model_uri)
    if config_uri and storage.exists(config_uri):
        dataset = storage.read_json(config_uri).get("data", {}).get("uri", "")
    extra: dict[str, Any] = {"step": meta.get("step")}
    if isinstance(meta.get("protocol"), dict):  # how the metrics were computed (training's best/meta.json, issue 14)
        extra["metric_protocol"] = meta["protocol"]
    return register(name, storage.read_bytes(model_uri), model_uri, meta.get("metrics", {}), dataset, root, extra)


def _run_config_uri(model_uri: str) -> str | None:
    """The run's gansvc-config.json for RUN/checkpoint-X/model.pt or RUN/best/model.pt."""
    loc = storage.parse_uri(model_uri)
    path = loc.key if loc.is_s3 else loc.path
    parts = path.rstrip("/").split("/")
    if len(parts) < 3:
        return None
    run_path = "/".join(parts[:-2])
    return f"s3://{loc.bucket}/{run_path}/{RUN_CONFIG_FILE}" if loc.is_s3 else f"{run_path}/{RUN_CONFIG_FILE}"


def delete(name: str, root: str | None = None) -> None:
    check_name(name)
    root = root or default_root()
    get_entry(name, root)  # a clear error for an unknown name
    storage.delete(_entry_uri(root, name))  # first: the name disappears atomically
    for obj in storage.list_objects(_models_uri(root, name)):
        storage.delete(_models_uri(root, name, *obj.rel.split("/")))


# -------------------------------------------------------------------------------------------------------------- CLI


def _table(entries: list[dict[str, Any]]) -> str:
    rows = [("NAME", "VERSION", "FAMILY", "TASK", "SIZE", "METRICS", "CREATED")]
    for e in entries:
        d = e.get("data_spec", {})
        metrics = " ".join(f"{k}={v:.4g}" for k, v in e.get("metrics", {}).items() if k in ("fid", "kid", "swd", "is"))
        rows.append(
            (
                e["name"],
                str(e["version"]),
                e["family"],
                e["task"],
                f"{d.get('height')}x{d.get('width')}x{d.get('channels')}",
                metrics or "-",
                e["created"],
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m gansvc.registry",
        description="Promoted models: a name -> inference weights + family, config, data "
        "spec, metrics. Serve and the offline CLIs load models by name.",
    )
    root_help = "registry root (default $GANSVC_REGISTRY or $GANSVC_STORAGE/registry)"
    p.add_argument("--registry", default=None, help=root_help)
    common = argparse.ArgumentParser(add_help=False)  # --registry also after the subcommand
    common.add_argument("--registry", default=argparse.SUPPRESS, help=root_help)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="registered models", parents=[common])
    p_show = sub.add_parser("show", help="one entry as JSON", parents=[common])
    p_show.add_argument("name")
    p_pro = sub.add_parser(
        "promote", help="register a run's best (or a given) checkpoint under a name", parents=[common]
    )
    p_pro.add_argument("source", help="run name, run URI or checkpoint URI")
    p_pro.add_argument("--name", required=True)
    p_pro.add_argument(
        "--metric",
        default=None,
        help="pick the checkpoint with the lowest value of this metric (default: the run's best, else its latest)",
    )
    p_pro.add_argument("--runs", default=None, help="where run names are looked up (default $GANSVC_STORAGE/runs)")
    p_del = sub.add_parser("delete", help="remove a model and its stored weights", parents=[common])
    p_del.add_argument("name")
    p_exp = sub.add_parser(
        "export",
        help="write a model's inference graphs as ONNX or TorchScript files + export.json, for use outside Ray",
        parents=[common],
    )
    p_exp.add_argument("name")
    p_exp.add_argument("out", help="output folder (local path or s3:// URI): one file per graph + export.json")
    p_exp.add_argument("--format", required=True, choices=("onnx", "torchscript"))
    p_exp.add_argument("--overwrite", action="store_true", help="replace an export already in OUT")
    words = sys.argv[1:] if argv is None else argv
    _add_import_parser(sub, common, _import_formats() if _subcommand(words) == "import" else None)
    args = p.parse_args(argv)
    root = args.registry or default_root()
    try:
        if args.cmd == "list":
            entries = list_entries(root)
            print(
                _table(entries)
                if entries
                else f"no models in {root} (promote one: python -m gansvc.registry promote RUN --name NAME)"
            )
        elif args.cmd == "show":
            print(json.dumps(get_entry(args.name, root), indent=2))
        elif args.cmd == "promote":
            entry = promote(args.source, args.name, args.metric, root, args.runs)
            print(
                f"promoted {entry['source']} as {entry['name']} v{entry['version']} ({entry['family']}, "
                f"step {entry.get('step')})"
            )
        elif args.cmd == "delete":
            delete(args.name, root)
            print(f"deleted {args.name}")
        elif args.cmd == "export":
            return _run_export(args, root)
        else:
            return _run_import(args, root)
        return 0
    except (RegistryError, CheckpointError, storage.StorageError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def import_checkpoint(
    fmt: str, file: str, name: str, b2a: str | None = None, root: str | None = None
) -> dict[str, Any]:
    """Read an official checkpoint (local path or s3:// URI) of import format `fmt` (a family's declaration, see
    `gansvc.importers`), check it strictly and register it as NAME."""
    check_name(name)  # fail before reading large files
    from gansvc import importers  # deferred (torch, the families): start-up time of the listing commands

    model_bytes, source, info = importers.model_file(fmt, file, b2a)
    return register(name, model_bytes, source, {}, "", root, info)


def _import_formats() -> dict[str, str | None]:
    """Import format name -> help of --b2a for it (None: it takes none), from the families' declarations."""
    from gansvc.families import import_formats  # deferred (torch): only when the parser shows or checks the formats

    return {fmt: importer.b2a for fmt, (_, importer) in import_formats().items()}


def _add_import_parser(sub: Any, common: argparse.ArgumentParser, formats: dict[str, str | None] | None) -> None:
    """The import subcommand; `formats` None when the command line is another subcommand (its help and choices are
    then never shown or checked, and the families are not imported)."""
    names = list(formats or {})
    listed = ", ".join(names) if formats is not None else "formats: import --help"
    p_imp = sub.add_parser("import", help=f"import official checkpoints ({listed})", parents=[common])
    p_imp.add_argument("file")
    p_imp.add_argument("--format", required=True, choices=names if formats is not None else None)
    b2a = "; ".join(f"{fmt}: {text}" for fmt, text in (formats or {}).items() if text)
    p_imp.add_argument("--b2a", default=None, help=b2a)
    p_imp.add_argument("--name", required=True)


COMMANDS = ("list", "show", "promote", "delete", "import", "export")


def _subcommand(argv: list[str]) -> str | None:
    """The subcommand a command line names (its first word that is one, skipping --registry's value), else None."""
    skip = False
    for word in argv:
        if skip:
            skip = False
        elif word == "--registry":
            skip = True
        elif word in COMMANDS:
            return word
    return None


def _run_import(args: argparse.Namespace, root: str) -> int:
    entry = import_checkpoint(args.format, args.file, args.name, b2a=args.b2a, root=root)
    print(f"imported {args.file} as {entry['name']} v{entry['version']} ({entry['family']})")
    for note in entry.get("import_notes", []):
        print(f"note: {note}")
    return 0


def export_model(name: str, fmt: str, out: str, root: str | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Export registered model NAME as ONNX or TorchScript graphs + export.json into folder `out` (gansvc.export);
    returns the manifest. RegistryError when it cannot be done (the message says why and what to do)."""
    check_name(name)
    from gansvc import export  # deferred (torch, the exporters): start-up time of the listing commands

    try:
        export.check_target(fmt, out, overwrite)  # before loading the model
        entry, model = load_model(name, root)
        return export.export(entry, model, fmt, out, overwrite)
    except export.ExportError as err:
        raise RegistryError(str(err)) from None


def _run_export(args: argparse.Namespace, root: str) -> int:
    manifest = export_model(args.name, args.format, args.out, root, overwrite=args.overwrite)
    files = ", ".join(g["file"] for g in manifest["graphs"].values())
    print(
        f"exported {args.name} v{manifest['model']['version']} ({manifest['model']['family']}) to {args.out}: {files}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
