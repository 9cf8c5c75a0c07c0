"""What a user sees from the CLIs (issue 16.10): hints that work as printed, readable errors and summaries."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gansvc import local
from gansvc.demo import activate_hint


def test_activate_hint_when_the_shell_would_not_find_this_python(tmp_path: Path) -> None:
    bindir = Path(sys.executable).parent
    hint = activate_hint({"PATH": str(tmp_path)})  # a shell whose PATH lacks this environment
    assert hint is not None
    # the printed line, run by a shell, puts this environment's python first: it imports gansvc's dependencies
    out = subprocess.run(
        ["bash", "-c", f"{hint} && python -c 'import sys, PIL, ray; print(sys.prefix)'"],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()).resolve() == Path(sys.prefix).resolve()
    # already active: no hint
    assert activate_hint({"PATH": f"{bindir}:/usr/bin"}) is None


def test_run_summary_names_the_checkpoint_by_its_uri() -> None:
    """Ray reports a checkpoint by its pyarrow path (`bucket/prefix/...`); the summary gives the s3:// URI a user
    can pass to `registry promote` (issue 16.10)."""
    from gansvc import storage
    from gansvc.train.run import checkpoint_uri

    run = storage.parse_uri("s3://gansvc/runs/shapes-1")
    assert (
        checkpoint_uri(run, "gansvc/runs/shapes-1/checkpoint-00000400")
        == "s3://gansvc/runs/shapes-1/checkpoint-00000400"
    )
    local = storage.parse_uri("/tmp/runs/shapes-1")
    assert checkpoint_uri(local, "/tmp/runs/shapes-1/checkpoint-00000400") == "/tmp/runs/shapes-1/checkpoint-00000400"


def test_local_status_names_the_serve_url(ray_stack: local.StackState) -> None:
    """`local status` gives the Serve HTTP URL (issue 16.10): `running` once something answers on its port."""
    import socket

    from gansvc import local

    url = f"http://127.0.0.1:{ray_stack.ports.serve_http}"
    line = next(x for x in local.status_lines(ray_stack) if x.startswith("Serve HTTP"))
    assert url in line
    with socket.socket() as probe:
        up = probe.connect_ex(("127.0.0.1", ray_stack.ports.serve_http)) == 0
    assert ("running" in line) == up and ("python -m gansvc.serve --models" in line) == (not up)


def test_image_errors_name_the_problem_not_a_python_object() -> None:
    import io

    from PIL import Image

    from gansvc.data.imagefile import describe_image_error

    for data in (b"plain text, not an image", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40):
        try:
            Image.open(io.BytesIO(data)).load()
        except Exception as err:  # noqa: BLE001 - whatever PIL raises
            text = describe_image_error(err)
            assert "BytesIO" not in text and " at 0x" not in text and text, text
        else:
            raise AssertionError("PIL read a broken file")


def test_train_env_defaults_leave_the_users_values(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray Train's 2 s default poll would cap reports at one per 2 s (runs use 0.1 s) and its preemption watcher is
    off, unless the user set either variable."""
    from gansvc.train.run import TRAIN_POLL_S, train_env_defaults

    monkeypatch.delenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", raising=False)
    monkeypatch.setenv("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "1")
    train_env_defaults()
    assert os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] == TRAIN_POLL_S == "0.1"
    assert os.environ["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] == "1"
    monkeypatch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "1.5")
    monkeypatch.delenv("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER")
    train_env_defaults()
    assert os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] == "1.5"
    assert os.environ["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] == "0"


# what `python -m MODULE --help` and a wrong flag import: the modules of torch and Ray (seconds to load) must not be
# among them (issue 16.10: every CLI call took 3-6 s)
_IMPORTED = (
    "import runpy, sys\nsys.argv = [sys.argv[1], *sys.argv[2:]]\ntry:\n"
    "    runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)\nexcept SystemExit:\n    pass\n"
    "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'ray', 'torchvision', 'numpy'}))"
)


@pytest.mark.parametrize(
    "argv",
    [
        ["gansvc.train", "--help"],
        ["gansvc.train", "dcgan", "--max-steps", "x"],
        ["gansvc.tune", "--help"],
        ["gansvc.tune", "a.yaml", "--num-samples", "x"],
    ],
)
def test_help_and_argument_errors_load_neither_torch_nor_ray(argv: list[str]) -> None:
    out = subprocess.run([sys.executable, "-c", _IMPORTED, *argv], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout[-2000:]
    assert "usage: python -m " in out.stdout + out.stderr
