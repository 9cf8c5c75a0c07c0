"""Training step throughput per family: gansvc's step (as the training loop runs it) vs a plain eager PyTorch
reference step of the same networks (bench/reference.py), side by side in one process, no Ray, synthetic batches.

    python bench/train_bench.py --quick                 # every family at its small size (CPU: ~5 min)
    python bench/train_bench.py                         # small and report sizes
    python bench/train_bench.py --families cyclegan --sizes report --device cuda   # on a GPU: + bf16/cl/compile
    python bench/train_bench.py --families cyclegan --sizes report --cells bf16,all,all+cudagraphs  # switch cells
    python bench/train_bench.py --families dcgan --batch 128 --amp bf16 --channels-last --compile  # one cell

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
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
from reference import REFERENCES

from gansvc.config import LoopConfig
from gansvc.data.spec import DataSpec
from gansvc.families import FAMILIES
from gansvc.families.base import FamilySpec, GanState
from gansvc.families.semantic_cyclegan import RANDOM
from gansvc.train.loop import autocast_for, device_batch, place, uncompilable


@dataclass(frozen=True)
class Case:
    """One family at one size: image side, batch per step (the reports' / reference code's) and config overrides."""

    family: str
    size: str  # "small" | "report"
    side: int
    batch: int
    overrides: dict[str, Any]


ATTRS = {"hair": ("black", "blonde", "blue", "pink", "red"), "eyes": ("blue", "green", "red", "yellow")}
# (small side, report side, batch) by task: the anime-face reports 002-004 train noise -> image at 64x64 (batch 64 as in
# the WGAN-GP reference); CycleGAN / U-GAT-IT / semantic CycleGAN translate at 256x256 with batch 1 (official code,
# report 001), the segmenter with batch 2 (report 001). A new family gets its task's sizes with no entry here.
TASK_SIZES: dict[str, tuple[int, int, int]] = {
    "generate": (32, 64, 64),
    "translate": (64, 256, 1),
    "segment": (64, 256, 2),
}
# where a family needs other sizes: U-GAT-IT's 7-layer global D needs 128 px at the small size
SIZE_OVERRIDES: dict[str, tuple[int, int, int]] = {"ugatit": (128, 256, 1)}
FAMILY_NAMES = tuple(FAMILIES)  # every registered family is benchmarked


def sizes_of(family: str) -> tuple[int, int, int]:
    """(small side, report side, batch) of a family's benchmark cases."""
    return SIZE_OVERRIDES.get(family) or TASK_SIZES[FAMILIES[family].task]


# the report preset, plus what a benchmark needs: semantic-cyclegan's frozen segmenter with random weights (the
# cost of a trained one is the same); the report's U-Net depth (8 downsamplings) needs 256 px, 6 fit 64 px
EXTRA: dict[tuple[str, str], dict[str, Any]] = {
    ("semantic-cyclegan", "small"): {"segmenter": RANDOM, "num_downs": 6},
    ("semantic-cyclegan", "report"): {"segmenter": RANDOM},
}


def cases(families: list[str], sizes: list[str]) -> list[Case]:
    out = []
    for fam in families:
        small, report, batch = sizes_of(fam)
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
                b["labels"] = torch.stack(
                    [torch.randint(0, len(v), (batch,), generator=g) for v in data.attributes.values()], 1
                )
            if data.num_classes:
                b["mask"] = mask()
        out.append(b)
    return out


def build(spec: FamilySpec, fam_cfg: Any, data: DataSpec, device: torch.device, loop: SimpleNamespace) -> GanState:
    torch.manual_seed(0)
    state = spec.build(fam_cfg, data)
    place(state, device, 1, loop, uncompilable(spec, fam_cfg))  # type: ignore[arg-type]
    for net in state.nets.values():
        net.train()
    return state


def gansvc_runner(
    spec: FamilySpec, state: GanState, fam_cfg: Any, device: torch.device, loop: SimpleNamespace
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


def reference_runner(
    family: str, state: GanState, fam_cfg: Any, device: torch.device
) -> Callable[[dict[str, torch.Tensor], int], dict[str, float]]:
    ref = REFERENCES[family]

    def run(batch: dict[str, torch.Tensor], step: int) -> dict[str, float]:
        ref(state, {k: v.to(device) for k, v in batch.items()}, fam_cfg)
        return {}

    return run


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(
    run: Callable[[dict[str, torch.Tensor], int], Any],
    batches: list[dict[str, torch.Tensor]],
    k: int,
    start: int,
    device: torch.device,
) -> float:
    _sync(device)
    t0 = time.perf_counter()
    for i in range(k):
        run(batches[(start + i) % len(batches)], start + i)
    _sync(device)
    return time.perf_counter() - t0


def compare(
    runners: dict[str, Callable],
    batches: list[dict[str, torch.Tensor]],
    samples: int,
    device: torch.device,
    round_s: float,
    rounds: int,
    warmup: int,
) -> dict[str, dict[str, float]]:
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
        out[name] = {
            "per_s": statistics.median(rates[name]),
            "vs_first": statistics.median(ratios),
            "steps_per_round": k,
            "rounds": rounds,
        }
    return out


def loss_check(
    spec: FamilySpec,
    fam_cfg: Any,
    data: DataSpec,
    batches: list[dict[str, torch.Tensor]],
    device: torch.device,
    variant: SimpleNamespace,
    steps: int,
) -> dict[str, float]:
    """The same `steps` steps (same initial weights, batches and noise seeds) in fp32 and under `variant`: the mean
    of each loss over the last half, and the largest relative difference between the two. GAN losses wander, so
    "same within noise" is judged against the spread of the fp32 run itself (its std over the same window)."""
    curves = []
    for loop in (SimpleNamespace(loop=LoopConfig(max_steps=1, amp=False, channels_last=False, compile=False)), variant):
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


# ---- one cell per GPU switch (bench/gpu_check.py): each switch alone and together, timed one after the other ------
# The cells run the loop's own placement and step (`place`, `device_batch`, `autocast_for`, `spec.train_step`). Two
# things the loop cannot be asked for are done here: a torch.compile mode other than the default (LoopConfig.compile
# has no mode; "reduce-overhead" = CUDA graphs) and, for the CPU dry run only, the switches the loop ignores on CPU
# (bf16 autocast on CPU, channels_last, torch.compile), so the dry run exercises the same code paths.


@dataclass(frozen=True)
class Switches:
    amp: bool = False
    channels_last: bool = False
    compile: bool = False
    compile_mode: str | None = None  # None: torch.compile's default mode (what loop.compile does)

    def loop(self) -> SimpleNamespace:
        """The loop config of these switches (a non-default compile mode is applied by `build_switched`)."""
        return SimpleNamespace(
            loop=LoopConfig(
                max_steps=1,
                amp=self.amp,
                channels_last=self.channels_last,
                compile=self.compile and self.compile_mode is None,
            )
        )


SWITCHES: dict[str, Switches] = {
    "fp32": Switches(),
    "bf16": Switches(amp=True),
    "channels_last": Switches(channels_last=True),
    "compile": Switches(compile=True),
    "all": Switches(amp=True, channels_last=True, compile=True),
    # CUDA graphs through torch.compile: where they help is the launch-bound batch-1 translation step
    "all+cudagraphs": Switches(amp=True, channels_last=True, compile=True, compile_mode="reduce-overhead"),
}
# Loss-curve tolerance (see `curve_check`): a switch may move the curve by at most TWIN_FACTOR times the distance
# between two fp32 runs that differ only in their noise seed, and always by REL_FLOOR of the loss's size: bf16 keeps
# 8 significand bits (relative rounding 2^-8 = 0.4% per operation), so ~1-2% on a loss is rounding, not a bug.
TWIN_FACTOR, REL_FLOOR, ABS_FLOOR = 1.5, 0.02, 1e-4


def build_switched(
    spec: FamilySpec, fam_cfg: Any, data: DataSpec, device: torch.device, sw: Switches, backend: str = "inductor"
) -> GanState:
    state = build(spec, fam_cfg, data, device, sw.loop())  # on CUDA the loop's placement does channels_last/compile
    cpu = device.type != "cuda"
    if cpu and sw.channels_last:
        for name, net in state.nets.items():
            state.nets[name] = net.to(memory_format=torch.channels_last)
    if sw.compile and (cpu or sw.compile_mode or backend != "inductor"):
        mode = {"mode": sw.compile_mode} if backend == "inductor" and sw.compile_mode else {}
        eager = uncompilable(spec, fam_cfg)  # as the loop does: a gradient penalty's critic stays eager
        for name, net in state.nets.items():
            if name not in eager:
                state.nets[name] = torch.compile(net, backend=backend, **mode)
    return state


def switched_runner(
    spec: FamilySpec, state: GanState, fam_cfg: Any, device: torch.device, sw: Switches
) -> Callable[[dict[str, torch.Tensor], int], dict[str, float]]:
    """The loop's step under `sw` (no finite check: the loss-curve check reports non-finite losses)."""
    loop, cpu = sw.loop(), device.type != "cuda"
    graphs = not cpu and sw.compile and sw.compile_mode == "reduce-overhead"

    def run(batch: dict[str, torch.Tensor], step: int) -> dict[str, float]:
        b = device_batch(batch, device, loop)  # type: ignore[arg-type]
        if cpu and sw.channels_last:
            b = {k: v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v for k, v in b.items()}
        amp = torch.autocast("cpu", dtype=torch.bfloat16) if cpu and sw.amp else autocast_for(device, loop)  # type: ignore[arg-type]
        if graphs:  # a new step: CUDA-graph outputs of the previous one may be overwritten (its losses are floats)
            torch.compiler.cudagraph_mark_step_begin()
        with amp:
            return spec.train_step(state, b, step, fam_cfg)

    return run


def curve(
    run: Callable[[dict[str, torch.Tensor], int], dict[str, float]],
    batches: list[dict[str, torch.Tensor]],
    steps: int,
    seed: int,
) -> list[dict[str, float]]:
    torch.manual_seed(seed)  # the noise of the step (CPU and CUDA generators)
    return [run(batches[i % len(batches)], i) for i in range(steps)]


def curve_check(
    ref: list[dict[str, float]], twin: list[dict[str, float]], var: list[dict[str, float]]
) -> dict[str, Any]:
    """Is the variant's loss curve the fp32 curve within noise? `ref` and `var` start from the same weights, batches
    and noise seed; `twin` is fp32 again with another noise seed: an equally valid run. Per loss, the mean step-wise
    distance |var - ref| must be <= max(TWIN_FACTOR * mean |twin - ref|, REL_FLOOR * mean |ref| + ABS_FLOOR), and every
    loss of every step finite. A switch that only changes rounding starts near ref and drifts at most as far as
    another seed; a broken one (overflow, a norm layer in the wrong mode, a lost gradient) is far from step one."""
    finite = all(math.isfinite(v) for row in var for v in row.values())
    worst, worst_key = 0.0, ""
    for key in ref[0]:
        r = [row[key] for row in ref]
        d_var = statistics.fmean(abs(a[key] - b) for a, b in zip(var, r, strict=True))
        d_twin = statistics.fmean(abs(a[key] - b) for a, b in zip(twin, r, strict=True))
        tol = max(TWIN_FACTOR * d_twin, REL_FLOOR * statistics.fmean(abs(x) for x in r) + ABS_FLOOR)
        ratio = d_var / tol if math.isfinite(d_var) else math.inf
        if ratio >= worst:
            worst, worst_key = ratio, key
    ok = finite and worst <= 1.0
    return {
        "loss_finite": finite,
        "loss_dist_over_tol": worst,
        "loss_worst_key": worst_key,
        "loss_check": "pass" if ok else "fail",
        "loss_steps": len(var),
    }


def time_cell(
    run: Callable,
    batches: list[dict[str, torch.Tensor]],
    samples: int,
    device: torch.device,
    warmup: int,
    time_s: float,
    start: int,
) -> tuple[float, int]:
    """Samples/s after `warmup` untimed steps (compilation, cuDNN autotuning and CUDA-graph capture happen there):
    the median of 3 timed runs of k steps (k sized so the three last about `time_s`); synchronised at both ends."""
    timed(run, batches, warmup, start, device)
    one = timed(run, batches, 1, start + warmup, device)
    k = max(1, round(time_s / 3 / max(one, 1e-6)))
    step, rates = start + warmup + 1, []
    for _ in range(3):
        rates.append(k * samples / timed(run, batches, k, step, device))
        step += k
    return statistics.median(rates), k


def profile_cell(
    run: Callable, batches: list[dict[str, torch.Tensor]], device: torch.device, steps: int, path: Path, title: str
) -> Path:
    """torch.profiler over `steps` warm steps: the key_averages table, top 15 by CUDA time (CPU time on CPU)."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts) as prof:
        for i in range(steps):
            run(batches[i % len(batches)], 10_000 + i)
        _sync(device)
    table = prof.key_averages().table(sort_by="device_time_total" if cuda else "cpu_time_total", row_limit=15)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# {title}, {steps} steps\n{table}\n")
    return path


def switch_cells(
    case: Case,
    device: torch.device,
    names: list[str],
    loss_steps: int,
    time_s: float,
    emit: Callable[[dict[str, Any]], None],
    preset: str | None = None,
    backend: str = "inductor",
    target: float | None = None,
    target_speedup: float | None = None,
    profile_dir: Path | None = None,
    custom: Switches | None = None,
) -> list[dict[str, Any]]:
    """fp32 eager first (the reference: its loss curve, a second-seed twin, its rate), then each named switch cell:
    build, loss curve (which is also the warm-up and compilation), timing. Each row goes to `emit` as soon as it is
    measured, so a stage killed by its time budget keeps the cells it finished. When the best cell misses `target`
    (samples/s) or `target_speedup` (x fp32), its torch.profiler summary goes to `profile_dir`."""
    if names[0] != "fp32":
        raise ValueError("the first cell must be fp32 (the reference of the others)")
    spec = FAMILIES[case.family]
    fam_cfg = spec.make_config(preset or ("report" if "report" in spec.presets else None), case.overrides)
    data = data_spec(spec, case.side)
    batches = make_batches(spec, data, case.batch, 4, seed=0)
    if device.type == "cuda":  # pinned host memory: the copy in device_batch is asynchronous, as the pipeline's
        batches = [{k: v.pin_memory() for k, v in b.items()} for b in batches]
    unit = {"generate": "images", "translate": "pairs", "segment": "images"}[spec.task]
    steps = max(2, loss_steps)
    warmup = 5 if device.type == "cuda" else 1
    ref: list[dict[str, float]] = []
    twin: list[dict[str, float]] = []
    fp32_rate, best, rows = 0.0, None, []
    for name in names:
        sw = custom if name == "custom" and custom else SWITCHES[name]
        row: dict[str, Any] = {
            "family": case.family,
            "side": case.side,
            "batch": case.batch,
            "unit": unit,
            "variant": name,
            "switches": asdict(sw),
            "device": str(device),
            "compile_backend": backend if sw.compile else None,
            "load_avg_1m": common.load_avg(),
        }
        if sw.compile_mode == "reduce-overhead" and device.type != "cuda":
            emit(row | {"skipped": "CUDA graphs need a CUDA device (reduce-overhead does nothing on CPU)"})
            continue
        t0 = time.perf_counter()
        state = run = None
        try:
            state = build_switched(spec, fam_cfg, data, device, sw, backend)
            run = switched_runner(spec, state, fam_cfg, device, sw)
            cur = curve(run, batches, steps, seed=1)
            _sync(device)
            row["first_steps_s"] = time.perf_counter() - t0  # build + compile + the loss-curve steps
            if name == "fp32":
                ref = cur
                twin_state = build_switched(spec, fam_cfg, data, device, sw)
                twin = curve(switched_runner(spec, twin_state, fam_cfg, device, sw), batches, steps, seed=2)
                del twin_state
            row |= curve_check(ref, twin, cur)
            per_s, k = time_cell(run, batches, case.batch, device, warmup, time_s, steps)
        except Exception as err:
            if name == "fp32":
                raise  # no reference: nothing else can be judged
            import traceback

            traceback.print_exc()
            emit(row | {"error": f"{type(err).__name__}: {str(err)[:300]}", "loss_check": "error"})
            continue
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
        fp32_rate = fp32_rate or per_s
        row |= {"per_s": per_s, "speedup_vs_fp32": per_s / fp32_rate, "steps_per_run": k}
        emit(row)
        rows.append(row)
        if best is None or per_s > best[0]:
            best = (per_s, name, run)
        del state, run
    if best and profile_dir is not None:
        per_s, name, run = best
        missed = (target is not None and per_s < target) or (
            target_speedup is not None and per_s / max(fp32_rate, 1e-12) < target_speedup
        )
        if missed:
            path = profile_cell(
                run,
                batches,
                device,
                3 if device.type == "cuda" else 1,
                profile_dir / f"{case.family}-{case.side}px-{name}.txt",
                f"{case.family} {case.side}px batch {case.batch} {name}: {per_s:.1f} {unit}/s",
            )
            emit(
                {
                    "family": case.family,
                    "variant": name,
                    "profile": str(path),
                    "per_s": per_s,
                    "target_per_s": target,
                    "target_speedup": target_speedup,
                }
            )
    return rows


def run_case(
    case: Case, device: torch.device, quick: bool, loss_steps: int, preset: str | None = None, rounds: int | None = None
) -> list[dict[str, Any]]:
    spec = FAMILIES[case.family]
    preset = preset or ("report" if "report" in spec.presets else None)
    overrides = dict(case.overrides)
    if preset != "report" and "num_downs" in overrides:
        del overrides["num_downs"]  # the small-size U-Net depth belongs to the report preset
    fam_cfg = spec.make_config(preset, overrides)
    data = data_spec(spec, case.side)
    batches = make_batches(spec, data, case.batch, 4, seed=0)
    fp32 = SimpleNamespace(loop=LoopConfig(max_steps=1, amp=False, channels_last=False, compile=False))
    runners: dict[str, Callable] = {
        "gansvc": gansvc_runner(spec, build(spec, fam_cfg, data, device, fp32), fam_cfg, device, fp32)
    }
    if case.family in REFERENCES:
        runners["reference"] = reference_runner(case.family, build(spec, fam_cfg, data, device, fp32), fam_cfg, device)
    variants: dict[str, SimpleNamespace] = {}
    if device.type == "cuda":
        for name, kw in (
            ("bf16", {"amp": True}),
            ("channels_last", {"channels_last": True}),
            ("compile", {"compile": True}),
            ("all", {"amp": True, "channels_last": True, "compile": True}),
        ):
            loop = SimpleNamespace(
                loop=LoopConfig(max_steps=1, **({"amp": False, "channels_last": False, "compile": False} | kw))
            )
            variants[name] = loop
            runners[f"gansvc+{name}"] = gansvc_runner(
                spec, build(spec, fam_cfg, data, device, loop), fam_cfg, device, loop
            )
    res = compare(
        runners,
        batches,
        case.batch,
        device,
        round_s=1.0 if quick else 3.0,
        rounds=rounds or (3 if quick else 5),
        warmup=3 if device.type == "cuda" else 1,
    )
    # x reference from the per-round ratios (both are relative to gansvc fp32 of the same round): robust to load
    ref = res.get("reference", {}).get("vs_first")
    rows = []
    for name, r in res.items():
        row = {
            "family": case.family,
            "size": case.size,
            "side": case.side,
            "batch": case.batch,
            "unit": {"generate": "images", "translate": "pairs", "segment": "images"}[spec.task],
            "variant": name,
            "per_s": r["per_s"],
            "vs_gansvc_fp32": r["vs_first"],
            "vs_reference": r["vs_first"] / ref if ref else None,
            "steps_per_round": r["steps_per_round"],
            "rounds": r["rounds"],
            "device": str(device),
            "threads": torch.get_num_threads(),
            "load_avg_1m": common.load_avg(),
        }
        if name.startswith("gansvc+") and loss_steps:
            row |= loss_check(spec, fam_cfg, data, batches, device, variants[name.split("+", 1)[1]], loss_steps)
        rows.append(row)
    return rows


def setup_device(args: argparse.Namespace) -> torch.device | None:
    """The --device to time on, set up as the training loop sets it (None, with the reason printed: not usable)."""
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("--device cuda but no CUDA device is visible", file=sys.stderr)
        return None
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # fp32 means fp32
        torch.backends.cudnn.benchmark = True  # as the training loop sets it
    return device


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes only, short rounds")
    p.add_argument("--families", default=",".join(FAMILY_NAMES), help="comma-separated (default: all)")
    p.add_argument("--sizes", default=None, help="small,report (default: both; small with --quick)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    p.add_argument("--loss-steps", type=int, default=300, help="steps of each GPU switch's loss check (0: skip)")
    p.add_argument("--preset", default=None, help="family preset for every family (default: report)")
    p.add_argument("--rounds", type=int, default=None, help="timed rounds per runner (default 3 quick, 5 full)")
    p.add_argument("--out", default=None, help="results file (default bench/results/train.jsonl)")
    g = p.add_argument_group(
        "switch cells (bench/gpu_check.py): fp32 eager first, then each cell timed on its own, "
        "with its loss curve checked against fp32"
    )
    g.add_argument("--cells", default=None, help=f"comma-separated, from {', '.join(SWITCHES)} (fp32 is added first)")
    g.add_argument("--amp", choices=("bf16",), default=None, help="one custom cell: bf16 autocast ...")
    g.add_argument("--channels-last", action="store_true", help="... channels_last ...")
    g.add_argument("--compile", action="store_true", help="... torch.compile ...")
    g.add_argument("--compile-mode", default=None, help="... with this mode (reduce-overhead = CUDA graphs)")
    g.add_argument(
        "--compile-backend",
        default="inductor",
        help="torch.compile backend (aot_eager: no code generation, for quick CPU checks of the compile path)",
    )
    g.add_argument("--batch", type=int, default=None, help="batch per step (default: the family's)")
    g.add_argument("--side", type=int, default=None, help="image side (default: the size's)")
    g.add_argument("--time-s", type=float, default=3.0, help="timed seconds per cell")
    g.add_argument("--target-per-s", type=float, default=None, help="profile the best cell if it is slower")
    g.add_argument("--target-speedup", type=float, default=None, help="... or less than this x fp32")
    g.add_argument("--profile-dir", default=None, help="where profiles of missed targets go")
    args = p.parse_args()
    if args.cells or args.amp or args.channels_last or args.compile:
        return main_cells(args)
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    unknown = [f for f in families if f not in FAMILIES]
    sizes = (args.sizes or ("small" if args.quick else "small,report")).split(",")
    if unknown or not set(sizes) <= {"small", "report"}:
        print(
            f"unknown families {unknown} or sizes {sizes}: families are {', '.join(FAMILY_NAMES)}; sizes small,report",
            file=sys.stderr,
        )
        return 2
    device = setup_device(args)
    if device is None:
        return 2
    rows: list[dict[str, Any]] = []
    for case in cases(families, sizes):
        print(f"{case.family} {case.size} ({case.side}px, batch {case.batch}) ...", file=sys.stderr, flush=True)
        new = run_case(
            case, device, args.quick, args.loss_steps if device.type == "cuda" else 0, args.preset, args.rounds
        )
        for r in new:
            print(
                f"  {r['variant']:22} {r['per_s']:10.1f} {r['unit']}/s  x reference "
                f"{r['vs_reference'] or float('nan'):.2f}  load {r['load_avg_1m']}",
                file=sys.stderr,
                flush=True,
            )
        rows += new
    common.print_table(
        ("family", "size", "px", "batch", "variant", "per s", "unit", "x gansvc fp32", "x reference", "loss diff/se"),
        [
            (
                r["family"],
                r["size"],
                r["side"],
                r["batch"],
                r["variant"],
                r["per_s"],
                r["unit"],
                r["vs_gansvc_fp32"],
                r["vs_reference"],
                r.get("loss_diff_in_se"),
            )
            for r in rows
        ],
        title=f"training step throughput ({args.device}, {torch.get_num_threads()} threads)",
    )
    common.append_rows("train", rows, {"quick": args.quick, "preset": args.preset or "report"}, args.out)
    return 0


def main_cells(args: argparse.Namespace) -> int:
    """--cells / --amp / --channels-last / --compile: the switch cells of each family at one size."""
    names = [n.strip() for n in (args.cells or "").split(",") if n.strip()]
    custom = None
    if args.amp or args.channels_last or args.compile:
        custom = Switches(
            amp=bool(args.amp), channels_last=args.channels_last, compile=args.compile, compile_mode=args.compile_mode
        )
        names.append("custom")
    bad = [n for n in names if n not in SWITCHES and n != "custom"]
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    sizes = (args.sizes or "report").split(",")
    if bad or [f for f in families if f not in FAMILIES] or len(sizes) != 1 or sizes[0] not in ("small", "report"):
        print(
            f"--cells: unknown cells {bad} (choose from {', '.join(SWITCHES)}), or families {families} / one size "
            f"{sizes} not known: families are {', '.join(FAMILY_NAMES)}; sizes small or report",
            file=sys.stderr,
        )
        return 2
    names = ["fp32"] + [n for n in names if n != "fp32"]
    device = setup_device(args)
    if device is None:
        return 2
    rows: list[dict[str, Any]] = []

    def emit(row: dict[str, Any]) -> None:
        common.append_rows("train-cells", [row], {"size": sizes[0], "preset": args.preset or "report"}, args.out)
        if "per_s" in row and "profile" not in row:
            print(
                f"  {row['variant']:15} {row['per_s']:12.1f} {row['unit']}/s  x fp32 {row['speedup_vs_fp32']:.2f}  "
                f"loss check {row['loss_check']} ({row['loss_dist_over_tol']:.2f} of tolerance)",
                file=sys.stderr,
                flush=True,
            )
        rows.append(row)

    for case in cases(families, sizes):
        case = Case(case.family, case.size, args.side or case.side, args.batch or case.batch, case.overrides)
        print(
            f"{case.family} ({case.side}px, batch {case.batch}) cells {', '.join(names)} ...",
            file=sys.stderr,
            flush=True,
        )
        switch_cells(
            case,
            device,
            names,
            args.loss_steps,
            args.time_s,
            emit,
            args.preset,
            args.compile_backend,
            args.target_per_s,
            args.target_speedup,
            Path(args.profile_dir) if args.profile_dir else None,
            custom,
        )
    common.print_table(
        ("family", "px", "batch", "cell", "per s", "unit", "x fp32", "loss check", "dist/tol"),
        [
            (
                r["family"],
                r["side"],
                r["batch"],
                r["variant"],
                r.get("per_s"),
                r["unit"],
                r.get("speedup_vs_fp32"),
                r.get("skipped") or r.get("error") or r.get("loss_check"),
                r.get("loss_dist_over_tol"),
            )
            for r in rows
            if "unit" in r
        ],
        title=f"switch cells ({args.device})",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
