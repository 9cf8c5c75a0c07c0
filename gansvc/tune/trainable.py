"""The Tune function trainable: one trial = one gansvc training run (PBT: one run per perturbation segment).

Ray Train V2 cannot be a Tune trainable itself (see RAY_NOTES.md): each trial runs a TorchTrainer (built by
gansvc.train.run, as the train CLI's) whose reports reach Tune through `TuneReportCallback`. This module runs inside
Tune's trial processes; it imports Ray and torch at module level.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
from typing import Any

from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback

from gansvc import storage
from gansvc.config import ExperimentConfig, build_config, set_path
from gansvc.train.failures import fit_stopping_on_deterministic_errors
from gansvc.train.run import diverged_error, make_trainer, run_uri, write_run_config
from gansvc.tune.spec import META_KEY

POINTER_FILE = "gansvc.json"  # in a PBT trial's Tune checkpoint: the step reached and the gansvc checkpoint URI


def trial_config(base: dict[str, Any], sampled: dict[str, Any], trial_id: str, metric: str) -> ExperimentConfig:
    """The experiment config of one trial: the sweep's base with the trial's sampled values, named by the trial."""
    raw = copy.deepcopy(base)
    for key, value in sampled.items():
        set_path(raw, key, value)
    set_path(raw, "run.name", trial_id)
    if metric in ("fid", "kid", "swd"):
        set_path(raw, "metrics.metric", metric)
    return build_config(raw)


def fit_run(cfg: ExperimentConfig, init_from: str | None = None, forward_reports: bool = True) -> Any:
    """Train one run of a trial; its divergence or failure is raised (Tune marks the trial failed)."""
    write_run_config(cfg)
    trainer = make_trainer(cfg, init_from=init_from, callbacks=[TuneReportCallback()] if forward_reports else [])
    # config, data and code errors repeat on every restart: stop the trial at once instead of retrying them
    result = fit_stopping_on_deterministic_errors(trainer)
    diverged = diverged_error(run_uri(cfg))
    if diverged is not None:
        raise RuntimeError(diverged)
    if result.error is not None:
        raise RuntimeError(f"training failed: {result.error}")
    return result


def trial_fn(config: dict[str, Any]) -> None:
    """The Tune function trainable: one gansvc training run (PBT: one segment per perturbation interval)."""
    meta = config[META_KEY]
    sampled = {k: v for k, v in config.items() if k != META_KEY}
    cfg = trial_config(meta["base"], sampled, tune.get_context().get_trial_id(), meta["metric"])
    if meta["scheduler"] != "pbt":
        fit_run(cfg)
        return
    _pbt_segments(cfg, meta["interval"])


def _pbt_segments(cfg: ExperimentConfig, interval: int) -> None:
    """PBT: the trial in segments of `interval` steps, each a run continuing the previous checkpoint (or, after an
    exploit, the donor trial's); a Tune checkpoint records where the weights are, so an exploit can start from them."""
    trial_id, total = cfg.run.name, cfg.loop.max_steps or 0
    start, init_from = _pbt_resume_point()
    segment = 0
    while start < total:
        end = min(total, start + interval)
        seg_cfg = cfg.model_copy(
            update={
                "run": cfg.run.model_copy(update={"name": f"{trial_id}-from{start:08d}-s{segment}"}),
                "loop": cfg.loop.model_copy(update={"max_steps": end, "checkpoint_every": end}),
            }
        )
        result = fit_run(seg_cfg, init_from, forward_reports=False)  # Tune sees one result (+ checkpoint) a segment
        init_from = storage.parse_uri(seg_cfg.run.storage_root()).join(seg_cfg.run.name, f"checkpoint-{end:08d}").uri()
        segment += 1
        start = end
        metrics = {k: v for k, v in (result.metrics or {}).items() if isinstance(v, int | float)}
        _report_segment(metrics, end, init_from)


def _pbt_resume_point() -> tuple[int, str | None]:
    """(step, gansvc checkpoint URI) of the Tune checkpoint this trial (re)starts from; (0, None) for a new one."""
    ckpt = tune.get_checkpoint()
    if ckpt is None:
        return 0, None
    with ckpt.as_directory() as d, open(os.path.join(d, POINTER_FILE)) as f:
        pointer = json.load(f)
    return pointer["step"], pointer["checkpoint"]


def _report_segment(metrics: dict[str, Any], step: int, checkpoint: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, POINTER_FILE), "w") as f:
            json.dump({"step": step, "checkpoint": checkpoint}, f)
        tune.report(
            {**metrics, "step": step, "checkpoint_path": checkpoint}, checkpoint=tune.Checkpoint.from_directory(d)
        )
