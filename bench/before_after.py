"""Before / after record of a change to the DCGAN-family step (gansvc/nn/adversarial.py), side by side.

    git show 6066b34:gansvc/nn/adversarial.py > /tmp/adversarial_old.py
    python bench/before_after.py /tmp/adversarial_old.py

Runs the old module's train_step and the current one on the same nets, batches and report presets (32 px, batch 64,
CPU) in alternating rounds; prints images/s of each and after/before (median of the per-round ratios), and appends
the rows to bench/results/adversarial_before_after.jsonl. Used for the two fixes of issue 9 (BENCHMARKS.md).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
import train_bench as tb

from gansvc.config import LoopConfig
from gansvc.families import FAMILIES
from gansvc.families.base import GanState


def main() -> int:
    spec_old = importlib.util.spec_from_file_location("adversarial_old", sys.argv[1])
    old = importlib.util.module_from_spec(spec_old)  # type: ignore[arg-type]
    spec_old.loader.exec_module(old)  # type: ignore[union-attr]
    loop = SimpleNamespace(loop=LoopConfig(max_steps=1, amp=False, channels_last=False, compile=False))
    cpu = torch.device("cpu")
    rows = []
    for fam in ("dcgan", "wgan", "wgan-gp", "acgan", "wacgan"):
        spec = FAMILIES[fam]
        cfg = spec.make_config("report")
        data = tb.data_spec(spec, 32)
        batches = tb.make_batches(spec, data, 64, 4, 0)
        new_state, old_state = (tb.build(spec, cfg, data, cpu, loop) for _ in range(2))

        def run_old(
            batch: dict[str, torch.Tensor],
            step: int,
            st: GanState = old_state,
            c: Any = cfg,  # the family's config dataclass (FamilySpec[Any])
            cond: bool = spec.conditional,
        ) -> None:
            old.train_step(st, batch, step, c, cond)

        res = tb.compare(
            {"before": run_old, "after": tb.gansvc_runner(spec, new_state, cfg, cpu, loop)},
            batches,
            64,
            cpu,
            round_s=2.0,
            rounds=5,
            warmup=2,
        )
        rows.append(
            {
                "family": fam,
                "before_per_s": res["before"]["per_s"],
                "after_per_s": res["after"]["per_s"],
                "after_vs_before": res["after"]["vs_first"],
                "load_avg_1m": common.load_avg(),
            }
        )
        print(rows[-1], file=sys.stderr, flush=True)
    common.print_table(
        ("family", "before img/s", "after img/s", "after/before"),
        [(r["family"], r["before_per_s"], r["after_per_s"], r["after_vs_before"]) for r in rows],
        title=f"before ({sys.argv[1]}) / after (32 px, batch 64, report presets, CPU)",
    )
    common.append_rows("adversarial_before_after", rows, {"old_module": sys.argv[1], "change": " ".join(sys.argv[2:])})
    return 0


if __name__ == "__main__":
    sys.exit(main())
