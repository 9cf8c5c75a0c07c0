"""Image quality metrics for GAN training: FID, KID, IS (with torchvision's Inception-v3) and SWD (no weights).

How the training loop (rank 0) uses it:

    extractor, message = load_inception(cfg.metrics.inception, device)   # None + reason when there are no weights
    real = reference_stats(data_cfg, extractor, max_samples=10_000, stream_key="image")  # "B" for translation
    ...every eval_every steps:
    results = evaluate(sample_fn, real, extractor, n_samples=5_000, batch_size=64, task="generate")
    # {"fid", "kid", "kid_std", "is", "is_std", "swd"}; no "is*" for "translate"; only {"swd"} without extractor

`describe_metrics()` / `metric_mode(name)` say which are lower-is-better ("min"). Modules: `distances` (the math),
`stats` (streaming accumulators), `swd`, `inception` (the extractor and its loader), `reference` (cached real
statistics), `evaluate`.
"""

from gansvc.metrics.distances import (frechet_distance, inception_score, kernel_inception_distance,
                                      mmd2_unbiased)
from gansvc.metrics.evaluate import METRICS, MetricInfo, describe_metrics, evaluate, metric_mode
from gansvc.metrics.inception import (WEIGHTS_FILE, FeatureExtractor, InceptionFeatures, default_cache_path,
                                      load_inception)
from gansvc.metrics.reference import ReferenceStats, reference_stats
from gansvc.metrics.stats import FeatureStats, ISStats
from gansvc.metrics.swd import SWDDescriptors, sliced_wasserstein_distance

__all__ = [
    "METRICS", "WEIGHTS_FILE", "FeatureExtractor", "FeatureStats", "ISStats", "InceptionFeatures", "MetricInfo",
    "ReferenceStats", "SWDDescriptors", "default_cache_path", "describe_metrics", "evaluate", "frechet_distance",
    "inception_score", "kernel_inception_distance", "load_inception", "metric_mode", "mmd2_unbiased",
    "reference_stats", "sliced_wasserstein_distance",
]
