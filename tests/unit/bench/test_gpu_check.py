"""bench/gpu_check.sh (issue 15 part 3): the GPU check's own logic, and the whole script end to end in its CPU dry
run, so the command that will first run on a GPU machine has run here: every stage, its result files, its table."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
BENCH = ROOT / "bench"
sys.path.insert(0, str(BENCH))

import gpu_check  # noqa: E402
import train_bench  # noqa: E402


def _curve(values: list[float]) -> list[dict[str, float]]:
    return [{"loss": v} for v in values]


def test_curve_check_tolerance() -> None:
    """Identical curves pass at 0; a curve as far from fp32 as the other-seed twin passes; a shifted, or a non-finite,
    one fails."""
    ref = _curve([1.0, 0.8, 0.9, 0.7])
    twin = _curve([1.1, 0.7, 1.0, 0.6])  # mean distance 0.1 -> tolerance 1.5 * 0.1
    same = train_bench.curve_check(ref, twin, ref)
    assert same["loss_check"] == "pass" and same["loss_dist_over_tol"] == 0.0
    near = train_bench.curve_check(ref, twin, _curve([1.1, 0.9, 0.8, 0.8]))
    assert near["loss_check"] == "pass" and 0.5 < near["loss_dist_over_tol"] < 0.8
    assert train_bench.curve_check(ref, twin, _curve([1.5, 1.3, 1.4, 1.2]))["loss_check"] == "fail"
    bad = train_bench.curve_check(ref, twin, _curve([1.0, float("nan"), 0.9, 0.7]))
    assert bad["loss_check"] == "fail" and not bad["loss_finite"]
    # a twin identical to fp32 (a loss the noise does not touch) still allows bf16-sized rounding (REL_FLOOR)
    assert train_bench.curve_check(ref, ref, _curve([1.01, 0.8, 0.9, 0.7]))["loss_check"] == "pass"


def test_data_wait_lines_parsed_once_per_step() -> None:
    line = "(RayTrainWorker pid=1) [gansvc] step {}/6  loss_d 1.3  loss_g 0.68  {} img/s  data wait {}%  ETA 0s\n"
    text = line.format(2, 236, 0.6) * 2 + line.format(4, 388, 0.1) * 2 + "[gansvc] data: decoded store ...\n"
    assert gpu_check.data_wait(text) == [(2, 236.0, 0.006), (4, 388.0, 0.001)]


def test_stage_timeout_kills_the_stage(tmp_path: Path) -> None:
    """A stage past its budget is stopped (its whole process group) and reported, and the check goes on."""
    t0 = time.perf_counter()
    status, rc = gpu_check.run_cmd(["bash", "-c", "sleep 60 & wait"], tmp_path / "x.log", 1.0)
    assert status == "timed out" and rc is None and time.perf_counter() - t0 < 20
    assert "killed after its budget" in (tmp_path / "x.log").read_text()
    assert gpu_check.run_cmd(["bash", "-c", "exit 3"], tmp_path / "y.log", 10.0) == ("failed", 3)


def test_family_figures_judge_the_best_passing_cell() -> None:
    fam = gpu_check.FamilyRun("cyclegan", 256, 1, 150, "pairs/s", ("fp32", "all", "compile"))
    rows = [
        {"variant": "fp32", "per_s": 100.0, "speedup_vs_fp32": 1.0, "loss_check": "pass"},
        {"variant": "all", "per_s": 160.0, "speedup_vs_fp32": 1.6, "loss_check": "pass"},
        {"variant": "compile", "per_s": 400.0, "speedup_vs_fp32": 4.0, "loss_check": "fail"},
        {"variant": "all+cudagraphs", "error": "RuntimeError: x", "loss_check": "error"},
    ]
    figs = gpu_check.family_figures(fam, rows, dry=False)
    assert figs[0]["measured"] == 160.0 and figs[0]["met"] and "(all)" in figs[0]["figure"]
    assert figs[1]["met"] and figs[1]["measured"] == 1.6
    assert figs[2]["met"] is False and figs[2]["measured"].startswith("2/4 pass")


@pytest.mark.timeout(960)
def test_cpu_dry_run_end_to_end(tmp_path: Path) -> None:
    """`bash bench/gpu_check.sh --cpu-dry-run`: every stage runs (the serve stage says why it is skipped on CPU),
    every cell has a positive rate and finite losses, and the results and the one summary table are written.
    About a minute of CPU; its stage budgets (and the 960 s guard) only matter on a loaded machine."""
    out = tmp_path / "gc"
    proc = subprocess.run(
        ["bash", str(BENCH / "gpu_check.sh"), "--cpu-dry-run", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=940,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    records = [json.loads(line) for line in (out / "gpu_check.jsonl").read_text().splitlines()]
    stages = {r["name"]: r for r in records if r["kind"] == "stage"}
    expected = ["gpu_tests", "train_dcgan", "train_wgan-gp", "train_cyclegan", "train_ugatit", "train_run", "serve"]
    assert list(stages) == expected
    assert all(stages[s]["status"] == "ok" for s in expected[:-1]), stages
    assert stages["serve"]["status"] == "skipped" and "skipped on CPU" in stages["serve"]["note"]
    cells = [json.loads(line) for line in (out / "train_cells.jsonl").read_text().splitlines()]
    for fam in gpu_check.DRY_FAMILIES:
        rows = {r["variant"]: r for r in cells if r["family"] == fam.family and "unit" in r}
        assert set(rows) == set(fam.cells), (fam.family, list(rows))
        for name, r in rows.items():
            if name == "all+cudagraphs":
                assert "CUDA device" in r["skipped"]
                continue
            # a 3-step curve on CPU cannot judge a switch (the GPU run's 40 steps do): it must run and stay finite
            assert r["per_s"] > 0 and r["loss_finite"] and r["loss_check"] in ("pass", "fail"), r
            assert math.isfinite(r["loss_dist_over_tol"]) and r["first_steps_s"] > 0, r
        assert list((out / "profiles").glob(f"{fam.family}-*.txt")), fam.family  # every target is missed on CPU
    figures = [r for r in records if r["kind"] == "figure"]
    wait = next(f for f in figures if "data wait" in f["figure"])
    assert wait["value"] is not None and 0 <= wait["value"] < 1 and math.isfinite(wait["value"])
    summary = (out / "summary.md").read_text()
    assert all(s in summary for s in expected) and ">= 150 pairs/s" in summary and "< 5%" in summary
    table = proc.stdout.split("## GPU check", 1)[1]
    assert all(s in table for s in expected) and "n/a (CPU dry run)" in table
