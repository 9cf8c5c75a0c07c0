"""Rank 0's evaluation during training: sample grids, quality metrics, loss/metric curves and the best model.

Every `--eval-every` steps it writes to the run's storage
- `samples/step-XXXXXXXX.png`: fixed latents (and labels) for generation, fixed test images with their translations
  (and U-GAT-IT heatmaps) for translation, so grids of one run are comparable over time;
- `samples/curves.png` and `history.json`: every logged loss and metric so far;
- `best/model.pt` + `best/meta.json`: the inference part of the best checkpoint by the run's metric.
"""

from __future__ import annotations

import io
from typing import Any

import torch

from gansvc import storage
from gansvc.checkpoint import inference_payload
from gansvc.config import ExperimentConfig
from gansvc.data.pipeline import BatchStream, ImageDataset
from gansvc.data.spec import mask_key
from gansvc.families.base import FamilyConfig, FamilySpec, GanState
from gansvc.families.sampling import sample_labels, sample_latents
from gansvc.imaging import grid, png_bytes

GRID_SEED = 1234


class Evaluator:
    def __init__(self, cfg: ExperimentConfig, spec: FamilySpec, fam_cfg: FamilyConfig, dataset: ImageDataset,
                 run_uri: str, device: torch.device) -> None:
        self.cfg, self.spec, self.fam_cfg, self.dataset, self.device = cfg, spec, fam_cfg, dataset, device
        self.run = storage.parse_uri(run_uri)
        self.history: list[dict[str, float]] = self._load_history()
        self.best = self._load_best()
        self.fixed = self._fixed_inputs()
        self.quality = _quality_metrics(cfg, spec, dataset, device)

    # ---------------------------------------------------------------------------------------------------- inputs
    def _fixed_inputs(self) -> dict[str, torch.Tensor]:
        n = self.cfg.loop.grid_size
        if self.spec.task == "generate":
            fixed = {"z": sample_latents(self.fam_cfg, n, GRID_SEED, self.device)}
            if self.spec.conditional:
                fixed["labels"] = sample_labels(self.dataset.spec, n, GRID_SEED, self.device)
            return fixed
        split = "test" if self._has_split("test") else "train"
        ds = ImageDataset(self.cfg.data.model_copy(update={"split": split, "flip": False, "crop": "center"}),
                          self.dataset.manifest)
        k = max(1, min(n // 4 or 1, len(ds)))
        stream = BatchStream(ds, batch_size=k, seed=GRID_SEED)
        batch = next(stream)
        stream.close()
        keep = ("A", "B", "image", "mask", "A_mask", "B_mask")  # masks: the truth row of segment grids
        return {key: v.to(self.device) for key, v in batch.items() if key in keep}

    def _has_split(self, name: str) -> bool:
        splits = self.dataset.manifest.splits
        return name in splits or f"{name}A" in splits

    # ------------------------------------------------------------------------------------------------- grids
    @torch.no_grad()
    def sample_grid(self, state: GanState) -> torch.Tensor:
        nets = state.inference_nets()
        modes = {k: n.training for k, n in nets.items()}
        for n in nets.values():
            n.eval()
        try:
            if self.spec.task == "generate":
                return self.spec.generate(nets, self.fixed["z"], self.fixed.get("labels"), self.fam_cfg).float()
            rows = []
            for key, direction in (("A", "a2b"), ("B", "b2a"), ("image", "a2b")):
                if key not in self.fixed:
                    continue
                out = self.spec.translate(nets, self.fixed[key], direction, self.fam_cfg)
                rows += [self.fixed[key], out["image"].float()]
                if "heatmap" in out:  # [0, 1] -> [-1, 1], grey to the image's channels
                    heat = out["heatmap"].float() * 2 - 1
                    rows.append(heat.expand(-1, self.fixed[key].shape[1], -1, -1))
                if self.spec.task == "segment" and mask_key(key) in self.fixed:  # image, prediction, truth
                    from gansvc.metrics.segmentation import colorize

                    rows.append(colorize(self.fixed[mask_key(key)]))
            channels = max(r.shape[1] for r in rows)  # grey images beside coloured masks: expand to RGB
            return torch.cat([r.expand(-1, channels, -1, -1) for r in rows])
        finally:
            for k, n in nets.items():
                n.train(modes[k])

    # ------------------------------------------------------------------------------------------------- state
    def _load_history(self) -> list[dict[str, float]]:
        uri = self.run.join("history.json").uri()
        return storage.read_json(uri) if storage.exists(uri) else []

    def _load_best(self) -> dict[str, Any] | None:
        uri = self.run.join("best", "meta.json").uri()
        return storage.read_json(uri) if storage.exists(uri) else None

    def record(self, metrics: dict[str, Any]) -> None:
        step = metrics.get("step", 0)
        self.history = [h for h in self.history if h.get("step", 0) < step]  # a resumed run rewrites its future
        self.history.append({k: float(v) for k, v in metrics.items() if isinstance(v, int | float)})

    # ---------------------------------------------------------------------------------------------- evaluate
    def evaluate(self, state: GanState, step: int, metrics: dict[str, Any]) -> dict[str, float]:
        images = self.sample_grid(state)
        first = self.fixed.get("A", self.fixed.get("image"))
        nrow = first.shape[0] if first is not None else None
        storage.write_bytes(self.run.join("samples", f"step-{step:08d}.png").uri(),
                            png_bytes(grid(images, nrow=nrow)), "image/png")
        results = self.quality.evaluate(state, self.fam_cfg) if self.quality is not None else {}
        self.record({**metrics, **results})
        storage.write_json(self.run.join("history.json").uri(), self.history)
        storage.write_bytes(self.run.join("samples", "curves.png").uri(), plot_curves(self.history), "image/png")
        self._maybe_best(state, step, results)
        return results

    def _maybe_best(self, state: GanState, step: int, results: dict[str, float]) -> None:
        name = self.quality.metric if self.quality is not None else None
        if name is None or name not in results:
            return
        value = results[name]
        higher_is_better = getattr(self.quality, "mode", "min") == "max"  # e.g. segmentation mIoU
        if self.best is not None and self.best.get("metric") == name and (
                self.best["value"] >= value if higher_is_better else self.best["value"] <= value):
            return
        payload = inference_payload(self.spec, self.fam_cfg, self.dataset.spec, state,
                                    {"step": step, "metrics": results})
        buf = io.BytesIO()
        torch.save(payload, buf)
        storage.write_bytes(self.run.join("best", "model.pt").uri(), buf.getvalue())
        self.best = {"step": step, "metric": name, "value": value, "metrics": results}
        storage.write_json(self.run.join("best", "meta.json").uri(), self.best)  # written last: commits the best


def _quality_metrics(cfg: ExperimentConfig, spec: FamilySpec, dataset: ImageDataset, device: torch.device) -> Any:
    """FID/KID/IS/SWD against cached reference statistics (gansvc.metrics), or None where unavailable."""
    try:
        from gansvc.train.quality import QualityMetrics
    except ImportError:
        return None
    return QualityMetrics(cfg, spec, dataset, device)


def plot_curves(history: list[dict[str, float]]) -> bytes:
    """Loss terms in one panel, quality metrics in another, against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h.get("step", i) for i, h in enumerate(history)]
    keys = sorted({k for h in history for k in h})
    losses = [k for k in keys if k.startswith("loss")]
    quality = [k for k in keys if k in ("fid", "kid", "is", "swd", "miou", "fcn_miou")]
    fig, axes = plt.subplots(1, 2 if quality else 1, figsize=(11 if quality else 6, 3.6), squeeze=False)
    for k in losses:
        axes[0][0].plot(steps, [h.get(k, float("nan")) for h in history], label=k)
    axes[0][0].set(xlabel="step", title="losses")
    if losses:
        axes[0][0].legend(fontsize=7)
    if quality:
        for k in quality:
            pts = [(s, h[k]) for s, h in zip(steps, history, strict=True) if k in h]
            axes[0][1].plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=k)
        axes[0][1].set(xlabel="step", title="quality (lower is better, except is and miou)")
        axes[0][1].legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()
