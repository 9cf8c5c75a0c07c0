"""The feature extractors' names (torch-free: the CLIs' argument parsers need them without loading torch)."""

from __future__ import annotations

FID_EXTRACTOR = "fid-inception-2015-12-05"  # the TF FID Inception of the literature (through torch-fidelity)
TORCHVISION_EXTRACTOR = "torchvision-inception-v3"
DEFAULT_EXTRACTOR = FID_EXTRACTOR
EXTRACTORS = (FID_EXTRACTOR, TORCHVISION_EXTRACTOR)
