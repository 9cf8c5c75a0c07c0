"""Training step throughput per family: gansvc's step (as the training loop runs it) vs a plain eager PyTorch
reference step of the same networks (bench/reference.py), side by side in one process, no Ray, synthetic batches.

    python bench/train_bench.py --quick                 # every family at its small size (CPU: ~5 min)
    python bench/train_bench.py                         # small and report sizes
    python bench/train_bench.py --families cyclegan --sizes report --device cuda   # on a GPU: + bf16/cl/compile

Networks are the family's "report" preset (the founding report's architecture); batches are random images in
[-1, 1] (labels / masks where the family needs them), so the data path is not part of these figures (see
data_bench.py). Timing alternates gansvc and reference in rounds of k steps (k chosen so a round lasts ~1 s, ~3 s
without --quick) and reports medians; the ratios (x gansvc fp32, x reference) are medians of per-round ratios, so
machine load hits both sides alike. Units: "generate" families count generator-step images (batch per G update),
translate families pairs (one A and one B image), the segmenter images.

On CUDA it also measures each GPU switch of the loop separately on top of fp32 (bf16 autocast, channels_last,
torch.compile) and all of them together, and checks that each switch leaves the loss curve unchanged within noise
(--loss-steps steps from the same initial weights and noise; see `loss_check`).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from reference import REFERENCES  # noqa: E402

from gansvc.config import LoopConfig  # noqa: E402
from gansvc.data.spec import DataSpec  # noqa: E402
from gansvc.families import FAMILIES  # noqa: E402
from gansvc.families.base import FamilySpec, GanState  # noqa: E402
from gansvc.families.semantic_cyclegan import RANDOM  # noqa: E402
from gansvc.train.loop import autocast_for, device_batch, place  # noqa: E402


@dataclass(frozen=True)
class Case:
    """One family at one size: image side, batch per step (the reports' / reference code's) and config overrides."""

    family: str
    size: str  # "small" | "report"
    side: int
    batch: int
    overrides: dict[str, Any]


ATTRS = {"hair": ("black", "blonde", "blue", "pink", "red"), "eyes": ("blue", "green", "red", "yellow")}
# (small side, report side, batch): anime-face reports 002-004 train 64x64 (batch 64 as in the WGAN-GP reference);
# CycleGAN / U-GAT-IT / semantic CycleGAN 256x256 with batch 1 (official code, report 001; U-GAT-IT small is 128:
# its 7-layer global D needs it); the segmenter batch 2
# (report 001)
SIZES: dict[str, tuple[int, int, int]] = {
    "dcgan": (32, 64, 64), "wgan": (32, 64, 64), "wgan-gp": (32, 64, 64), "acgan": (32, 64, 64),
    "wacgan": (32, 64, 64), "cyclegan": (64, 256, 1), "ugatit": (128, 256, 1), "semantic-cyclegan": (64, 256, 1),
    "segmenter": (64, 256, 2),
}
# the report preset, plus what a benchmark needs: semantic-cyclegan's frozen segmenter with random weights (the
# cost of a trained one is the same); the report's U-Net depth (8 downsamplings) needs 256 px, 6 fit 64 px
EXTRA: dict[tuple[str, str], dict[str, Any]] = {
    ("semantic-cyclegan", "small"): {"segmenter": RANDOM, "num_downs": 6},
    ("semantic-cyclegan", "report"): {"segmenter": RANDOM},
}


def cases(families: list[str], sizes: list[str]) -> list[Case]:
    out = []
    for fam in families:
        small, report, batch = SIZES[fam]
        for size in sizes:
            side = small if size == "small" else report
            out.append(Case(fam, size, side, batch, EXTRA.get((fam, size), {})))
    return out


def data_spec(spec: FamilySpec, side: int) -> DataSpec:
    if spec.task == "generate":
        return DataSpec("single", side, side, 3, attributes=ATTRS if spec.conditional else {})
    if spec.task == "segment":
        return DataSpec("single", side, side, 3, num_classes=8)
    return DataSpec("unpaired", side, side, 3, num_classes=8 if spec.name == "semantic-cyclegan" else 0)


def make_batches(spec: FamilySpec, data: DataSpec, batch: int, n: int, seed: int) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)

    def img() -> torch.Tensor:
        return torch.rand(batch, data.channels, data.height, data.width, generator=g) * 2 - 1

    def mask() -> torch.Tensor:
        return torch.randint(0, data.num_classes, (batch, data.height, data.width), generator=g)

    out = []
    for _ in range(n):
        if data.layout == "unpaired":
            b = {"A": img(), "B": img()}
            if data.num_classes:
                b["A_mask"] = mask()
        else:
            b = {"image": img()}
            if data.attributes:
                b["labels"] = torch.stack([torch.randint(0, len(v), (batch,), generator=g)
                                           for v in data.attributes.values()], 1)
            if data.num_classes:
                b["mask"] = mask()
        out.append(b)
    return out


def build(spec: FamilySpec, fam_cfg: Any, data: DataSpec, device: torch.device, loop: SimpleNamespace) -> GanState:
    torch.manual_seed(0)
    state = spec.build(fam_cfg, data)
    place(state, device, 1, loop)  # type: ignore[arg-type]
    for net in state.nets.values():
        net.train()
    return state


def gansvc_runner(spec: FamilySpec, state: GanState, fam_cfg: Any, device: torch.device, loop: SimpleNamespace
                  ) -> Callable[[dict[str, torch.Tensor], int], dict[str, float]]:
    """One step exactly as `gansvc.train.loop.train_loop` runs it (batch placement, autocast, the family step, the
    finite check)."""
    def run(batch: dict[str, torch.Tensor], step: int) -> dict[str, float]:
        b = device_batch(batch, device, loop)  # type: ignore[arg-type]
        with autocast_for(device, loop):  # type: ignore[arg-type]
            out = spec.train_step(state, b, step, fam_cfg)
        if not all(math.isfinite(v) for v in out.values()):
            raise RuntimeError(f"{spec.name}: non-finite loss {out}")
        return out
    return run


def reference_runner(family: str, state: GanState, fam_cfg: Any, device: torch.device
                     ) -> Callable[[dict[str, torch.Tensor], int], dict[str, float]]:
    ref = REFERENCES[family]

    def run(batch: dict[str, torch.Tensor], step: int) -> dict[str, float]:
        ref(state, {k: v.to(device) for k, v in batch.items()}, fam_cfg)
        return {}
    return run


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(run: Callable[[dict[str, torch.Tensor], int], Any], batches: list[dict[str, torch.Tensor]], k: int,
          start: int, device: torch.device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    for i in range(k):
        run(batches[(start + i) % len(batches)], start + i)
    _sync(device)
    return time.perf_counter() - t0


def compare(runners: dict[str, Callable], batches: list[dict[str, torch.Tensor]], samples: int, device: torch.device,
            round_s: float, rounds: int, warmup: int) -> dict[str, dict[str, float]]:
    """Alternating rounds of k steps per runner; per runner the median samples/s, and the median per-round ratio of
    every runner to the first one."""
    first = next(iter(runners))
    step_s = {}
    for name, run in runners.items():  # warm-up (and, on CUDA, compilation), then one timed step to size k
        timed(run, batches, warmup, 0, device)
        step_s[name] = timed(run, batches, 1, warmup, device)
    k = max(1, round(round_s / max(step_s.values())))
    rates: dict[str, list[float]] = {n: [] for n in runners}
    step = warmup + 1
    for r in range(rounds):
        order = list(runners) if r % 2 == 0 else list(reversed(runners))
        for name in order:
            rates[name].append(k * samples / timed(runners[name], batches, k, step, device))
        step += k
    out = {}
    for name in runners:
        ratios = [a / b for a, b in zip(rates[name], rates[first], strict=True)]
        out[name] = {"per_s": statistics.median(rates[name]), "vs_first": statistics.median(ratios),
                     "steps_per_round": k, "rounds": rounds}
    return out


def loss_check(spec: FamilySpec, fam_cfg: Any, data: DataSpec, batches: list[dict[str, torch.Tensor]],
               device: torch.device, variant: SimpleNamespace, steps: int) -> dict[str, float]:
    """The same `steps` steps (same initial weights, batches and noise seeds) in fp32 and under `variant`: the mean
    of each loss over the last half, and the largest relative difference between the two. GAN losses wander, so
    "same within noise" is judged against the spread of the fp32 run itself (its std over the same window)."""
    curves = []
    for loop in (SimpleNamespace(loop=LoopConfig(max_steps=1, amp=False, channels_last=False, compile=False)),
                 variant):
        state = build(spec, fam_cfg, data, device, loop)
        run = gansvc_runner(spec, state, fam_cfg, device, loop)
        torch.manual_seed(1)
        curves.append([run(batches[i % len(batches)], i) for i in range(steps)])
    half = steps // 2
    worst, worst_z = 0.0, 0.0
    for key in curves[0][0]:
        a = [c[key] for c in curves[0][half:]]
        b = [c[key] for c in curves[1][half:]]
        ma, mb, sd = statistics.fmean(a), statistics.fmean(b), statistics.pstdev(a) or 1e-12
        worst = max(worst, abs(ma - mb) / max(abs(ma), 1e-12))
        worst_z = max(worst_z, abs(ma - mb) / (sd / math.sqrt(len(a))))
    return {"loss_rel_diff": worst, "loss_diff_in_se": worst_z}


def run_case(case: Case, device: torch.device, quick: bool, loss_steps: int, preset: str | None = None,
             rounds: int | None = None) -> list[dict[str, Any]]:
    spec = FAMILIES[case.family]
    preset = preset or ("report" if "report" in spec.presets else None)
    overrides = dict(case.overrides)
    if preset != "report" and "num_downs" in overrides:
        del overrides["num_downs"]  # the small-size U-Net depth belongs to the report preset
    fam_cfg = spec.make_config(preset, overrides)
    data = data_spec(spec, case.side)
    batches = make_batches(spec, data, case.batch, 4, seed=0)
    fp32 = SimpleNamespace(loop=LoopConfig(max_steps=1, amp=False, channels_last=False, compile=False))
    runners: dict[str, Callable] = {"gansvc": gansvc_runner(spec, build(spec, fam_cfg, data, device, fp32), fam_cfg,
                                                            device, fp32)}
    if case.family in REFERENCES:
        runners["reference"] = reference_runner(case.family, build(spec, fam_cfg, data, device, fp32), fam_cfg, device)
    variants: dict[str, SimpleNamespace] = {}
    if device.type == "cuda":
        for name, kw in (("bf16", {"amp": True}), ("channels_last", {"channels_last": True}),
                         ("compile", {"compile": True}), ("all", {"amp": True, "channels_last": True,
                                                                  "compile": True})):
            loop = SimpleNamespace(loop=LoopConfig(max_steps=1, **({"amp": False, "channels_last": False,
                                                                    "compile": False} | kw)))
            variants[name] = loop
            runners[f"gansvc+{name}"] = gansvc_runner(spec, build(spec, fam_cfg, data, device, loop), fam_cfg,
                                                      device, loop)
    res = compare(runners, batches, case.batch, device, round_s=1.0 if quick else 3.0,
                  rounds=rounds or (3 if quick else 5),
                  warmup=3 if device.type == "cuda" else 1)
    # x reference from the per-round ratios (both are relative to gansvc fp32 of the same round): robust to load
    ref = res.get("reference", {}).get("vs_first")
    rows = []
    for name, r in res.items():
        row = {"family": case.family, "size": case.size, "side": case.side, "batch": case.batch,
               "unit": {"generate": "images", "translate": "pairs", "segment": "images"}[spec.task],
               "variant": name, "per_s": r["per_s"], "vs_gansvc_fp32": r["vs_first"],
               "vs_reference": r["vs_first"] / ref if ref else None, "steps_per_round": r["steps_per_round"],
               "rounds": r["rounds"], "device": str(device), "threads": torch.get_num_threads(),
               "load_avg_1m": common.load_avg()}
        if name.startswith("gansvc+") and loss_steps:
            row |= loss_check(spec, fam_cfg, data, batches, device, variants[name.split("+", 1)[1]], loss_steps)
        rows.append(row)
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes only, short rounds")
    p.add_argument("--families", default=",".join(SIZES), help="comma-separated (default: all)")
    p.add_argument("--sizes", default=None, help="small,report (default: both; small with --quick)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    p.add_argument("--loss-steps", type=int, default=300, help="steps of each GPU switch's loss check (0: skip)")
    p.add_argument("--preset", default=None, help="family preset for every family (default: report)")
    p.add_argument("--rounds", type=int, default=None, help="timed rounds per runner (default 3 quick, 5 full)")
    p.add_argument("--out", default=None, help="results file (default bench/results/train.jsonl)")
    args = p.parse_args()
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    unknown = [f for f in families if f not in SIZES]
    sizes = (args.sizes or ("small" if args.quick else "small,report")).split(",")
    if unknown or not set(sizes) <= {"small", "report"}:
        print(f"unknown families {unknown} or sizes {sizes}: families are {', '.join(SIZES)}; sizes small,report",
              file=sys.stderr)
        return 2
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("--device cuda but no CUDA device is visible", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # fp32 means fp32
        torch.backends.cudnn.benchmark = True
    rows: list[dict[str, Any]] = []
    for case in cases(families, sizes):
        print(f"{case.family} {case.size} ({case.side}px, batch {case.batch}) ...", file=sys.stderr, flush=True)
        new = run_case(case, device, args.quick, args.loss_steps if device.type == "cuda" else 0, args.preset,
                       args.rounds)
        for r in new:
            print(f"  {r['variant']:22} {r['per_s']:10.1f} {r['unit']}/s  x reference "
                  f"{r['vs_reference'] or float('nan'):.2f}  load {r['load_avg_1m']}", file=sys.stderr, flush=True)
        rows += new
    common.print_table(
        ("family", "size", "px", "batch", "variant", "per s", "unit", "x gansvc fp32", "x reference", "loss diff/se"),
        [(r["family"], r["size"], r["side"], r["batch"], r["variant"], r["per_s"], r["unit"], r["vs_gansvc_fp32"],
          r["vs_reference"], r.get("loss_diff_in_se")) for r in rows],
        title=f"training step throughput ({args.device}, {torch.get_num_threads()} threads)")
    common.append_rows("train", rows, {"quick": args.quick, "preset": args.preset or "report"}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
