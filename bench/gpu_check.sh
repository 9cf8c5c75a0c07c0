#!/usr/bin/env bash
# The GPU check (issue 15 part 3): bash bench/gpu_check.sh [--cpu-dry-run] [--out DIR]
# Runs bench/gpu_check.py with the project's .venv when there is one. The Python side gives every stage its own
# time budget and keeps going after a failed stage; this outer `timeout` is the last guard on the 8-minute limit
# (SIGINT first, so the stages' processes are stopped and the summary of what ran is written; SIGKILL 10 s later).
# The CPU dry run gets a longer guard: on a shared 2-core machine under load it can take minutes of wall time.
set -u
cd "$(dirname "$0")/.."
PY=.venv/bin/python
[ -x "$PY" ] || PY=python3
LIMIT=475
for arg in "$@"; do
  [ "$arg" = "--cpu-dry-run" ] && LIMIT=900
done
exec timeout --signal=INT --kill-after=10 "$LIMIT" "$PY" bench/gpu_check.py "$@"
