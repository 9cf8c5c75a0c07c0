"""From what the user typed to the run that trains: presets that cover the whole run, the default dataset, and the
settings that depend on the data (schedules in epochs, image size, batch size, a family's fit to small images).

`python -m gansvc.train cyclegan` with no other flag: the family's default preset (`FamilySpec.default_preset`)
gives the model, the loop (batch size, epochs) and the data settings (flip, crop, size) of its report; the dataset is
`$GANSVC_STORAGE/datasets/<FamilySpec.dataset>`. Whatever the user gives (flags, --set, --config) wins over the
preset. Once the dataset is known, `fit_to_dataset` turns the preset's epoch-counted schedule into steps, keeps a
preset from upsampling small images or using a batch larger than the data, and lets the family adapt fields the user
did not set (`FamilySpec.fit_to_data`). Every such decision is a note, printed and stored in the run's config.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from typing import Any

from gansvc import storage
from gansvc.config import ConfigError, ExperimentConfig, build_config, set_path
from gansvc.data.pipeline import ImageDataset
from gansvc.families import get_family
from gansvc.families.base import FamilySpec, RunPreset


def preset_of(raw: dict[str, Any], spec: FamilySpec[Any]) -> str | None:
    """The preset a raw config trains with: the named one, else the family's default."""
    return raw.get("preset") or spec.default_preset


def run_preset(spec: FamilySpec[Any], preset: str | None) -> RunPreset:
    return spec.runs.get(preset or "", RunPreset())


def given_keys(raw: dict[str, Any], prefix: str = "") -> frozenset[str]:
    """Dotted paths of every value the user set (`loop.batch_size`, `model.lr`, ...)."""
    out: set[str] = set()
    for k, v in raw.items():
        if isinstance(v, dict) and v:
            out |= given_keys(v, f"{prefix}{k}.")
        else:
            out.add(f"{prefix}{k}")
    return frozenset(out)


def apply_run_preset(raw: dict[str, Any], spec: FamilySpec[Any]) -> frozenset[str]:
    """Fill `raw` with the preset's loop and data defaults (never over a user value); returns the user's keys.

    `data.size` / `data.load_size` wait for the dataset (`fit_to_dataset`): a preset never upsamples small images."""
    given = given_keys(raw)
    preset = preset_of(raw, spec)
    if preset is not None:
        raw["preset"] = preset
    rp = run_preset(spec, preset)
    for section, values in (("loop", rp.loop), ("data", rp.data)):
        for key, value in values.items():
            if section == "data" and key in ("size", "load_size"):
                continue
            if f"{section}.{key}" not in given:
                raw.setdefault(section, {})[key] = value
    return given


def config_and_given(raw: dict[str, Any]) -> tuple[ExperimentConfig, frozenset[str]]:
    """The config of a raw dict (YAML + flags) with the family's run preset filled in under the user's values and the
    default dataset, and the dotted keys the user gave (which fitting to the data never changes)."""
    try:
        spec = get_family(raw["family"])
    except ValueError as err:
        raise ConfigError(str(err)) from None
    preset = raw.get("preset")
    if preset is not None and preset not in spec.presets and preset not in spec.runs:
        known = ", ".join(sorted(set(spec.presets) | set(spec.runs))) or "none"
        raise ConfigError(f"family {spec.name!r} has no preset {preset!r}; presets: {known}")
    given = apply_run_preset(raw, spec)
    if not raw.get("data", {}).get("uri"):
        set_path(raw, "data.uri", default_dataset_uri(spec))
    loop = raw.get("loop") or {}
    if loop.get("max_steps") is None and loop.get("epochs") is None:
        raise ConfigError("say how long to train: --max-steps N or --epochs E (loop.max_steps / loop.epochs)")
    if not raw.get("run", {}).get("name"):
        set_path(raw, "run.name", f"{raw['family']}-{dt.datetime.now():%Y%m%d-%H%M%S}")
    return build_config(raw), given


def default_dataset_uri(spec: FamilySpec[Any]) -> str:
    """`$GANSVC_STORAGE/datasets/<the family's report dataset>`, or a ConfigError saying what to give instead."""
    if spec.dataset is None:
        raise ConfigError(f"{spec.name} has no default dataset: give --dataset s3://bucket/prefix (or data.uri)")
    base = os.environ.get("GANSVC_STORAGE")
    if not base:
        raise ConfigError(
            f"give the dataset: --dataset s3://bucket/prefix, or set GANSVC_STORAGE so that {spec.name} "
            f"uses its report's dataset {spec.dataset} at $GANSVC_STORAGE/datasets/{spec.dataset} "
            f"(fetch it with: {get_command(spec.dataset)})"
        )
    return storage.parse_uri(base).join("datasets", spec.dataset).uri()


def get_command(name: str) -> str:
    """The `data get` command of a catalog name (tests/unit/families/test_presets.py checks every family's dataset is a
    catalog name)."""
    from gansvc.data.catalog import get_command as catalog_command

    try:
        return catalog_command(name)
    except ValueError:
        return f"python -m gansvc.data get {name}"


def check_default_dataset(cfg: ExperimentConfig) -> None:
    """When the run uses its family's default dataset and it is not there: one message naming it and the command
    that fetches it, before anything starts."""
    spec = cfg.spec()
    if spec.dataset is None or not os.environ.get("GANSVC_STORAGE") or cfg.data.uri != default_dataset_uri(spec):
        return
    try:
        there = storage.exists(storage.parse_uri(cfg.data.uri).join("manifest.json").uri())
    except storage.StorageError:
        return  # storage itself is unreachable: the dataset check reports that
    if not there:
        raise ConfigError(
            f"{spec.name} trains on its report's dataset {spec.dataset!r} by default, and "
            f"{cfg.data.uri} holds no dataset yet. Fetch it with:\n  {get_command(spec.dataset)}\n"
            "or train on another dataset with --dataset s3://bucket/prefix"
        )


@dataclass
class Fitted:
    """The config after fitting it to the data, and what fitting decided."""

    cfg: ExperimentConfig
    steps_per_epoch: int
    notes: list[str] = field(default_factory=list)


def steps_per_epoch(n_items: int, batch_size: int, workers: int) -> int:
    """Optimisation steps in one pass: as BatchStream, ceil(items / workers) // batch (last partial batch dropped)."""
    return max(1, (-(-n_items // workers)) // batch_size)


def fit_to_dataset(cfg: ExperimentConfig, dataset: ImageDataset, given: frozenset[str]) -> Fitted:
    """Settings that depend on the data (see the module doc). `given`: the user's dotted keys (never changed)."""
    spec = cfg.spec()
    rp = run_preset(spec, cfg.preset)
    notes: list[str] = []
    data_update: dict[str, Any] = {}
    native = min(dataset.spec.height, dataset.spec.width)
    want = rp.data.get("size")
    if want is not None and "data.size" not in given:
        if native >= want:
            data_update["size"] = want
            if "load_size" in rp.data and "data.load_size" not in given:
                data_update["load_size"] = rp.data["load_size"]
        else:
            notes.append(
                f"data.size: the {cfg.preset} preset trains at {want} px; these images are {native} px, so "
                f"it trains at {native} px (a preset never upsamples)"
            )
    loop_update: dict[str, Any] = {}
    per_worker = -(-len(dataset) // cfg.scaling.num_workers)
    if cfg.loop.batch_size > per_worker and "loop.batch_size" not in given:
        loop_update["batch_size"] = per_worker
        notes.append(
            f"loop.batch_size {cfg.loop.batch_size} -> {per_worker}: each of {cfg.scaling.num_workers} "
            f"worker(s) gets only {per_worker} images"
        )
    cfg = cfg.model_copy(
        update={"data": cfg.data.model_copy(update=data_update), "loop": cfg.loop.model_copy(update=loop_update)}
    )
    spe = steps_per_epoch(len(dataset), cfg.loop.batch_size, cfg.scaling.num_workers)
    model = dict(cfg.model)
    for name, epochs in rp.epoch_fields.items():
        if f"model.{name}" not in given:
            model[name] = round(epochs * spe)
            notes.append(f"model.{name} = {epochs:g} epochs x {spe} steps/epoch = {model[name]} steps")
    cfg = cfg.model_copy(update={"model": model})
    if spec.fit_to_data is not None:
        data_spec = ImageDataset(cfg.data, dataset.manifest).spec if data_update else dataset.spec
        model_given = frozenset(k.split(".", 1)[1] for k in given if k.startswith("model."))
        before = cfg.family_config()
        fitted, fam_notes = spec.fit_to_data(before, data_spec, model_given)
        old_fields = before.model_dump(mode="json")
        changed = {
            k: v for k, v in fitted.model_dump(mode="json").items() if k not in model_given and old_fields.get(k) != v
        }
        if changed:
            cfg = cfg.model_copy(update={"model": {**cfg.model, **changed}})
        notes += fam_notes
    try:  # the fitted config must still be valid (e.g. a schedule field's bounds)
        cfg = build_config(cfg.model_dump(mode="json"))
    except ConfigError as err:
        raise ConfigError(f"fitting the {cfg.preset or 'default'} settings to {cfg.data.uri}: {err}") from None
    return Fitted(cfg, spe, notes)


def schedule_lines(fitted: Fitted, n_items: int) -> list[str]:
    """The resolved schedule, as --dry-run prints it: steps per epoch, total steps and epochs, lr decay."""
    cfg, spe = fitted.cfg, fitted.steps_per_epoch
    limits = []
    if cfg.loop.max_steps is not None:
        limits.append(cfg.loop.max_steps)
    if cfg.loop.epochs is not None:
        limits.append(max(1, -(-int(cfg.loop.epochs * spe * 1000) // 1000)))
    total = min(limits)
    note = run_preset(cfg.spec(), cfg.preset).note
    lines = [
        f"preset: {cfg.preset or '(none: the config defaults)'}" + (f" ({note})" if note else ""),
        f"data: {n_items} items per epoch, batch {cfg.loop.batch_size} x {cfg.scaling.num_workers} worker(s) "
        f"= {spe} steps per epoch",
        f"length: {total} steps = {total / spe:.4g} epochs"
        + (
            f" (stopped by --max-steps {cfg.loop.max_steps})"
            if cfg.loop.max_steps == total
            and cfg.loop.epochs is not None
            and cfg.loop.max_steps < cfg.loop.epochs * spe
            else ""
        ),
    ]
    fam = cfg.family_config()
    start, length = getattr(fam, "decay_start", None), getattr(fam, "decay_steps", None)
    if isinstance(start, int) and isinstance(length, int):
        lines.append(
            f"learning rate: constant for {start} steps ({start / spe:.4g} epochs), then linear to 0 over "
            f"{length} steps ({length / spe:.4g} epochs)"
        )
    lines += [f"note: {n}" for n in fitted.notes]
    return lines
