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
statistics), `evaluate`.
"""

from gansvc.metrics.distances import (IS_SHUFFLE_SEED, KID_SEED, frechet_distance, inception_score,
                                      kernel_inception_distance, mmd2_unbiased)
from gansvc.metrics.evaluate import (METRICS, MetricInfo, describe_metrics, evaluate, evaluate_with_protocol,
                                     evaluation_protocol, metric_mode)
from gansvc.metrics.inception import (DEFAULT_EXTRACTOR, EXTRACTORS, FID_EXTRACTOR, FID_WEIGHTS_FILE,
                                      FID_WEIGHTS_SHA256, FID_WEIGHTS_URL, TORCHVISION_EXTRACTOR, WEIGHTS_FILE,
                                      FeatureExtractor, FidInceptionFeatures, InceptionFeatures, default_cache_path,
                                      extractor_protocol, load_inception)
from gansvc.metrics.reference import ReferenceStats, reference_stats, stats_from_batches
from gansvc.metrics.stats import FeatureStats, ISStats
from gansvc.metrics.swd import SWDDescriptors, sliced_wasserstein_distance

__all__ = [
    "DEFAULT_EXTRACTOR", "EXTRACTORS", "FID_EXTRACTOR", "FID_WEIGHTS_FILE", "FID_WEIGHTS_SHA256", "FID_WEIGHTS_URL",
    "IS_SHUFFLE_SEED", "KID_SEED", "METRICS", "TORCHVISION_EXTRACTOR", "WEIGHTS_FILE", "FeatureExtractor",
    "FeatureStats", "FidInceptionFeatures", "ISStats", "InceptionFeatures", "MetricInfo", "ReferenceStats",
    "SWDDescriptors", "default_cache_path", "describe_metrics", "evaluate", "evaluate_with_protocol",
    "evaluation_protocol", "extractor_protocol", "frechet_distance", "inception_score", "kernel_inception_distance",
    "load_inception", "metric_mode", "mmd2_unbiased", "reference_stats", "sliced_wasserstein_distance",
    "stats_from_batches",
]
