"""The command-line tools answer `--help` and argument errors without importing torch or Ray (seconds of start-up
each): those are imported by the functions that compute, not at module level. Checked from Python's own record of
what a process imported (`python -X importtime`), in a fresh interpreter per command."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

HEAVY = ("torch", "ray")
# The CLIs whose --help must stay light (each is `python -m <module>`)
CLIS = (
    "gansvc.serve",
    "gansvc.generate",
    "gansvc.translate",
    "gansvc.evaluate",
    "gansvc.data",
    "gansvc.local",
    "gansvc.demo",
    "gansvc.registry",
)


def imported(stderr: str) -> set[str]:
    """The modules a `python -X importtime` run imported (its stderr lines `import time: self | cumulative | name`)."""
    return {
        line.rsplit("|", 1)[1].strip()
        for line in stderr.splitlines()
        if line.startswith("import time:") and line.count("|") == 2
    }


def heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in HEAVY)


def run_cli(module: str, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", module, *args], capture_output=True, text=True, timeout=120
    )
    return out, time.perf_counter() - t0


def test_importtime_record_is_read() -> None:
    """The check itself: a process that does import torch is seen to."""
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import torch"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0 and "torch" in heavy(imported(out.stderr)), out.stderr[-2000:]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("module", CLIS)
def test_help_and_argument_errors_import_no_torch_or_ray(module: str) -> None:
    out, seconds = run_cli(module, "--help")
    assert out.returncode == 0 and "usage:" in out.stdout, out.stdout[-2000:] + out.stderr[-2000:]
    assert not heavy(imported(out.stderr)), f"python -m {module} --help imported {heavy(imported(out.stderr))[:8]}"
    print(f"python -m {module} --help: {seconds:.2f} s")
    bad, _ = run_cli(module, "--no-such-option")
    assert bad.returncode == 2 and "error:" in bad.stderr, bad.stderr[-2000:]
    assert not heavy(imported(bad.stderr)), f"python -m {module} --no-such-option imported torch or ray"
