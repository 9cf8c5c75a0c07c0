"""The literal commands (issue 14.1): `python -m gansvc.train FAMILY` with no other flag resolves a whole run from the
family's default preset (model, loop, data, a schedule in epochs) on its report dataset in $GANSVC_STORAGE, and
stops with the `data get` command when that dataset is not there. In-process `main(argv)` dry runs: no Ray."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from gansvc.families import FAMILIES
from gansvc.train.__main__ import main as train_main
from gansvc.train.resolve import steps_per_epoch

# a synthetic stand-in of each layout a family's report dataset has (the shape of the data, not its content)
STAND_IN = {"generate": ("shapes", {}), "translate": ("stripes", {"masks": True}), "segment": ("shapes-seg", {})}


@pytest.fixture()
def storage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("GANSVC_STORAGE", str(tmp_path / "store"))
    return tmp_path / "store"


def _dry(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = train_main([*argv, "--dry-run"])
    out = capsys.readouterr()
    return code, out.out, out.err


def _put_default(storage: Path, family: str, synth_put: Callable[..., str], count: int = 40) -> Path:
    spec = FAMILIES[family]
    kind, extra = STAND_IN[spec.task]
    dest = storage / "datasets" / str(spec.dataset)
    synth_put(kind, str(dest), count=count, size=32, seed=0, test_count=4, **extra)
    return dest


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_names_a_report_dataset_and_a_default_run(family: str) -> None:
    """By construction: a new family must say what `python -m gansvc.train FAMILY` trains on and for how long."""
    spec = FAMILIES[family]
    assert spec.dataset, f"{family}: set FamilySpec.dataset (the catalog name of its report dataset)"
    assert spec.default_preset in spec.runs, f"{family}: its default preset {spec.default_preset!r} has no RunPreset"
    loop = spec.runs[spec.default_preset].loop
    assert loop.get("epochs") or loop.get("max_steps"), f"{family}: the default run must say how long it trains"
    assert spec.runs.get("report") is not None, f"{family}: --preset report must give the report's whole run"
    from gansvc.data.catalog import entry

    assert entry(spec.dataset).name == spec.dataset, f"{family}: {spec.dataset} is not a `data get` catalog name"


def test_missing_default_dataset_names_the_get_command(storage: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _dry(["cyclegan"], capsys)
    assert code == 2
    assert "horse2zebra" in err and "python -m gansvc.data get horse2zebra" in err, err
    assert "Traceback" not in err and "resolved config" not in out  # stopped before anything


def test_no_storage_and_no_dataset_says_both_ways(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("GANSVC_STORAGE", raising=False)
    code, _, err = _dry(["cyclegan"], capsys)
    assert code == 2 and "--dataset" in err and "GANSVC_STORAGE" in err and "data get horse2zebra" in err, err


def test_cyclegan_with_no_flags_is_the_official_schedule(
    storage: Path, synth_put: Callable[..., str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Batch 1, 200 epochs, lr constant for 100 epochs then decaying over 100 (Zhu et al. 2017), in steps of THIS
    dataset; a preset never upsamples 32 px images to its 256 px and says so."""
    _put_default(storage, "cyclegan", synth_put, count=40)
    code, out, err = _dry(["cyclegan"], capsys)
    assert code == 0, err
    spe = steps_per_epoch(40, 1, 1)
    assert f"batch 1 x 1 worker(s) = {spe} steps per epoch" in out
    assert f"length: {200 * spe} steps = 200 epochs" in out
    assert f"constant for {100 * spe} steps (100 epochs), then linear to 0 over {100 * spe} steps (100 epochs)" in out
    assert "trains at 32 px (a preset never upsamples)" in out
    assert f"decay_start: {100 * spe}" in out  # in the resolved config, not only in the summary


def test_report_preset_and_user_values(
    storage: Path, synth_put: Callable[..., str], capsys: pytest.CaptureFixture[str]
) -> None:
    _put_default(storage, "cyclegan", synth_put, count=40)
    code, out, err = _dry(["cyclegan", "--preset", "report"], capsys)
    assert code == 0, err
    assert "batch 10 x 1 worker(s) = 4 steps per epoch" in out and "length: 20000 steps" in out
    assert "n_blocks: 9" in out  # the report preset's model part too
    # flags win over the preset, and --max-steps shortens the run without changing its decay schedule
    code, out, err = _dry(["cyclegan", "--batch-size", "2", "--max-steps", "7"], capsys)
    assert code == 0, err
    spe = steps_per_epoch(40, 2, 1)
    assert f"batch 2 x 1 worker(s) = {spe} steps per epoch" in out
    assert "length: 7 steps" in out and "stopped by --max-steps 7" in out
    assert f"decay_start: {100 * spe}" in out
    code, out, err = _dry(["cyclegan", "--set", "model.decay_start=5", "--set", "data.flip=false"], capsys)
    assert code == 0, err
    assert "decay_start: 5\n" in out and "flip: false" in out


def test_preset_batch_larger_than_the_data_is_fitted_with_a_note(
    storage: Path, synth_put: Callable[..., str], capsys: pytest.CaptureFixture[str]
) -> None:
    _put_default(storage, "dcgan", synth_put, count=40)
    code, out, err = _dry(["dcgan"], capsys)
    assert code == 0, err
    assert "loop.batch_size 128 -> 40" in out
    code, _, err = _dry(["dcgan", "--batch-size", "128"], capsys)  # the user's own value is never changed: an error
    assert code == 2 and "--batch-size 128 exceeds" in err


def test_unknown_preset_lists_run_presets(storage: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _dry(["cyclegan", "--dataset", str(storage / "x"), "--preset", "nope"], capsys)
    assert code == 2 and "default" in err and "report" in err and "smoke" in err, err


def test_resolved_config_names_the_preset_and_what_a_cpu_run_uses(
    storage: Path, synth_put: Callable[..., str], capsys: pytest.CaptureFixture[str]
) -> None:
    """The printed config says `preset: smoke` (not null), and on CPU no GPU and none of the CUDA-only switches
    (issue 16.10); with a GPU asked for, the GPU defaults; a value the user gives is kept either way."""
    dest = _put_default(storage, "dcgan", synth_put, count=40)
    base = ["dcgan", "--preset", "smoke", "--dataset", str(dest), "--max-steps", "3"]
    code, out, err = _dry(base, capsys)
    assert code == 0, err
    config = out.split("resolved config:\n", 1)[1]
    assert "\npreset: smoke\n" in f"\n{config}" and "preset: null" not in out
    assert all(f"  {k}: false\n" in config for k in ("amp", "channels_last", "compile", "tf32")), config
    assert "  gpus_per_worker: 0.0\n" in config and "  use_gpu: false\n" in config
    code, out, err = _dry([*base, "--gpus-per-worker", "1"], capsys)
    assert code == 0, err
    config = out.split("resolved config:\n", 1)[1]
    assert "  amp: true\n" in config and "  tf32: true\n" in config and "  gpus_per_worker: 1.0\n" in config
    code, out, err = _dry([*base, "--set", "loop.amp=true"], capsys)
    assert code == 0 and "  amp: true\n" in out.split("resolved config:\n", 1)[1]
