"""Where gansvc keeps local files: one rule for every cache (data bytes, downloads), read by data and metrics code."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path


def cache_home(env: Mapping[str, str] | None = None) -> Path:
    """GANSVC_CACHE_DIR, else $XDG_CACHE_HOME/gansvc, else ~/.cache/gansvc (data bytes in `data/`, downloads in
    `downloads/`). Tests point it at a temporary folder so a test run writes nothing under $HOME."""
    e = os.environ if env is None else env
    if e.get("GANSVC_CACHE_DIR"):
        return Path(e["GANSVC_CACHE_DIR"]).expanduser()
    return Path(e.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "gansvc"
