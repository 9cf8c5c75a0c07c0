"""Quality metrics during training (rank 0): FID/KID/IS with Inception weights, SWD always (gansvc.metrics).

Reference statistics of the real images are cached in storage per dataset (`<dataset>/.gansvc-cache/`), so only the
first run on a dataset pays for them. Without Inception weights the run says so once and reports SWD only.
The feature extractor is `metrics.extractor` (default "fid-inception-2015-12-05", the one of published FID/KID/IS;
"torchvision-inception-v3" on request). After each evaluation `protocol` says how the numbers were computed
(extractor, weights SHA-256, resize, image counts, reference split/stream, KID/IS settings): recorded with them.

A family with an `evaluate` hook (FamilySpec.evaluate) adds its own held-out metrics (declared in
FamilySpec.extra_metrics). A family whose `FamilySpec.selection_metric()` names a metric (task "segment": no image
distribution to compare, its hook's mIoU, higher is better) is judged by that metric alone.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import Any, Literal

import torch

from gansvc.config import ExperimentConfig
from gansvc.data.pipeline import BatchStream, ImageDataset
from gansvc.families import metric_mode
from gansvc.families.base import Batch, FamilyConfig, FamilySpec, GanState
from gansvc.families.sampling import sample_labels, sample_latents
from gansvc.metrics import (
    DEFAULT_EXTRACTOR,
    FeatureExtractor,
    ReferenceStats,
    evaluate_with_protocol,
    extractor_protocol,
    load_inception,
    reference_stats,
)

EVAL_SEED = 4321


def eval_split(dataset: ImageDataset) -> str:
    """The split evaluation reads: "test" when the dataset has any test split (test/, testA/, testB/), else "train"."""
    return "test" if any(n in dataset.manifest.splits for n in ("test", "testA", "testB")) else "train"


def eval_dataset(cfg: ExperimentConfig, dataset: ImageDataset) -> ImageDataset:
    """The held-out images of sample grids and translation metrics (fixed order, no augmentation).

    Raises ValueError (from ImageDataset) when the test split is incomplete, e.g. testA/ without testB/. The driver
    calls this before any worker starts (`python -m gansvc.train` preflight), the workers call it again: one check.
    """
    update = {"split": eval_split(dataset), "flip": False, "crop": "center"}
    return ImageDataset(cfg.data.model_copy(update=update), dataset.manifest)


class QualityMetrics:
    def __init__(
        self, cfg: ExperimentConfig, spec: FamilySpec[Any], dataset: ImageDataset, device: torch.device
    ) -> None:
        self.cfg, self.spec, self.dataset, self.device = cfg, spec, dataset, device
        self.mode: Literal["min", "max"] = "min"  # of `metric`: "max" when higher is better
        self.extractor: FeatureExtractor | None
        self.real: ReferenceStats | None  # None only for task "segment"
        self.task: Literal["generate", "translate", "segment"]
        self.metric: str
        self.protocol: dict[str, Any] = {}  # how the last evaluation was computed (evaluate_with_protocol)
        own = spec.selection_metric()  # e.g. a segment family's mIoU on held-out masks: its outputs are not images
        if own is not None:
            self.extractor, self.real, self.task, self.metric, self.mode = None, None, "segment", own, metric_mode(own)
            return
        # getattr: metrics.extractor is new in MetricsSection (issue 14); older configs mean the default
        name = getattr(cfg.metrics, "extractor", None) or DEFAULT_EXTRACTOR
        self.extractor, message = load_inception(cfg.metrics.inception, device, name)
        print(f"[gansvc] metrics: {message}", flush=True)
        self.protocol = {**extractor_protocol(self.extractor), "extractor_asked": name}
        self.task = "generate" if spec.task == "generate" else "translate"
        key = "image" if self.task == "generate" else "B"
        self.real = reference_stats(cfg.data, self.extractor, cfg.metrics.reference_samples, key, quiet=True)
        wanted = cfg.metrics.metric
        if wanted == "auto":
            wanted = "kid" if self.extractor is not None else "swd"
        elif wanted in ("fid", "kid") and self.extractor is None:
            print(
                f"[gansvc] metrics: {wanted} needs Inception weights; the best checkpoint is chosen by swd", flush=True
            )
            wanted = "swd"
        self.metric = wanted

    def _sources(self) -> Generator[torch.Tensor, None, None]:
        """An endless stream of source (A) images for translation metrics, fixed order (no flip, center crop)."""
        ds = eval_dataset(self.cfg, self.dataset)  # the one rule (and check) for the evaluation split
        stream = BatchStream(ds, batch_size=1, seed=EVAL_SEED)
        try:
            while True:
                yield next(stream)["A"]
        finally:
            stream.close()

    def _family_metrics(self, state: GanState, fam_cfg: FamilyConfig) -> dict[str, float]:
        """The family's own held-out metrics (FamilySpec.evaluate) on up to metrics.samples items of the test split
        (the train split when there is none, or when only it has masks), fixed order, no augmentation."""
        m = self.dataset.manifest
        names = ("test",) if m.layout == "single" else ("testA", "testB")
        split = "test" if all(n in m.splits for n in names) else "train"
        if m.masked_splits() and not any(n in m.masked_splits() for n in names):
            split = "train"
        ds = ImageDataset(self.cfg.data.model_copy(update={"split": split, "flip": False, "crop": "center"}), m)
        n = min(len(ds), self.cfg.metrics.samples)
        bs = min(16, n)
        stream = BatchStream(ds, batch_size=bs, seed=EVAL_SEED)
        nets = state.inference_nets()
        modes = {k: net.training for k, net in nets.items()}
        for net in nets.values():
            net.eval()

        def batches() -> Iterator[Batch]:
            for _ in range(n // bs):
                yield {k: v.to(self.device) for k, v in next(stream).items()}

        try:
            evaluate = self.spec.evaluate
            assert evaluate is not None  # the caller checks it
            with torch.no_grad():
                return evaluate(state, batches(), fam_cfg)
        finally:
            stream.close()
            for k, net in nets.items():
                net.train(modes[k])

    def evaluate(self, state: GanState, fam_cfg: FamilyConfig) -> dict[str, float]:
        extra = self._family_metrics(state, fam_cfg) if self.spec.evaluate is not None else {}
        task, real = self.task, self.real
        if task == "segment" or real is None:  # real is None exactly for task "segment"
            return extra
        nets = state.inference_nets()
        modes = {k: n.training for k, n in nets.items()}
        for n in nets.values():
            n.eval()
        drawn = [0]
        sources = self._sources() if task == "translate" else None
        generate, translate = self.spec.generate, self.spec.translate

        def sample(n: int) -> torch.Tensor:
            seed = EVAL_SEED + drawn[0]
            drawn[0] += n
            if task == "generate":
                assert generate is not None  # a "generate" family has it
                z = sample_latents(fam_cfg, n, seed, self.device)
                labels = sample_labels(self.dataset.spec, n, seed, self.device) if self.spec.conditional else None
                return generate(nets, z, labels, fam_cfg)
            assert sources is not None and translate is not None  # task "translate"
            a = torch.cat([next(sources) for _ in range(n)]).to(self.device)
            return translate(nets, a, "a2b", fam_cfg)["image"]

        try:
            results, protocol = evaluate_with_protocol(
                sample, real, self.extractor, self.cfg.metrics.samples, batch_size=64, task=task
            )
            self.protocol = {
                **protocol,
                "extractor_asked": self.protocol.get("extractor_asked"),
                "eval_seed": EVAL_SEED,
            }
            return extra | results
        finally:
            if sources is not None:
                sources.close()
            for k, n in nets.items():
                n.train(modes[k])
