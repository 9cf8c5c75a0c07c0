"""Image quality metrics for GAN training: FID, KID, IS (default extractor: the TF FID Inception of the literature,
through torch-fidelity; "torchvision-inception-v3" on request) and SWD (no weights).

How the training loop (rank 0) uses it:

    extractor, message = load_inception(cfg.metrics.inception, device, extractor)  # None + reason without weights
    real = reference_stats(data_cfg, extractor, max_samples=10_000, stream_key="image")  # "B" for translation
    ...every eval_every steps:
    results = evaluate(sample_fn, real, extractor, n_samples=5_000, batch_size=64, task="generate")
    # {"fid", "kid", "kid_std", "is", "is_std", "swd"}; no "is*" for "translate"; only {"swd"} without extractor
    results, protocol = evaluate_with_protocol(...)  # the same, and how it was computed (recorded with results)

`describe_metrics()` / `metric_mode(name)` say which are lower-is-better ("min"). Modules: `distances` (the math),
`stats` (streaming accumulators), `swd`, `inception` (the extractor and its loader), `reference` (cached real
statistics), `scoring` (`evaluate`: every metric of a model, with its protocol), `names` (the extractors' names,
torch-free).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Names are loaded on first use (PEP 562): `from gansvc.metrics import EXTRACTORS` must not load torch, so that the
# CLIs' argument parsing stays fast; the computing modules load when a name of theirs is first asked for.
_MODULES: dict[str, tuple[str, ...]] = {
    "gansvc.metrics.distances": (
        "IS_SHUFFLE_SEED",
        "KID_SEED",
        "frechet_distance",
        "inception_score",
        "kernel_inception_distance",
        "mmd2_unbiased",
    ),
    "gansvc.metrics.scoring": (
        "METRICS",
        "MetricInfo",
        "describe_metrics",
        "evaluate",
        "evaluate_with_protocol",
        "evaluation_protocol",
        "metric_mode",
    ),
    "gansvc.metrics.inception": (
        "FID_WEIGHTS_FILE",
        "FID_WEIGHTS_SHA256",
        "FID_WEIGHTS_URL",
        "FeatureExtractor",
        "FidInceptionFeatures",
        "InceptionFeatures",
        "WEIGHTS_FILE",
        "default_cache_path",
        "extractor_protocol",
        "load_inception",
    ),
    "gansvc.metrics.names": (
        "DEFAULT_EXTRACTOR",
        "EXTRACTORS",
        "FID_EXTRACTOR",
        "TORCHVISION_EXTRACTOR",
    ),
    "gansvc.metrics.reference": (
        "ReferenceStats",
        "reference_stats",
        "stats_from_batches",
    ),
    "gansvc.metrics.stats": (
        "FeatureStats",
        "ISStats",
    ),
    "gansvc.metrics.swd": (
        "SWDDescriptors",
        "sliced_wasserstein_distance",
    ),
}
_HOME = {name: module for module, names in _MODULES.items() for name in names}

if TYPE_CHECKING:  # the type checker sees the eager imports
    from gansvc.metrics.distances import (
        IS_SHUFFLE_SEED,
        KID_SEED,
        frechet_distance,
        inception_score,
        kernel_inception_distance,
        mmd2_unbiased,
    )
    from gansvc.metrics.inception import (
        FID_WEIGHTS_FILE,
        FID_WEIGHTS_SHA256,
        FID_WEIGHTS_URL,
        WEIGHTS_FILE,
        FeatureExtractor,
        FidInceptionFeatures,
        InceptionFeatures,
        default_cache_path,
        extractor_protocol,
        load_inception,
    )
    from gansvc.metrics.names import DEFAULT_EXTRACTOR, EXTRACTORS, FID_EXTRACTOR, TORCHVISION_EXTRACTOR
    from gansvc.metrics.reference import ReferenceStats, reference_stats, stats_from_batches
    from gansvc.metrics.scoring import (
        METRICS,
        MetricInfo,
        describe_metrics,
        evaluate,
        evaluate_with_protocol,
        evaluation_protocol,
        metric_mode,
    )
    from gansvc.metrics.stats import FeatureStats, ISStats
    from gansvc.metrics.swd import SWDDescriptors, sliced_wasserstein_distance


# no exported name may equal a submodule's name: importing the submodule would bind the package attribute to the module
# (tests/unit/metrics/test_metrics.py checks it)
assert not set(_HOME) & {module.rsplit(".", 1)[1] for module in _MODULES}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'gansvc.metrics' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOME[name]), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


__all__ = [
    "DEFAULT_EXTRACTOR",
    "EXTRACTORS",
    "FID_EXTRACTOR",
    "FID_WEIGHTS_FILE",
    "FID_WEIGHTS_SHA256",
    "FID_WEIGHTS_URL",
    "IS_SHUFFLE_SEED",
    "KID_SEED",
    "METRICS",
    "TORCHVISION_EXTRACTOR",
    "WEIGHTS_FILE",
    "FeatureExtractor",
    "FeatureStats",
    "FidInceptionFeatures",
    "ISStats",
    "InceptionFeatures",
    "MetricInfo",
    "ReferenceStats",
    "SWDDescriptors",
    "default_cache_path",
    "describe_metrics",
    "evaluate",
    "evaluate_with_protocol",
    "evaluation_protocol",
    "extractor_protocol",
    "frechet_distance",
    "inception_score",
    "kernel_inception_distance",
    "load_inception",
    "metric_mode",
    "mmd2_unbiased",
    "reference_stats",
    "sliced_wasserstein_distance",
    "stats_from_batches",
]
