"""`python -m gansvc.demo`: the end-to-end story on the embedded stack, in a few minutes on a laptop CPU.

Today: start the stack, write the synthetic datasets to its S3, and run the input pipeline as a Ray job on the
cluster (`ray job submit`), which writes preview grids back to S3; the demo downloads them into `demo-output/`.
Training, promotion and serving join this script as they land.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from gansvc import local, storage


def _step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def _run(cmd: list[str], env: dict[str, str]) -> None:
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env=env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gansvc.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", type=Path, default=None, help="embedded stack state (default ~/.gansvc/local)")
    parser.add_argument("--out", type=Path, default=Path("demo-output"), help="where results land locally")
    parser.add_argument("--count", type=int, default=2000, help="synthetic training images per domain")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    state_dir = (args.state_dir or local.default_state_dir()).expanduser().resolve()

    _step("1. embedded stack: S3 server + Ray head on 127.0.0.1")
    try:
        state = local.up(state_dir)
    except local.StackError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("\n".join(local.status_lines(state)))
    env = {**os.environ, **state.env()}
    os.environ.update(state.env())
    py = sys.executable
    bucket = f"s3://{state.bucket}"

    _step("2. synthetic datasets into S3 (deterministic; a re-run is a no-op)")
    _run([py, "-m", "gansvc.data", "synth", "shapes", f"{bucket}/datasets/shapes", "--count", str(args.count)], env)
    _run([py, "-m", "gansvc.data", "synth", "stripes", f"{bucket}/datasets/stripes", "--count", str(args.count // 2)],
         env)

    _step("3. the training input pipeline as a Ray job on the cluster (reads S3, writes previews to S3)")
    job = (f"python -m gansvc.data preview {bucket}/datasets/shapes {bucket}/demo/shapes-preview.png && "
           f"python -m gansvc.data preview {bucket}/datasets/stripes {bucket}/demo/stripes-preview.png --n 8")
    _run([str(Path(py).parent / "ray"), "job", "submit", "--", "bash", "-c", job], env)

    _step(f"4. results in {args.out}/")
    args.out.mkdir(parents=True, exist_ok=True)
    for name in ("shapes-preview.png", "stripes-preview.png"):
        target = args.out / name
        target.write_bytes(storage.read_bytes(f"{bucket}/demo/{name}"))
        print(f"  {target.resolve()}")
    print(f"\ndone in {time.perf_counter() - t0:.0f}s. The stack keeps running; try:")
    print(f'  eval "$(python -m gansvc.local env{" --state-dir " + str(state_dir) if args.state_dir else ""})"')
    print(f"  python -m gansvc.data info {bucket}/datasets/shapes")
    print(f"  ray job submit -- python -m gansvc.data preview {bucket}/datasets/stripes {bucket}/demo/mine.png")
    print(f"  Ray dashboard: {state.dashboard_url}      stop everything: python -m gansvc.local down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
