"""Where gansvc keeps files: one rule for every local cache (data bytes, downloads), read by data and metrics code,
and the names of the files in a run folder, read by every layer that opens one (train, tune, registry, CLIs)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

# The files of a run folder (RUN = the run storage, then the run name; see gansvc.train.run). They are named here, in
# the base layer, because the registry (below train/ in the layer order) reads them too.
RUN_CONFIG_FILE = "gansvc-config.json"  # the resolved experiment config and its `history` (one segment per start)
DIVERGED_FILE = "diverged.json"  # written when the loss went non-finite: the error a resume or a sweep reports
STARTS_FILE = "starts.json"  # one record per worker-group start: where each attempt began (fresh or resumed)
HISTORY_FILE = "history.json"  # the logged and evaluated metrics, one entry per report
SAMPLES_DIR = "samples"  # sample grids (step-XXXXXXXX.png) and curves.png


def cache_home(env: Mapping[str, str] | None = None) -> Path:
    """GANSVC_CACHE_DIR, else $XDG_CACHE_HOME/gansvc, else ~/.cache/gansvc (data bytes in `data/`, downloads in
    `downloads/`). Tests point it at a temporary folder so a test run writes nothing under $HOME."""
    e = os.environ if env is None else env
    if e.get("GANSVC_CACHE_DIR"):
        return Path(e["GANSVC_CACHE_DIR"]).expanduser()
    return Path(e.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "gansvc"
