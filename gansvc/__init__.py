"""gansvc: train GAN families on Ray, sweep them with Ray Tune, serve them with Ray Serve."""

from __future__ import annotations

__version__ = "0.1.0"
