"""Packaging: the supported Python range, the compatible ranges of pyproject.toml and the exact pins of
requirements.lock agree with each other, with ./dev, and with the environment the tests run in. No network, seconds."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
DEV = REPO / "dev"


def _lock() -> dict[str, Requirement]:
    reqs: dict[str, Requirement] = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        line = line.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            req = Requirement(line)
            reqs[canonicalize_name(req.name)] = req
    return reqs


def _direct() -> list[Requirement]:
    extras = [d for group in PROJECT["optional-dependencies"].values() for d in group]
    return [Requirement(d) for d in [*PROJECT["dependencies"], *extras]]


def _dev_supported() -> list[str]:
    m = re.search(r"^SUPPORTED=\(([^)]*)\)", DEV.read_text(), flags=re.M)
    assert m, "./dev defines SUPPORTED=(3.X ...)"
    return m.group(1).split()


def test_dev_supports_exactly_requires_python() -> None:
    spec = SpecifierSet(PROJECT["requires-python"])
    in_range = [f"3.{n}" for n in range(8, 20) if f"3.{n}" in spec]
    assert _dev_supported() == in_range, f"./dev SUPPORTED {_dev_supported()} vs requires-python {spec}"
    assert "3.11" in in_range  # the reference version: CI's full suite and the benchmarks' figures


def test_pyproject_has_ranges_and_the_lock_pins_each_inside_them() -> None:
    lock = _lock()
    assert all(len(r.specifier) == 1 and next(iter(r.specifier)).operator == "==" for r in lock.values()), (
        "requirements.lock pins every package exactly"
    )
    for req in _direct():
        assert not any(s.operator in ("==", "===") for s in req.specifier), (
            f"{req}: a range in pyproject.toml, the exact version in requirements.lock"
        )
        name = canonicalize_name(req.name)
        assert name in lock, f"{req.name} is not in requirements.lock: run ./dev lock"
        pinned = next(iter(lock[name].specifier)).version
        assert req.specifier.contains(pinned, prereleases=True), (
            f"requirements.lock pins {req.name}=={pinned}, outside pyproject.toml's {req.specifier}: run ./dev lock"
        )


def test_the_environment_is_the_lock() -> None:
    """In a venv that ./dev made, every locked package that applies here is installed at exactly its pin."""
    if not (Path(sys.prefix) / ".gansvc-installed").exists():
        pytest.skip("not a ./dev virtual environment (no .gansvc-installed stamp)")
    env = default_environment()
    wrong = []
    for name, req in _lock().items():
        if req.marker is not None and not req.marker.evaluate({**env, "extra": ""}):
            continue
        pinned = next(iter(req.specifier)).version
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            have = "missing"
        if have != pinned and not have.startswith(pinned + "+"):  # torch 2.14.1+cu130 is the 2.14.1 wheel
            wrong.append(f"{name}: {have} (lock: {pinned})")
    assert not wrong, "run ./dev setup: " + ", ".join(wrong)


def _dev(tmp_path: Path, *args: str, python: str) -> subprocess.CompletedProcess[str]:
    # a copy of ./dev in an empty folder: it refuses before creating anything, and never touches the repo's venvs
    script = tmp_path / "dev"
    script.write_text(DEV.read_text())
    script.chmod(0o755)
    env = {**os.environ, "PYTHON": python}
    return subprocess.run([str(script), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)


def test_dev_refuses_unsupported_pythons_clearly(tmp_path: Path) -> None:
    supported = " ".join(_dev_supported())
    out = _dev(tmp_path, "--python", "3.10", "setup", python=sys.executable)
    assert out.returncode != 0 and f"Python 3.10 is not supported; gansvc supports {supported}" in out.stderr
    other = next(v for v in _dev_supported() if v != f"{sys.version_info[0]}.{sys.version_info[1]}")
    out = _dev(tmp_path, "--python", other, "setup", python=sys.executable)
    assert out.returncode != 0 and f"not the {other} asked for" in out.stderr, out.stderr
    out = _dev(tmp_path, "setup", python=str(tmp_path / "no-such-python"))
    assert out.returncode != 0 and "does not run" in out.stderr, out.stderr
    assert not any(p.name.startswith(".venv") for p in tmp_path.iterdir()), "nothing created"


def test_ci_fast_subset_names_existing_tests() -> None:
    text = (REPO / ".ci" / "run").read_text()
    m = re.search(r"^FAST_TESTS=\(([^)]*)\)", text, flags=re.M)
    assert m, ".ci/run defines FAST_TESTS=(...)"
    paths = m.group(1).split()
    assert paths, "the fast subset is not empty"
    missing = [p for p in paths if not (REPO / p.split("::")[0]).is_file()]
    assert not missing, f".ci/run FAST_TESTS names tests that do not exist (moved?): {missing}"
