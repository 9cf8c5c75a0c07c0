"""`python -m gansvc.tune tune/SWEEP.yaml`: hyperparameter sweeps on Ray Tune, every trial a gansvc training run.

A sweep spec (see tune/README.md) names the family, the dataset, a base experiment config, a search space over any
config field (`model.lr_g`, `loop.batch_size`, ...), the metric and mode, the scheduler (ASHA by default, `none`,
or PBT), samples, concurrency and resources per trial. Every value of the space is validated against the family's
config before anything starts.

Each trial is a Tune function trainable that runs a `TorchTrainer` (Ray Train V2 cannot be a Tune trainable itself,
see RAY_NOTES.md) whose reports reach Tune through `TuneReportCallback`. A sweep lives in its folder SWEEP =
`--storage`/NAME (default `$GANSVC_STORAGE/sweeps/NAME`): trial runs in `SWEEP/trials/TRIAL_ID` (checkpoints, grids,
best model), Tune's state in `SWEEP/tune`, and the results table in `SWEEP/results.{csv,json}`. PBT runs a trial in
segments of `perturbation_interval` steps; each segment resumes the previous one's checkpoint (or, after an exploit,
the donor trial's) with the trial's current hyperparameters.

The package: `spec` (the sweep YAML models and their validation; torch-free at import), `trainable` (the trial: one
training run through gansvc.train.run), `results` (the results table and files), `sweep` (the Tuner and its run),
`__main__` (the CLI).
"""

from __future__ import annotations

from gansvc.tune.spec import SweepError, SweepSpec, load_spec

__all__ = ["SweepError", "SweepSpec", "load_spec"]
