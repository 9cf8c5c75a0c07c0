"""Rank 0's evaluation during training: sample grids, quality metrics, loss/metric curves and the best model.

Every `--eval-every` steps it writes to the run's storage
- `samples/step-XXXXXXXX.png`: fixed latents (and labels) for generation, fixed test images with their translations
  (and U-GAT-IT heatmaps) for translation, so grids of one run are comparable over time;
- `samples/curves.png` and `history.json`: every logged loss and metric so far;
- `best/`: the inference part of the best evaluation by the run's metric, committed atomically
  (`checkpoint.write_best`: model first, meta.json naming it last);
- `tensorboard/` (loop.tensorboard): every history entry's scalars and each evaluation's sample grid as TensorBoard
  events (gansvc.train.tensorboard), uploaded at each evaluation and checkpoint (`sync_events`) and at the end.

A resumed run (from a checkpoint at step S) continues the history up to S, and its best/ is made consistent with that
history: a best evaluated after S (by the attempt that failed) is rolled back to the best of the history up to S, from
that step's checkpoint (or dropped when that checkpoint is gone: the next evaluation sets a new one).
"""

from __future__ import annotations

import hashlib
import io
from typing import Any

import torch

from gansvc import storage
from gansvc.checkpoint import META_FILE, MODEL_FILE, drop_best, inference_payload, read_best, write_best
from gansvc.config import ExperimentConfig
from gansvc.data.pipeline import BatchStream, ImageDataset
from gansvc.data.spec import mask_key
from gansvc.families.base import Direction, FamilyConfig, FamilySpec, GanState
from gansvc.families.sampling import sample_labels, sample_latents
from gansvc.imaging import grid, png_bytes
from gansvc.nn.segnet import colorize
from gansvc.paths import HISTORY_FILE, SAMPLES_DIR

# eval_dataset / eval_split live with the quality metrics (their user; imports point evaluation -> quality) and are
# re-exported here, where the train driver's preflight imports them
from gansvc.train.quality import QualityMetrics, eval_dataset, eval_split
from gansvc.train.tensorboard import TENSORBOARD_DIR, RunEvents

__all__ = ["QUALITY_KEYS", "Evaluator", "eval_dataset", "eval_split", "is_train_term", "plot_curves", "quality_keys"]

GRID_SEED = 1234
# keys of history entries that are evaluations: the shared ones, and those a family declares (ExtraMetric.quality)
QUALITY_KEYS = ("fid", "kid", "is", "swd", "miou")
# one history.json entry: float values (step, losses, metrics), and on an evaluation "protocol" (a dict: how the
# numbers were computed)
HistoryEntry = dict[str, Any]


def quality_keys(spec: FamilySpec[Any]) -> tuple[str, ...]:
    """QUALITY_KEYS and the evaluation scores `spec` declares (FamilySpec.extra_metrics with quality=True)."""
    return QUALITY_KEYS + tuple(k for k, m in spec.extra_metrics.items() if m.quality)


class Evaluator:
    def __init__(
        self,
        cfg: ExperimentConfig,
        spec: FamilySpec[Any],
        fam_cfg: FamilyConfig,
        dataset: ImageDataset,
        run_uri: str,
        device: torch.device,
        start_step: int = 0,
    ) -> None:
        self.cfg, self.spec, self.fam_cfg, self.dataset, self.device = cfg, spec, fam_cfg, dataset, device
        self.run = storage.parse_uri(run_uri)
        # a resumed run's past ends at its checkpoint: what the failed attempt logged after it is rewritten
        self.history: list[HistoryEntry] = [h for h in self._load_history() if h.get("step", 0) <= start_step]
        self.fixed = self._fixed_inputs()
        self.quality = _quality_metrics(cfg, spec, dataset, device)
        self.best = self._load_best(start_step)
        self.events = self._open_events(start_step)

    # ---------------------------------------------------------------------------------------------------- inputs
    def _fixed_inputs(self) -> dict[str, torch.Tensor]:
        n = self.cfg.loop.grid_size
        if self.spec.task == "generate":
            fixed = {"z": sample_latents(self.fam_cfg, n, GRID_SEED, self.device)}
            if self.spec.conditional:
                fixed["labels"] = sample_labels(self.dataset.spec, n, GRID_SEED, self.device)
            return fixed
        ds = eval_dataset(self.cfg, self.dataset)
        k = max(1, min(n // 4 or 1, len(ds)))
        stream = BatchStream(ds, batch_size=k, seed=GRID_SEED)
        batch = next(stream)
        stream.close()
        keep = ("A", "B", "image", "mask", "A_mask", "B_mask")  # masks: the truth row of segment grids
        return {key: v.to(self.device) for key, v in batch.items() if key in keep}

    # ------------------------------------------------------------------------------------------------- grids
    @torch.no_grad()
    def sample_grid(self, state: GanState) -> torch.Tensor:
        nets = state.inference_nets()
        modes = {k: n.training for k, n in nets.items()}
        for n in nets.values():
            n.eval()
        try:
            if self.spec.task == "generate":
                assert self.spec.generate is not None  # a "generate" family has it
                return self.spec.generate(nets, self.fixed["z"], self.fixed.get("labels"), self.fam_cfg).float()
            translate = self.spec.translate
            assert translate is not None  # a "translate" / "segment" family has it
            rows = []
            inputs: tuple[tuple[str, Direction], ...] = (("A", "a2b"), ("B", "b2a"), ("image", "a2b"))
            for key, direction in inputs:
                if key not in self.fixed:
                    continue
                out = translate(nets, self.fixed[key], direction, self.fam_cfg)
                rows += [self.fixed[key], out["image"].float()]
                if "heatmap" in out:  # [0, 1] -> [-1, 1], grey to the image's channels
                    heat = out["heatmap"].float() * 2 - 1
                    rows.append(heat.expand(-1, self.fixed[key].shape[1], -1, -1))
                if self.spec.task == "segment" and mask_key(key) in self.fixed:  # image, prediction, truth
                    rows.append(colorize(self.fixed[mask_key(key)]))
            channels = max(r.shape[1] for r in rows)  # grey images beside coloured masks: expand to RGB
            return torch.cat([r.expand(-1, channels, -1, -1) for r in rows])
        finally:
            for k, n in nets.items():
                n.train(modes[k])

    # ------------------------------------------------------------------------------------------------- state
    def _load_history(self) -> list[HistoryEntry]:
        uri = self.run.join(HISTORY_FILE).uri()
        return storage.read_json(uri) if storage.exists(uri) else []

    def _load_best(self, start_step: int) -> dict[str, Any] | None:
        committed = read_best(self.run.uri())
        if committed is None:
            return None
        best = committed[0]
        if int(best.get("step", 0)) <= start_step:
            return best
        return self._roll_back_best(best, start_step)

    def _checkpoint_model(self, step: int) -> bytes | None:
        """model.pt of this run's checkpoint at `step` when it exists and matches the hash in its meta.json."""
        ckpt = self.run.join(f"checkpoint-{step:08d}")
        model_uri, meta_uri = ckpt.join(MODEL_FILE).uri(), ckpt.join(META_FILE).uri()
        if not storage.exists(model_uri):
            return None
        data = storage.read_bytes(model_uri)
        want = (storage.read_json(meta_uri).get("files") or {}).get(MODEL_FILE) if storage.exists(meta_uri) else None
        return data if want is None or hashlib.sha256(data).hexdigest() == want else None

    def _roll_back_best(self, best: dict[str, Any], start_step: int) -> dict[str, Any] | None:
        """best/ came from steps after the checkpoint this run resumed from: re-derive it from the history up to S."""
        name = best.get("metric")
        higher_is_better = getattr(self.quality, "mode", "min") == "max"
        scored = [h for h in self.history if name in h]
        where = (
            f"[gansvc] best/ was evaluated at step {best.get('step')}, after the checkpoint resumed from "
            f"(step {start_step})"
        )
        if scored and name is not None:  # (scored is empty when name is None)
            pick = (max if higher_is_better else min)(scored, key=lambda h: h[name])
            step = int(pick["step"])
            model = self._checkpoint_model(step)
            if model is not None:
                results = {k: v for k, v in pick.items() if k in quality_keys(self.spec)}
                meta = write_best(
                    self.run.uri(),
                    model,
                    {
                        "step": step,
                        "metric": name,
                        "value": pick[name],
                        "metrics": results,
                        "protocol": pick.get("protocol"),
                    },
                )
                print(
                    f"{where}: rolled back to the best of the history up to it (step {step}, {name} {pick[name]:.4g})",
                    flush=True,
                )
                return meta
        drop_best(self.run.uri())
        print(f"{where}: removed (no checkpoint of an earlier best is left); the next evaluation sets it", flush=True)
        return None

    def record(self, metrics: dict[str, Any]) -> None:
        step = metrics.get("step", 0)
        self.history = [h for h in self.history if h.get("step", 0) < step]  # a resumed run rewrites its future
        self.history.append({k: float(v) for k, v in metrics.items() if isinstance(v, int | float)})
        if self.events is not None:
            self.events.scalars(int(step), self.history[-1])

    # ------------------------------------------------------------------------------------------- tensorboard
    def _open_events(self, start_step: int) -> RunEvents | None:
        if not self.cfg.loop.tensorboard:
            return None
        try:
            return RunEvents(self.run.uri(), start_step, quality_keys(self.spec))
        except ImportError:
            print(
                "[gansvc] tensorboard is not installed (pip install tensorboard): this run writes no TensorBoard "
                "events (--set loop.tensorboard=false turns them off)",
                flush=True,
            )
            return None

    def sync_events(self) -> None:
        """Upload the TensorBoard events written so far (S3 runs); a storage failure is reported, not fatal (the next
        sync sends them)."""
        if self.events is None:
            return
        try:
            self.events.sync()
        except storage.StorageError as err:
            where = self.run.join(TENSORBOARD_DIR).uri()
            print(f"[gansvc] tensorboard: upload to {where} failed ({err}); retried at the next sync", flush=True)

    def close(self) -> None:
        """The run's end (or failure): the last TensorBoard sync."""
        if self.events is None:
            return
        events, self.events = self.events, None
        try:
            events.close()
        except storage.StorageError as err:
            print(f"[gansvc] tensorboard: the last upload to {events.remote.uri()} failed ({err})", flush=True)

    # ---------------------------------------------------------------------------------------------- evaluate
    def evaluate(self, state: GanState, step: int, metrics: dict[str, Any]) -> dict[str, float]:
        images = self.sample_grid(state)
        first = self.fixed.get("A", self.fixed.get("image"))
        nrow = first.shape[0] if first is not None else None
        picture = grid(images, nrow=nrow)
        png = png_bytes(picture)
        storage.write_bytes(self.run.join(SAMPLES_DIR, f"step-{step:08d}.png").uri(), png, "image/png")
        if self.events is not None:
            self.events.image(step, png, picture.height, picture.width, len(picture.getbands()))
        results = self.quality.evaluate(state, self.fam_cfg) if self.quality is not None else {}
        self.record({**metrics, **results})
        if results and getattr(self.quality, "protocol", None):
            self.history[-1]["protocol"] = self.quality.protocol
        storage.write_json(self.run.join(HISTORY_FILE).uri(), self.history)
        curves = plot_curves(self.history, quality_keys(self.spec))
        storage.write_bytes(self.run.join(SAMPLES_DIR, "curves.png").uri(), curves, "image/png")
        self._maybe_best(state, step, results)
        self.sync_events()
        return results

    def _maybe_best(self, state: GanState, step: int, results: dict[str, float]) -> None:
        name = self.quality.metric if self.quality is not None else None
        if name is None or name not in results:
            return
        value = results[name]
        higher_is_better = getattr(self.quality, "mode", "min") == "max"  # e.g. segmentation mIoU
        if (
            self.best is not None
            and self.best.get("metric") == name
            and (self.best["value"] >= value if higher_is_better else self.best["value"] <= value)
        ):
            return
        payload = inference_payload(
            self.spec, self.fam_cfg, self.dataset.spec, state, {"step": step, "metrics": results}
        )
        buf = io.BytesIO()
        torch.save(payload, buf)
        meta = {"step": step, "metric": name, "value": value, "metrics": results}
        if getattr(self.quality, "protocol", None):  # how the numbers were computed (extractor, weights, counts)
            meta["protocol"] = self.quality.protocol
        self.best = write_best(self.run.uri(), buf.getvalue(), meta)


def _quality_metrics(
    cfg: ExperimentConfig, spec: FamilySpec[Any], dataset: ImageDataset, device: torch.device
) -> QualityMetrics:
    """FID/KID/IS/SWD against cached reference statistics (gansvc.metrics), or the family's own selection metric."""
    return QualityMetrics(cfg, spec, dataset, device)


# history keys the loop adds around a family's train_step outputs (gansvc.train.loop); every other key is one of
# those outputs: a loss term under the family's own name (loss_g, G_A, cycle_A, D_B...) or a D score (d_real)
LOOP_KEYS = (
    "step",
    "epoch",
    "images_per_s",
    "step_time_s",
    "data_wait_frac",
    "replicas_identical",
    "diverged",
    "protocol",
    "lr",
)
LOOP_PREFIXES = ("lr/", "grad_norm/")


def is_train_term(key: str, quality: tuple[str, ...] = QUALITY_KEYS) -> bool:
    return key not in LOOP_KEYS and key not in quality and not key.startswith(LOOP_PREFIXES)


def plot_curves(history: list[HistoryEntry], quality_names: tuple[str, ...] = QUALITY_KEYS) -> bytes:
    """Loss terms in one panel, quality metrics (`quality_names`: see quality_keys) in another, against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h.get("step", i) for i, h in enumerate(history)]
    keys = sorted({k for h in history for k in h})
    losses = [k for k in keys if is_train_term(k, quality_names)]
    quality = [k for k in keys if k in quality_names]
    fig, axes = plt.subplots(1, 2 if quality else 1, figsize=(11 if quality else 6, 3.6), squeeze=False)
    for k in losses:
        axes[0][0].plot(steps, [h.get(k, float("nan")) for h in history], label=k)
    axes[0][0].set(xlabel="step", title="train_step terms (losses, D scores)")
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
