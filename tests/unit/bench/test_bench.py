"""The benchmark suite stays runnable: every registered family has a benchmark case, the eager reference steps train,
and `bench/train_bench.py` runs end to end (tiny smoke nets, one round) and writes its result rows."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gansvc.families import FAMILIES

BENCH = Path(__file__).resolve().parents[3] / "bench"
sys.path.insert(0, str(BENCH))

import reference  # noqa: E402
import train_bench  # noqa: E402


def test_every_family_has_a_benchmark_case() -> None:
    # by construction: every registered family has cases, with its task's sizes unless overridden
    assert set(train_bench.FAMILY_NAMES) == set(FAMILIES)
    assert set(train_bench.SIZE_OVERRIDES) <= set(FAMILIES)
    for family in FAMILIES:
        assert [c.family for c in train_bench.cases([family], ["small", "report"])] == [family, family]
    assert set(reference.REFERENCES) <= set(FAMILIES)


@pytest.mark.parametrize("family", sorted(reference.REFERENCES))
def test_reference_step_trains_every_net(family: str, one_torch_thread: None) -> None:
    spec = FAMILIES[family]
    cfg = spec.make_config("smoke")
    small = train_bench.sizes_of(family)[0]
    data = train_bench.data_spec(spec, small)
    torch.manual_seed(0)
    state = spec.build(cfg, data)
    before = {k: [p.detach().clone() for p in n.parameters()] for k, n in state.nets.items()}
    for batch in train_bench.make_batches(spec, data, 4 if spec.task == "generate" else 1, 2, seed=0):
        reference.REFERENCES[family](state, batch, cfg)
    for name, net in state.nets.items():
        after = list(net.parameters())
        assert all(torch.isfinite(p).all() for p in after), f"{family}: non-finite weights in {name}"
        changed = any(not torch.equal(a, b) for a, b in zip(after, before[name], strict=True))
        assert changed, f"{family}: the reference step did not update {name}"


def test_train_bench_runs_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "train.jsonl"
    families = ["dcgan", "wgan-gp", "cyclegan", "segmenter"]  # adversarial, critic+GP, translation, no reference
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCH / "train_bench.py"),
            "--quick",
            "--preset",
            "smoke",
            "--rounds",
            "1",
            "--threads",
            "1",
            "--families",
            ",".join(families),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    by = {(r["family"], r["variant"]): r for r in rows}
    for fam in families:
        g = by[(fam, "gansvc")]
        assert g["per_s"] > 0 and g["cpu"] and g["torch"] and g["date"], g
        if fam in reference.REFERENCES:
            ref = by[(fam, "reference")]
            assert ref["per_s"] > 0 and math.isfinite(g["vs_reference"]), (g, ref)
        else:
            assert (fam, "reference") not in by and g["vs_reference"] is None
    assert "training step throughput" in proc.stdout  # the printed table


def test_loss_check_sees_identical_curves_for_identical_settings(one_torch_thread: None) -> None:
    """The GPU switches' loss check compares two runs from the same weights, batches and noise: with the same
    (fp32) settings on both sides the curves must match exactly, so any difference it reports on a GPU comes from
    the switch."""
    from types import SimpleNamespace

    from gansvc.config import LoopConfig

    spec = FAMILIES["wgan-gp"]
    cfg = spec.make_config("smoke")
    data = train_bench.data_spec(spec, 16)
    batches = train_bench.make_batches(spec, data, 4, 2, seed=0)
    fp32 = SimpleNamespace(loop=LoopConfig(max_steps=1, amp=False, channels_last=False, compile=False))
    out = train_bench.loss_check(spec, cfg, data, batches, torch.device("cpu"), fp32, steps=6)
    assert out == {"loss_rel_diff": 0.0, "loss_diff_in_se": 0.0}
