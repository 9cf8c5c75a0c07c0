"""Run every benchmark, one after the other (never in parallel: they would share the cores and skew each other).

    python bench/run_all.py --quick          # minutes on a 2-core CPU machine
    python bench/run_all.py                  # the full sizes (CPU: about an hour; most of it the 256 px steps)
    python bench/run_all.py --only train,data --state-dir /tmp/gsv-bench

Starts a private embedded stack (S3 + Ray, ports from --port-base) for the data, Ray and serve benchmarks and
stops it at the end, unless --state-dir names a running one. Each benchmark prints its table and appends its rows to
bench/results/<name>.jsonl; BENCHMARKS.md records what they showed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = {  # name -> (script, needs the stack)
    "train": ("train_bench.py", False),
    "data": ("data_bench.py", True),
    "ray": ("ray_bench.py", True),
    "serve": ("serve_bench.py", True),
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", default=",".join(BENCHES), help=f"comma-separated subset of {', '.join(BENCHES)}")
    p.add_argument("--state-dir", default=None, help="use this running embedded stack instead of a private one")
    p.add_argument("--port-base", type=int, default=23800, help="ports of the private stack")
    args = p.parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    if bad := [n for n in names if n not in BENCHES]:
        print(f"unknown benchmarks {bad}: choose from {', '.join(BENCHES)}", file=sys.stderr)
        return 2
    py = sys.executable
    own = None
    state_dir = args.state_dir
    if state_dir is None and any(BENCHES[n][1] for n in names):
        own = tempfile.mkdtemp(prefix="gansvc-bench-stack-")
        state_dir = own
        up = subprocess.run([py, "-m", "gansvc.local", "--state-dir", own, "up", "--port-base", str(args.port_base)])
        if up.returncode != 0:
            print(
                "could not start the embedded stack (see above); pass --port-base with free ports or --state-dir",
                file=sys.stderr,
            )
            return up.returncode
    failed = []
    try:
        for name in names:
            script, needs_stack = BENCHES[name]
            cmd = [py, str(HERE / script)] + (["--quick"] if args.quick else [])
            if needs_stack:
                cmd += ["--state-dir", str(state_dir)]
            print(f"\n==== {name}: {' '.join(cmd)}", flush=True)
            t0 = time.perf_counter()
            rc = subprocess.run(cmd).returncode
            print(f"==== {name}: exit {rc} after {time.perf_counter() - t0:.0f} s", flush=True)
            if rc != 0:
                failed.append(name)
    finally:
        if own:
            subprocess.run([py, "-m", "gansvc.local", "--state-dir", own, "down"])
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
