"""The feature extractors of FID / KID / IS, by name; each name is part of every cache key and recorded result.

- "fid-inception-2015-12-05" (default): the TensorFlow FID Inception graph of Heusel et al. 2017 ported to PyTorch,
  as pytorch-fid and torch-fidelity use it: torch-fidelity's own `FeatureExtractorInceptionV3` network (its TF1-exact
  bilinear resize to 299 x 299 of uint8 images, (x - 128) / 128 scaling, 2048-d pool3 features for FID/KID, the
  bias-free 1008-way logits "logits_unbiased" for IS) with torch-fidelity's converted weights file
  (`URL_INCEPTION_V3`). The numbers compare with published FID/KID/IS computed by TTUR / pytorch-fid /
  torch-fidelity. Images in [-1, 1] are first quantised exactly as an 8-bit PNG stores them
  (round((x + 1) * 127.5)), so a folder of saved samples and the same samples in memory give the same numbers.
- "torchvision-inception-v3": torchvision's ImageNet Inception-v3 (`Inception_V3_Weights.IMAGENET1K_V1`), the old
  gansvc extractor. Its numbers compare across gansvc runs with this extractor only, never with papers.

Weights of the default extractor, in order: `metrics.inception` (a local path or s3:// URI), else the torch hub cache
file torch.hub.get_dir()/checkpoints/<file>, fetched there on first use (resumed, locked, SHA-256 verified:
gansvc.data.download.fetch) when the machine is online. The torchvision extractor never downloads (as before).
Without weights `load_inception` returns None and a message saying what to download and where to put it; callers then
report SWD only. State dicts are always read with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gansvc import storage
from gansvc.metrics.names import DEFAULT_EXTRACTOR, EXTRACTORS, FID_EXTRACTOR, TORCHVISION_EXTRACTOR

if TYPE_CHECKING:
    from torchvision.models import Inception3

# ------------------------------------------------------------------------------------------------------- names
# FID_EXTRACTOR, TORCHVISION_EXTRACTOR, DEFAULT_EXTRACTOR, EXTRACTORS: gansvc.metrics.names (torch-free)

# torch-fidelity 0.4.0 torch_fidelity/feature_extractor_inceptionv3.py URL_INCEPTION_V3 (copied, not imported: the
# constant must not change under us with a library upgrade; the pinned hash below belongs to this exact file).
FID_WEIGHTS_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
)
FID_WEIGHTS_FILE = FID_WEIGHTS_URL.rsplit("/", 1)[1]
# SHA-256 of that file. torch-fidelity does not publish the full digest; its file name carries the first 8 hex
# digits ("6726825d", checked by torch.hub's check_hash), and this full digest is the one recorded for the same file
# in public project notes (it starts with that prefix, asserted below). Verified on every fetch and every cache hit.
FID_WEIGHTS_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
assert FID_WEIGHTS_SHA256.startswith(FID_WEIGHTS_FILE.rsplit("-", 1)[1].split(".")[0])
FID_RESIZE = "uint8 (round((x+1)*127.5)), TF1-compatible bilinear resize to 299x299 (torch-fidelity)"

WEIGHTS_URL = "https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth"  # torchvision IMAGENET1K_V1
WEIGHTS_FILE = WEIGHTS_URL.rsplit("/", 1)[1]  # the torchvision extractor's file (old name, kept for callers)
TORCHVISION_RESIZE = "float [0,1], bilinear (antialiased when shrinking) resize to 299x299, ImageNet normalisation"
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # the normalisation torchvision's weights expect (Inception_V3_Weights)
IMAGENET_STD = (0.229, 0.224, 0.225)
INPUT_SIZE = 299

_FETCH_RETRIES = 1  # offline machines fail DNS at once; do not make every training start wait through backoffs
_failed_fetch: dict[str, tuple[float, str]] = {}  # url -> (when, why): one failed attempt per process and minute
_FAILED_FETCH_TTL = 60.0


@runtime_checkable
class FeatureExtractor(Protocol):
    """What `reference_stats` and `evaluate` need from a feature network (InceptionFeatures, or a test stand-in).

    `id` names the network and its weights (it is part of the reference-statistics cache key: change it when the
    weights change). `extract` maps images (N, C, H, W) in [-1, 1], any size, 1 or 3 channels, on any device, to
    (pool features (N, D), class logits (N, K)) as float numpy arrays, processing at most `batch_size` at a time.
    Optional: `protocol` (a dict describing the extractor: name, weights_sha256, resize), recorded with results.
    """

    id: str

    def extract(self, images: torch.Tensor, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]: ...


def extractor_protocol(extractor: Any) -> dict[str, Any]:
    """The extractor's description for recorded results (`protocol` attribute; else just its id)."""
    if extractor is None:
        return {"extractor": None}
    return dict(getattr(extractor, "protocol", None) or {"extractor": getattr(extractor, "id", "?")})


def _rgb(images: torch.Tensor) -> torch.Tensor:
    if images.shape[1] == 1:
        return images.expand(-1, 3, -1, -1)
    if images.shape[1] != 3:
        raise ValueError(f"Inception takes 1- or 3-channel images, got {images.shape[1]} channels")
    return images


def to_png_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] floats -> the uint8 values an 8-bit PNG of them holds (gansvc.imaging / reference.to_uint8 rule)."""
    return ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


# ------------------------------------------------------------------------------------------ FID Inception (TF)
class FidInceptionFeatures(nn.Module):
    """torch-fidelity's FeatureExtractorInceptionV3 behind the FeatureExtractor protocol (see the module doc)."""

    def __init__(self, net: nn.Module, sha256: str) -> None:
        super().__init__()
        self.net = net
        self.sha256 = sha256
        self.id = f"{FID_EXTRACTOR}/{sha256[:16]}"
        self.protocol = {
            "extractor": FID_EXTRACTOR,
            "weights_sha256": sha256,
            "weights_are_published": sha256 == FID_WEIGHTS_SHA256,
            "resize": FID_RESIZE,
            "features": "pool3 2048 (FID, KID)",
            "is_logits": "logits_unbiased 1008 (IS)",
        }

    def train(self, mode: bool = True) -> FidInceptionFeatures:
        return super().train(False)  # batch norm always uses the converted running statistics

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def extract_uint8(self, images: torch.Tensor, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
        """(pool3 features (N, 2048), logits_unbiased (N, 1008)) of uint8 RGB images (N, 3, H, W), float64."""
        feats, logits = [], []
        with torch.inference_mode():
            for chunk in images.split(batch_size):
                f, lg = self.net(chunk.to(self.device))
                feats.append(f.double().cpu().numpy())
                logits.append(lg.double().cpu().numpy())
        return np.concatenate(feats), np.concatenate(logits)

    def extract(self, images: torch.Tensor, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
        return self.extract_uint8(to_png_uint8(_rgb(images)), batch_size)


def _fidelity_net(state: dict[str, torch.Tensor]) -> nn.Module:
    """torch-fidelity's network with `state` loaded. Its constructor reads its weights with torch.load(...,
    weights_only=False); it is handed only our own re-serialisation of an already safely loaded tensor dict."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in state.items()}, buf)
    buf.seek(0)
    net: nn.Module = FeatureExtractorInceptionV3(  # torch-fidelity is untyped; this class is an nn.Module
        "inception-v3-compat", ["2048", "logits_unbiased"], feature_extractor_weights_path=buf
    )
    return net


# --------------------------------------------------------------------------------------- torchvision (ImageNet)
class InceptionFeatures(nn.Module):
    """torchvision Inception-v3 pool features (2048) and ImageNet logits (1000) of images in [-1, 1]."""

    mean: torch.Tensor  # buffers (registered in __init__)
    std: torch.Tensor

    def __init__(self, net: Inception3, id: str, sha256: str = "") -> None:
        super().__init__()
        self.id = id
        self.protocol = {
            "extractor": TORCHVISION_EXTRACTOR,
            "weights_sha256": sha256,
            "weights_are_published": False,
            "resize": TORCHVISION_RESIZE,
            "features": "avgpool 2048 (FID, KID)",
            "is_logits": "fc 1000 (IS)",
        }
        self.fc = net.fc
        net.fc = nn.Identity()  # net(x) now returns the 2048-d average-pool features (dropout is off in eval)
        net.AuxLogits, net.aux_logits = None, False
        self.net = net
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.eval()

    def train(self, mode: bool = True) -> InceptionFeatures:
        return super().train(False)  # batch norm must always use the pretrained running statistics

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = _rgb(images.to(self.mean.device, torch.float32).clamp(-1, 1))
        x = (x + 1) / 2  # [-1, 1] -> [0, 1], then torchvision's preprocessing: resize to 299, ImageNet normalise
        if tuple(x.shape[-2:]) != (INPUT_SIZE, INPUT_SIZE):
            down = max(x.shape[-2:]) > INPUT_SIZE
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False, antialias=down)
        x = (x - self.mean) / self.std
        pool = self.net(x)  # transform_input=True, as torchvision builds it for these weights
        return pool, self.fc(pool)

    def extract(self, images: torch.Tensor, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
        feats, logits = [], []
        with torch.inference_mode():
            for chunk in images.split(batch_size):
                f, lg = self(chunk)
                feats.append(f.double().cpu().numpy())
                logits.append(lg.double().cpu().numpy())
        return np.concatenate(feats), np.concatenate(logits)


# ------------------------------------------------------------------------------------------------------ loading
def default_cache_path(extractor: str = TORCHVISION_EXTRACTOR) -> Path:
    """The torch hub cache file of `extractor`'s weights: torch.hub.get_dir()/checkpoints/<file name>.
    (The default argument is the torchvision file, the function's meaning before extractors had names.)"""
    name = FID_WEIGHTS_FILE if extractor == FID_EXTRACTOR else WEIGHTS_FILE
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def no_weights_reason(extractor: str = TORCHVISION_EXTRACTOR) -> str:
    if extractor == FID_EXTRACTOR:
        return (
            f"no FID Inception weights ({FID_EXTRACTOR}): download {FID_WEIGHTS_URL} (SHA-256 "
            f"{FID_WEIGHTS_SHA256}) and put it in {default_cache_path(FID_EXTRACTOR).parent}, or set "
            "metrics.inception (--inception for gansvc.evaluate) to a local path or s3:// URI of that file; "
            "FID/KID/IS are skipped (SWD is still reported)"
        )
    return (
        f"no Inception weights for {TORCHVISION_EXTRACTOR}: set metrics.inception to a path or S3 URI of "
        f"torchvision's inception_v3 weights (file name {WEIGHTS_FILE}, from {WEIGHTS_URL}) or put that file in "
        f"{default_cache_path(TORCHVISION_EXTRACTOR).parent}; FID/KID/IS are skipped (SWD is still reported)"
    )


def _read_configured(weights: str, extractor: str) -> tuple[bytes | None, str]:
    try:
        if not storage.exists(weights):
            return None, f"metrics.inception {weights!r} does not exist. {no_weights_reason(extractor)}"
        return storage.read_bytes(weights), weights
    except storage.StorageError as err:
        return None, f"metrics.inception {weights!r} cannot be read ({err}). {no_weights_reason(extractor)}"


def _fid_cache_bytes(url: str | None, sha256: str | None, download: bool) -> tuple[bytes | None, str]:
    """The default extractor's weights from the torch hub cache, fetched there first when allowed and missing."""
    from gansvc.data.download import DownloadError, fetch, sha256_file

    dest = default_cache_path(FID_EXTRACTOR)
    want = sha256 or FID_WEIGHTS_SHA256
    url = url or FID_WEIGHTS_URL
    if dest.is_file() and sha256_file(dest) == want:
        return dest.read_bytes(), str(dest)
    failed = _failed_fetch.get(url)
    failed_recently = failed[1] if failed and time.monotonic() - failed[0] < _FAILED_FETCH_TTL else None
    if not download or failed_recently is not None:
        why = (
            ("downloads are off" if not download else f"fetching it failed a moment ago: {failed_recently}")
            if not dest.is_file()
            else f"{dest} does not have SHA-256 {want} (damaged or another file)"
        )
        return None, f"{why}. {no_weights_reason(FID_EXTRACTOR)}"
    try:
        fetch(url, dest, sha256=want, retries=_FETCH_RETRIES, progress=os.isatty(2), timeout=30.0)
    except (DownloadError, OSError) as err:
        _failed_fetch[url] = (time.monotonic(), str(err)[:300])
        return None, f"could not fetch the weights ({str(err)[:400]}). {no_weights_reason(FID_EXTRACTOR)}"
    return dest.read_bytes(), f"{dest} (fetched from {url.split('?')[0]}, SHA-256 verified)"


def _state_dict(data: bytes) -> dict[str, torch.Tensor]:
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)  # never unpickles code
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise TypeError(f"a state dict was expected, the file holds a {type(state).__name__}")
    return state


def load_inception(
    weights: str | None,
    device: torch.device | str = "cpu",
    extractor: str = DEFAULT_EXTRACTOR,
    *,
    url: str | None = None,
    sha256: str | None = None,
    download: bool = True,
) -> tuple[FidInceptionFeatures | InceptionFeatures | None, str]:
    """(extractor, message): the extractor and where its weights came from, or (None, why there is none).

    `weights`: a local path or s3:// URI of the extractor's state dict (used as given: a file other than the published
    one is allowed and recorded by its SHA-256); None: the torch hub cache, where the default extractor's file is
    fetched (from `url`, verified against `sha256`: both default to the pinned published file; tests override them)
    when `download`. The torchvision extractor never downloads.
    """
    if extractor not in EXTRACTORS:
        raise ValueError(f"unknown feature extractor {extractor!r}; choose one of {', '.join(EXTRACTORS)}")
    if weights:
        data, source = _read_configured(weights, extractor)
    elif extractor == FID_EXTRACTOR:
        data, source = _fid_cache_bytes(url, sha256, download)
    else:
        path = default_cache_path(TORCHVISION_EXTRACTOR)
        data, source = (path.read_bytes(), str(path)) if path.is_file() else (None, no_weights_reason(extractor))
    if data is None:
        return None, source
    digest = hashlib.sha256(data).hexdigest()
    try:
        net = _build(extractor, _state_dict(data), digest)
    except Exception as err:  # noqa: BLE001 - any unpickling / key / shape error means: not these weights
        what = "torch-fidelity's FID Inception" if extractor == FID_EXTRACTOR else "torchvision's inception_v3"
        return None, (
            f"{source} is not {what} state dict ({type(err).__name__}: {str(err)[:300]}). "
            f"{no_weights_reason(extractor)}"
        )
    note = ""
    if extractor == FID_EXTRACTOR and digest != FID_WEIGHTS_SHA256:
        note = (
            f"; WARNING: SHA-256 {digest[:16]}... is not the published {FID_WEIGHTS_FILE}: numbers compare only "
            "with results computed with this same file, not with papers"
        )
    return net.to(device), f"{extractor} weights from {source} (SHA-256 {digest[:16]}...){note}"


def _build(extractor: str, state: dict[str, torch.Tensor], digest: str) -> FidInceptionFeatures | InceptionFeatures:
    if extractor == FID_EXTRACTOR:
        return FidInceptionFeatures(_fidelity_net(state), digest)
    from torchvision.models import inception_v3

    net = inception_v3(weights=None, aux_logits=True, init_weights=False, transform_input=True)
    net.load_state_dict(state)
    return InceptionFeatures(net, f"torchvision-inception_v3/{digest[:16]}", digest)
