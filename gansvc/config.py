"""The experiment config: data + family (model) + loop + scaling + run storage + metrics.

One strict pydantic model (`extra="forbid"` everywhere). The `model` section holds overrides of the family's config;
`resolve()` validates them against the family (defaults, then `preset`, then `model`), so an error names the field
(`model.lr_g: Input should be greater than 0`). Every Tune axis is a path into this config (`model.lr_g`,
`loop.batch_size`...). A config arriving in a Ray worker or Tune trial is validated again first thing.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from gansvc.data.pipeline import DataConfig
from gansvc.families import get_family
from gansvc.families.base import FamilyConfig, FamilySpec
from gansvc.strict import ConfigError, FrozenStrict, did_you_mean, format_validation, parse_set, set_path

# the strict-model base and the config helpers live in the base layer (gansvc.strict, torch-free); exported here too
# so `from gansvc.config import ConfigError, set_path, ...` keeps working for every caller
__all__ = [
    "CUDA_SWITCHES",
    "ConfigError",
    "ExperimentConfig",
    "LoopConfig",
    "MetricsSection",
    "RunSection",
    "ScalingSection",
    "build_config",
    "did_you_mean",
    "format_validation",
    "load_yaml",
    "parse_set",
    "set_path",
]


CUDA_SWITCHES = ("amp", "channels_last", "compile", "tf32")  # LoopConfig fields that only act on CUDA


class LoopConfig(FrozenStrict):
    max_steps: int | None = Field(None, ge=1, description="stop after this many steps (one step = one G update)")
    epochs: float | None = Field(None, gt=0, description="or stop after this many passes over the data")
    batch_size: int = Field(64, ge=1, description="per worker")
    seed: int = 0
    log_every: int = Field(50, ge=1)
    checkpoint_every: int = Field(500, ge=1)
    eval_every: int = Field(1000, ge=1)
    keep_checkpoints: int = Field(3, ge=1, description="most recent checkpoints kept (the best is kept apart)")
    grid_size: int = Field(64, ge=1, le=256, description="images in each sample grid")
    tensorboard: bool = Field(
        True, description="TensorBoard event files in RUN/tensorboard/: every logged scalar and each sample grid"
    )
    # GPU switches (ignored on CPU): bf16 autocast, channels_last memory format, torch.compile, TF32 matmuls
    amp: bool = True
    channels_last: bool = True
    compile: bool = False
    # torch.compile's mode; "reduce-overhead" adds CUDA graphs (they help launch-bound steps: batch-1 translation)
    compile_mode: Literal["default", "reduce-overhead", "max-autotune"] = "default"
    tf32: bool = True

    @model_validator(mode="after")
    def _one_stop(self) -> LoopConfig:
        if self.max_steps is None and self.epochs is None:
            raise ValueError("give loop.max_steps or loop.epochs (--max-steps / --epochs)")
        return self


class ScalingSection(FrozenStrict):
    num_workers: int = Field(1, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float = Field(1.0, ge=0)
    max_failures: int = Field(2, ge=0, description="restarts of a crashed worker group from the latest checkpoint")


class RunSection(FrozenStrict):
    name: str = Field("", pattern=r"^[A-Za-z0-9_.\-]*$", description="same name = resume; default: family-timestamp")
    storage: str = Field("", description="where runs go (s3://bucket/prefix or a folder); default $GANSVC_STORAGE/runs")

    def storage_root(self) -> str:
        if self.storage:
            return self.storage
        base = os.environ.get("GANSVC_STORAGE")
        return f"{base.rstrip('/')}/runs" if base else str(Path.home() / "gansvc-runs")


class MetricsSection(FrozenStrict):
    inception: str | None = Field(
        None,
        description="path or s3:// URI of the feature extractor's weights file "
        "(default: the torch hub cache; the default extractor's file is fetched there "
        "when online)",
    )
    extractor: Literal["fid-inception-2015-12-05", "torchvision-inception-v3"] = Field(
        "fid-inception-2015-12-05",
        description="FID/KID/IS network: the TF FID Inception of published numbers "
        "(torch-fidelity's port), or torchvision's ImageNet Inception-v3 (comparable across gansvc runs only)",
    )
    samples: int = Field(1000, ge=16, description="generated images per FID/KID/IS evaluation")
    reference_samples: int = Field(5000, ge=16, description="real images for the cached reference statistics")
    metric: Literal["auto", "fid", "kid", "swd"] = Field(
        "auto", description="drives the best checkpoint; auto = kid with Inception weights, else swd"
    )


class ExperimentConfig(FrozenStrict):
    family: str
    preset: str | None = None
    model: dict[str, Any] = Field(default_factory=dict)
    data: DataConfig
    loop: LoopConfig
    scaling: ScalingSection = ScalingSection()
    run: RunSection = RunSection()
    metrics: MetricsSection = MetricsSection()
    # what fitting the preset to the data decided (gansvc.train.resolve): one line per changed setting
    notes: tuple[str, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _cpu_run_shows_cpu(cls, data: Any) -> Any:
        """A CPU run (scaling.use_gpu false) uses no GPU and none of the GPU switches: default them off, so the
        resolved and stored config says what the run does (values the user gave are kept as given)."""
        if not isinstance(data, dict):
            return data
        scaling = data.get("scaling") or {}
        if not isinstance(scaling, dict) or scaling.get("use_gpu"):
            return data
        loop = data.get("loop")
        if isinstance(loop, dict):
            data = {**data, "loop": {**{k: False for k in CUDA_SWITCHES}, **loop}}
        return {**data, "scaling": {"gpus_per_worker": 0.0, **scaling}}

    def spec(self) -> FamilySpec[Any]:
        return get_family(self.family)

    def family_config(self) -> FamilyConfig:
        fam: FamilyConfig = self.spec().make_config(self.preset, self.model)
        return fam

    def resolved(self) -> ExperimentConfig:
        """The same config with `model` expanded to every field of the family config (what a run stores)."""
        fam = self.family_config()
        run = self.run.model_copy(update={"storage": self.run.storage_root()})
        return self.model_copy(update={"model": fam.model_dump(mode="json"), "preset": None, "run": run})


def load_yaml(path: str) -> dict[str, Any]:
    from gansvc import storage

    try:
        raw = yaml.safe_load(storage.read_bytes(storage.parse_uri(path).uri()).decode())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections (family, data, loop, ...)")
    return raw


def build_config(raw: dict[str, Any]) -> ExperimentConfig:
    """Validate a raw dict (from YAML + flags) into an ExperimentConfig whose family config is valid too."""
    try:
        cfg = ExperimentConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError("invalid config:\n" + format_validation(err, root=ExperimentConfig)) from None
    try:
        spec = cfg.spec()
    except ValueError as err:
        raise ConfigError(str(err)) from None
    try:
        spec.make_config(cfg.preset, cfg.model)
    except ValidationError as err:
        raise ConfigError(
            f"invalid {cfg.family} config:\n" + format_validation(err, "model.", root=spec.config)
        ) from None
    except ValueError as err:  # unknown preset
        raise ConfigError(str(err)) from None
    return cfg
