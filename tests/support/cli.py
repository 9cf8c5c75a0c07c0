"""Running a `python -m gansvc...` command in-process, as `python -m` would, up to its argument parsing only."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import runpy
import shlex
import sys
import warnings
from collections.abc import Iterator
from typing import Any
from unittest import mock


class _Parsed(Exception):
    pass


@contextlib.contextmanager
def as_main(module: str, argv: list[str]) -> Iterator[None]:
    assert importlib.util.find_spec(module) is not None, f"python -m {module}: no such module"
    with mock.patch.object(sys, "argv", [module, *argv]), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # runpy: "found in sys.modules" for already-imported modules
        yield


def parse_only(module: str, argv: list[str]) -> argparse.Namespace:
    """Run `python -m module argv` in-process up to and including its argparse parsing, then stop."""
    real = argparse.ArgumentParser.parse_args

    def parse_then_stop(self: argparse.ArgumentParser, args: Any = None, namespace: Any = None) -> Any:
        raise _Parsed(real(self, args, namespace))

    out = io.StringIO()
    with (
        as_main(module, argv),
        mock.patch.object(argparse.ArgumentParser, "parse_args", parse_then_stop),
        contextlib.redirect_stderr(out),
    ):
        try:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        except _Parsed as parsed:
            return parsed.args[0]
        except SystemExit as err:
            raise AssertionError(
                f"python -m {module} {shlex.join(argv)}: arguments rejected ({err.code}):\n{out.getvalue()}"
            ) from None
    raise AssertionError(f"python -m {module} parsed no arguments")
