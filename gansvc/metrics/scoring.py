"""The training loop's one call: quality metrics of a generator against cached reference statistics.

`evaluate` streams `n_samples` generated (or translated) images through the feature extractor `batch_size` at a
time: only the running feature statistics, the KID features (all generated ones, up to `kid_max_generated`), the IS
split sums and the SWD patch descriptors of the first images are kept, never all images.

`evaluate_with_protocol` also returns how the numbers were computed (`protocol`): the extractor and its weights'
SHA-256, the resize, the number of real and generated images, the reference split/stream, KID subsets / subset size /
seed, IS splits / shuffle seed. Training records it with the best checkpoint; `gansvc.evaluate` prints it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from gansvc.metrics.distances import IS_SHUFFLE_SEED, KID_SEED, frechet_distance, kernel_inception_distance
from gansvc.metrics.inception import FeatureExtractor, extractor_protocol
from gansvc.metrics.reference import ReferenceStats
from gansvc.metrics.stats import FeatureStats, ISStats
from gansvc.metrics.swd import SWDDescriptors, swd_from_descriptors

Task = Literal["generate", "translate"]


@dataclass(frozen=True)
class MetricInfo:
    name: str
    mode: Literal["min", "max"]  # "min": lower is better (Ray Tune's `mode`)
    description: str


METRICS: dict[str, MetricInfo] = {
    m.name: m
    for m in (
        MetricInfo(
            "fid",
            "min",
            "Frechet Inception Distance (Heusel et al. 2017), pool3 features of the extractor "
            "recorded in the protocol (default: the TF FID Inception, as published numbers)",
        ),
        MetricInfo("kid", "min", "Kernel Inception Distance (Binkowski et al. 2018), unbiased MMD^2, cubic kernel"),
        MetricInfo("kid_std", "min", "std of KID over its random subsets (its uncertainty, not a quality)"),
        MetricInfo("is", "max", "Inception Score (Salimans et al. 2016); only for noise/label -> image families"),
        MetricInfo("is_std", "min", "std of IS over its splits (its uncertainty, not a quality)"),
        MetricInfo(
            "swd",
            "min",
            "Sliced Wasserstein Distance x1e3 on Laplacian-pyramid patches (Karras et al. 2018), "
            "mean over levels; needs no weights, always reported",
        ),
        MetricInfo("miou", "max", "mean IoU of a segmenter on the test split (segment families)"),
        MetricInfo("pixel_acc", "max", "pixel accuracy of a segmenter on the test split"),
    )
}


# Metrics a single family's `evaluate` hook returns are declared by that family (FamilySpec.extra_metrics):
# `gansvc.families.metric_mode` covers both.


def describe_metrics() -> dict[str, MetricInfo]:
    """Every shared metric (`evaluate`, and the segment task's miou / pixel_acc), whether lower is better ("min")
    and what it is."""
    return dict(METRICS)


def metric_mode(name: str) -> Literal["min", "max"]:
    """ "min" when lower is better, "max" when higher is (for Ray Tune and best-checkpoint selection)."""
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; known: {', '.join(METRICS)}")
    return METRICS[name].mode


def _like_reference(images: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """CPU float images with the reference images' channels and size (SWD compares patches pixel for pixel)."""
    x = images.detach().to("cpu", torch.float32)
    c, h, w = shape
    if x.shape[1] != c:
        if x.shape[1] == 1 and c == 3:
            x = x.expand(-1, 3, -1, -1)
        else:
            raise ValueError(f"generated images have {x.shape[1]} channels, the real ones {c}")
    if tuple(x.shape[-2:]) != (h, w):
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=x.shape[-1] > w)
    return x


def evaluation_protocol(
    real: ReferenceStats,
    extractor: FeatureExtractor | None,
    n_samples: int,
    task: Task,
    kid_subsets: int,
    kid_subset_size: int,
    kid_seed: int,
    is_splits: int,
    is_shuffle_seed: int | None,
    n_kid_generated: int | None = None,
) -> dict[str, Any]:
    """How `evaluate` computes its numbers, for recording next to them (see the module doc)."""
    meta = real.meta or {}
    proto: dict[str, Any] = {
        **extractor_protocol(extractor),
        "task": task,
        "n_generated": n_samples,
        "n_real": int(real.n),
        "reference": {k: meta.get(k) for k in ("split", "stream", "size", "crop", "max_samples") if k in meta},
    }
    if real.uri:
        proto["reference"]["cache"] = real.uri
    if extractor is not None:
        n_kid_real = len(real.kid_features) if real.kid_features is not None else 0
        n_kid_gen = n_samples if n_kid_generated is None else min(n_kid_generated, n_samples)
        proto["fid"] = {
            "statistics": "float64 mean and covariance (ddof=1) of all real / generated features",
            "trace_sqrt": "sum sqrt(eigvals(S1 S2)) (torch-fidelity)",
        }
        proto["kid"] = {
            "subsets": kid_subsets,
            "subset_size": min(kid_subset_size, n_kid_real, n_kid_gen),
            "subset_size_asked": kid_subset_size,
            "n_real_features": n_kid_real,
            "n_generated_features": n_kid_gen,
            "kernel": "(x.y/d + 1)^3",
            "estimator": "unbiased MMD^2",
            "seed": kid_seed,
            "sampling": "RandomState(seed).choice without replacement, "
            "generated then real, per subset (torch-fidelity)",
        }
        if task == "generate":
            proto["is"] = {
                "splits": max(1, min(is_splits, n_samples)),
                "shuffle_seed": is_shuffle_seed,
                "bounds": "i*N//splits (torch-fidelity)",
            }
    proto["swd"] = {"images": min(n_samples, len(real.swd_images)), "note": "Karras et al. 2018 x1e3, no weights"}
    return proto


def evaluate(
    sample_fn: Callable[[int], torch.Tensor],
    real: ReferenceStats,
    extractor: FeatureExtractor | None,
    n_samples: int,
    batch_size: int,
    task: Task,
    seed: int = 0,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    is_splits: int = 10,
    swd_nhoods: int = 64,
    kid_seed: int = KID_SEED,
    is_shuffle_seed: int | None = IS_SHUFFLE_SEED,
    kid_max_generated: int | None = None,
) -> dict[str, float]:
    """Quality of `sample_fn`'s images against `real` (see `reference_stats`); `evaluate_with_protocol` without
    the protocol. See there for the arguments."""
    return evaluate_with_protocol(
        sample_fn,
        real,
        extractor,
        n_samples,
        batch_size,
        task,
        seed,
        kid_subsets,
        kid_subset_size,
        is_splits,
        swd_nhoods,
        kid_seed,
        is_shuffle_seed,
        kid_max_generated,
    )[0]


def evaluate_with_protocol(
    sample_fn: Callable[[int], torch.Tensor],
    real: ReferenceStats,
    extractor: FeatureExtractor | None,
    n_samples: int,
    batch_size: int,
    task: Task,
    seed: int = 0,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    is_splits: int = 10,
    swd_nhoods: int = 64,
    kid_seed: int = KID_SEED,
    is_shuffle_seed: int | None = IS_SHUFFLE_SEED,
    kid_max_generated: int | None = None,
) -> tuple[dict[str, float], dict[str, Any]]:
    """(results, protocol): quality of `sample_fn`'s images against `real`, and how it was computed.

    `sample_fn(n)` returns n images (n, C, H, W) in [-1, 1] (clamped) on any device: generated from noise / labels
    (task "generate") or translations of source images (task "translate", `real` then describes the target domain).
    Returns {"fid", "kid", "kid_std", "is", "is_std", "swd"} for "generate" with an extractor, the same without
    "is"/"is_std" for "translate", and {"swd"} alone without an extractor. SWD uses the first
    min(n_samples, len(real.swd_images)) images (patch positions from `seed`). `extractor` must be the one `real` was
    computed with. KID keeps the first `kid_max_generated` (default all) generated features; its subsets and the IS
    splits follow torch-fidelity (`kid_seed`, `is_shuffle_seed`; see gansvc.metrics.distances).
    """
    if task not in ("generate", "translate"):
        raise ValueError(f"task must be 'generate' or 'translate', got {task!r}")
    if n_samples < 2 or batch_size < 1:
        raise ValueError(f"evaluate needs n_samples >= 2 and batch_size >= 1, got {n_samples}, {batch_size}")
    if extractor is not None and real.extractor_id != extractor.id:
        raise ValueError(
            f"reference statistics {real.uri or ''} were computed with feature extractor "
            f"{real.extractor_id!r}, not {extractor.id!r}: compute them with this extractor"
        )
    _, c, h, w = real.swd_images.shape
    shape = (int(c), int(h), int(w))
    swd_n = min(n_samples, len(real.swd_images))
    fake_desc = SWDDescriptors(swd_nhoods, seed=seed)
    feats: FeatureStats | None = None
    kid_keep = n_samples if kid_max_generated is None else kid_max_generated
    scores = ISStats(n_samples, is_splits, is_shuffle_seed) if extractor is not None and task == "generate" else None
    done = 0
    with torch.inference_mode():
        while done < n_samples:
            want = min(batch_size, n_samples - done)
            images = sample_fn(want)
            if images.ndim != 4 or len(images) != want:
                raise ValueError(f"sample_fn({want}) returned shape {tuple(images.shape)}: expected ({want}, C, H, W)")
            images = images.float().clamp(-1, 1)
            if extractor is not None:
                f, logits = extractor.extract(images, batch_size)
                if feats is None:
                    feats = FeatureStats(f.shape[1], keep=kid_keep)
                feats.update(f)
                if scores is not None:
                    scores.update(logits, logits=True)
            if fake_desc.n_images < swd_n:
                fake_desc.update(_like_reference(images[: swd_n - fake_desc.n_images], shape))
            done += want
            del images
    results: dict[str, float] = {}
    if extractor is not None and feats is not None:
        real_mu, real_sigma, real_kid = real.features()  # there: real was computed with `extractor` (checked above)
        results["fid"] = frechet_distance(feats.mean, feats.cov, real_mu, real_sigma)
        # generated first, real second: torch-fidelity's input1 / input2, so the same subsets are drawn
        results["kid"], results["kid_std"] = kernel_inception_distance(
            feats.kept, real_kid, kid_subsets, kid_subset_size, kid_seed
        )
        if scores is not None:
            results["is"], results["is_std"] = scores.result()
    real_desc = SWDDescriptors(swd_nhoods, seed=seed)  # same seed: same patch positions as the generated set
    for chunk in real.swd_tensor()[:swd_n].split(max(batch_size, 1)):
        real_desc.update(chunk)
    results["swd"] = float(np.mean(swd_from_descriptors(real_desc.finalize(), fake_desc.finalize(), seed=seed)))
    protocol = evaluation_protocol(
        real, extractor, n_samples, task, kid_subsets, kid_subset_size, kid_seed, is_splits, is_shuffle_seed, kid_keep
    )
    return results, protocol
