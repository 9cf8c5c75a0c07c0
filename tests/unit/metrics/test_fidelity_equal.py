"""gansvc's streaming FID / KID / IS equal torch-fidelity's `calculate_metrics` on the same two PNG folders with the
same extractor weights file (issue 14 part 3).

Real weights cannot be downloaded here, so the test writes a randomly initialised state dict of torch-fidelity's
FID Inception network (He-initialised convolutions, identity batch norm, so the 2048-d features and the logits have
an O(1) scale and the metrics are far from 0). Both sides read that one file: torch-fidelity through
`feature_extractor_weights_path`, gansvc through `load_inception(path)` (the `metrics.inception` path).
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gansvc.metrics import FID_EXTRACTOR, evaluate_with_protocol, load_inception, stats_from_batches

N_IMAGES = 24  # per folder: the CPU Inception at 299 px costs ~0.3 s an image on 2 cores, and both sides run it
SIZE = 24
KID_SUBSETS, KID_SUBSET_SIZE, IS_SPLITS = 20, 16, 3


def random_fid_inception_state(seed: int, spread_logits: bool = True) -> dict[str, torch.Tensor]:
    """A random state dict with the keys and shapes of torch-fidelity's FeatureExtractorInceptionV3 (`spread_logits`:
    fc weights that make the Inception Score informative; off: plain random fc, cheaper)."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class Skeleton(FeatureExtractorInceptionV3):
        def load_state_dict(self, *args: object, **kwargs: object) -> None:  # type: ignore[override]
            return None  # keep the constructor's own (untrained) parameters: only the layout is wanted here

    empty = io.BytesIO()
    torch.save({}, empty)
    empty.seek(0)
    state = Skeleton("skeleton", ["2048"], feature_extractor_weights_path=empty).state_dict()
    g = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        v = value.clone()
        if key.endswith("conv.weight"):  # He et al. 2015: keeps the activation scale through conv + ReLU stacks
            fan_in = v[0].numel()
            v = torch.randn(v.shape, generator=g) * math.sqrt(2.0 / fan_in)
        elif key.endswith("bn.weight") or key.endswith("bn.running_var"):
            v = torch.ones_like(v)
        elif key.endswith("bn.bias") or key.endswith("bn.running_mean"):
            v = torch.zeros_like(v)
        elif key == "fc.bias":  # IS uses the bias-free logits: a large bias must not change anything
            v = torch.randn(v.shape, generator=g) * 10.0
        out[key] = v
    if spread_logits:
        out["fc.weight"] = _spread_logits(out, g)
    return out


def _spread_logits(state: dict[str, torch.Tensor], g: torch.Generator) -> torch.Tensor:
    """fc weights N(0, 10^2) orthogonal to the features' common direction (random networks give every image nearly
    the same pool3 vector): the logits then vary from image to image and the Inception Score is well above 1."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    net = FeatureExtractorInceptionV3("probe", ["2048"], feature_extractor_weights_path=buf)
    with torch.no_grad():
        (feats,) = net((torch.rand(4, 3, SIZE, SIZE, generator=g) * 255).to(torch.uint8))
    common = feats.double().mean(0)
    common = common / common.norm()
    w = torch.randn(state["fc.weight"].shape, generator=g, dtype=torch.float64) * 10.0
    return (w - (w @ common)[:, None] * common[None, :]).float()


def _write_folder(folder: Path, seed: int, detail: int) -> None:
    """N_IMAGES RGB PNGs: random colour fields of detail x detail cells, bilinearly upsampled (detail = texture)."""
    folder.mkdir(parents=True)
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(N_IMAGES, 3, detail, detail, generator=g)
    images = torch.nn.functional.interpolate(low, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    for i, im in enumerate((images * 255).round().clamp(0, 255).to(torch.uint8)):
        Image.fromarray(im.permute(1, 2, 0).numpy()).save(folder / f"{i:04d}.png")


def _read_folder(folder: Path) -> torch.Tensor:
    """The PNGs in sorted name order (torch-fidelity's order), as gansvc images in [-1, 1]."""
    arrays = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(folder.glob("*.png"))]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


@pytest.mark.timeout(240)
def test_streaming_metrics_equal_torch_fidelity(tmp_path: Path) -> None:
    import torch_fidelity

    weights = tmp_path / "random-fid-inception.pth"
    torch.save(random_fid_inception_state(0), weights)
    real_dir, fake_dir = tmp_path / "real", tmp_path / "fake"
    _write_folder(real_dir, seed=1, detail=3)
    _write_folder(fake_dir, seed=2, detail=8)

    ref = torch_fidelity.calculate_metrics(
        input1=str(fake_dir),
        input2=str(real_dir),
        cuda=False,
        isc=True,
        fid=True,
        kid=True,
        verbose=False,
        cache=False,
        save_cpu_ram=True,
        batch_size=12,
        feature_extractor_weights_path=str(weights),
        kid_subsets=KID_SUBSETS,
        kid_subset_size=KID_SUBSET_SIZE,
        isc_splits=IS_SPLITS,
    )

    extractor, message = load_inception(str(weights), extractor=FID_EXTRACTOR)
    assert extractor is not None, message
    assert "not the published" in message  # a random file is accepted from metrics.inception, and flagged
    real = stats_from_batches(_read_folder(real_dir).split(12), extractor, batch_size=12)
    fake = _read_folder(fake_dir)
    cursor = [0]

    def sample(n: int) -> torch.Tensor:  # the "generator" replays the fake folder in order, 12 at a time
        out = fake[cursor[0] : cursor[0] + n]
        cursor[0] += n
        return out

    ours, protocol = evaluate_with_protocol(
        sample,
        real,
        extractor,
        n_samples=N_IMAGES,
        batch_size=12,
        task="generate",
        kid_subsets=KID_SUBSETS,
        kid_subset_size=KID_SUBSET_SIZE,
        is_splits=IS_SPLITS,
    )
    pairs = {
        "fid": "frechet_inception_distance",
        "kid": "kernel_inception_distance_mean",
        "kid_std": "kernel_inception_distance_std",
        "is": "inception_score_mean",
        "is_std": "inception_score_std",
    }
    for mine, theirs in pairs.items():
        assert ours[mine] == pytest.approx(ref[theirs], rel=1e-3), (mine, ours[mine], ref[theirs])
    # the numbers are not degenerate: a test of 0 == 0 proves nothing
    assert ours["fid"] > 1e-2 and ours["kid"] > 1e-4 and ours["kid_std"] > 0 and ours["is"] > 1.05
    assert ours["is_std"] > 0
    assert protocol["extractor"] == FID_EXTRACTOR and protocol["n_generated"] == N_IMAGES
    assert protocol["n_real"] == N_IMAGES and protocol["kid"]["subset_size"] == KID_SUBSET_SIZE
    assert protocol["is"]["splits"] == IS_SPLITS and protocol["weights_sha256"] == extractor.sha256
