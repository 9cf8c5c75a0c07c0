"""The `gansvc` console script: `gansvc COMMAND ...` runs `python -m gansvc.COMMAND ...`."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys

# command -> (module, one-line help); a command is listed only once its module exists
COMMANDS: dict[str, tuple[str, str]] = {
    "local": ("gansvc.local", "the embedded stack: S3 server + Ray head on 127.0.0.1 (up/down/status/env)"),
    "data": ("gansvc.data.__main__", "datasets: put a folder/zip/URL in S3, write synthetic ones, show manifests"),
    "train": ("gansvc.train.__main__", "train a GAN family on Ray Train"),
    "tune": ("gansvc.tune.__main__", "sweep hyperparameters with Ray Tune"),
    "registry": ("gansvc.registry", "promoted models: list/show/promote/import/delete"),
    "generate": ("gansvc.generate", "offline generation from a promoted model"),
    "translate": ("gansvc.translate", "offline image-to-image translation"),
    "serve": ("gansvc.serve.__main__", "serve promoted models over HTTP with Ray Serve"),
    "demo": ("gansvc.demo", "the end-to-end demo on the embedded stack"),
}


def _exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def available() -> dict[str, tuple[str, str]]:
    return {k: v for k, v in COMMANDS.items() if _exists(v[0])}


def usage() -> str:
    rows = "\n".join(f"  {name:<10} {text}" for name, (_, text) in available().items())
    return (
        "usage: gansvc COMMAND [ARGS...]   (same as python -m gansvc.COMMAND)\n\ncommands:\n"
        + rows
        + "\n\n`gansvc COMMAND --help` explains each."
    )


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(sys.argv[1:] if argv is None else argv)
    except BrokenPipeError:  # `gansvc ... | head`: the reader went away, not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _main(args: list[str]) -> int:
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if args else 2
    commands = available()
    if args[0] not in commands:
        print(f"gansvc: unknown command {args[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(commands[args[0]][0])
    return int(module.main(args[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
