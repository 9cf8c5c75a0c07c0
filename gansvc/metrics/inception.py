"""The feature extractor of FID / KID / IS: torchvision's Inception-v3, loaded without any download.

This is torchvision's `inception_v3` with its ImageNet weights (`Inception_V3_Weights.IMAGENET1K_V1`), NOT the
TensorFlow FID Inception graph of Heusel et al. (pytorch-fid's `pt_inception-2015-12-05` port): weights, resizing
and layers differ slightly, so gansvc's FID / KID / IS compare across gansvc runs only, not with published TF numbers.

Weights are looked for in order: `metrics.inception` (a local path or s3:// URI of the state dict torchvision would
download), then torchvision's own cache file. Nothing is ever downloaded: without weights, `load_inception` returns
None and a message saying where to put them, and the training loop falls back to SWD (which needs no weights).
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gansvc import storage

WEIGHTS_URL = "https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth"  # IMAGENET1K_V1's url
WEIGHTS_FILE = WEIGHTS_URL.rsplit("/", 1)[1]
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # the normalisation torchvision's weights expect (Inception_V3_Weights)
IMAGENET_STD = (0.229, 0.224, 0.225)
INPUT_SIZE = 299


@runtime_checkable
class FeatureExtractor(Protocol):
    """What `reference_stats` and `evaluate` need from a feature network (InceptionFeatures, or a test stand-in).

    `id` names the network and its weights (it is part of the reference-statistics cache key: change it when the
    weights change). `extract` maps images (N, C, H, W) in [-1, 1], any size, 1 or 3 channels, on any device, to
    (pool features (N, D), class logits (N, K)) as float numpy arrays, processing at most `batch_size` at a time.
    """

    id: str

    def extract(self, images: torch.Tensor, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]: ...


def default_cache_path() -> Path:
    """Where torchvision keeps the file it would download: torch.hub.get_dir()/checkpoints/<file name>."""
    return Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILE


class InceptionFeatures(nn.Module):
    """Inception-v3 pool features (2048) and ImageNet logits (1000) of images in [-1, 1] (see the module doc)."""

    def __init__(self, net: nn.Module, id: str) -> None:
        super().__init__()
        self.id = id
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
        x = images.to(self.mean.device, torch.float32).clamp(-1, 1)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] != 3:
            raise ValueError(f"Inception takes 1- or 3-channel images, got {x.shape[1]} channels")
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


def no_weights_reason() -> str:
    return (f"no Inception weights: set metrics.inception to a path or S3 URI of torchvision's inception_v3 weights "
            f"(file name {WEIGHTS_FILE}, from {WEIGHTS_URL}) or put that file in {default_cache_path().parent}; "
            "FID/KID/IS are skipped (SWD is still reported)")


def load_inception(weights: str | None, device: torch.device | str = "cpu") -> tuple[InceptionFeatures | None, str]:
    """(extractor, message): the extractor and where its weights came from, or (None, why there is none).

    `weights`: a local path or s3:// URI of torchvision's inception_v3 state dict; None: torchvision's cache file.
    Never downloads. A configured location that is missing or does not hold those weights gives (None, reason).
    """
    if weights:
        try:
            if not storage.exists(weights):
                return None, f"metrics.inception {weights!r} does not exist. {no_weights_reason()}"
            data = storage.read_bytes(weights)
        except storage.StorageError as err:
            return None, f"metrics.inception {weights!r} cannot be read ({err}). {no_weights_reason()}"
        source = weights
    else:
        path = default_cache_path()
        if not path.is_file():
            return None, no_weights_reason()
        data, source = path.read_bytes(), str(path)
    from torchvision.models import inception_v3

    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        net = inception_v3(weights=None, aux_logits=True, init_weights=False, transform_input=True)
        net.load_state_dict(state)
    except Exception as err:  # noqa: BLE001 - any unpickling / key / shape error means: not these weights
        return None, (f"{source} is not torchvision's inception_v3 state dict ({type(err).__name__}: "
                      f"{str(err)[:300]}). {no_weights_reason()}")
    ident = f"torchvision-inception_v3/{hashlib.sha256(data).hexdigest()[:16]}"
    return InceptionFeatures(net, ident).to(device), f"Inception weights from {source}"
