"""GPU paths of the training loop (bf16 autocast, channels_last, torch.compile, NCCL).

Collected everywhere: each GPU test has a CPU twin that builds the same case (family, config, data spec, batch) and runs
one step on the CPU, so a GPU test whose setup is broken fails on CPU CI too (issue 13 #18: the segmenter case built
a DataSpec without mask classes and could only fail on a GPU machine). The CUDA parts are skipped per test.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from gansvc import local
from gansvc.families import FAMILIES

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")
SIDE, BATCH, CLASSES = 32, 4, 3


def _case(family: str, device: str) -> tuple[Any, Any, Any, dict[str, torch.Tensor]]:
    """(spec, config, state, batch) of one train step of `family` on `device` (the data a real dataset gives it)."""
    from gansvc.data.spec import DataSpec, mask_key

    spec = FAMILIES[family]
    cfg = spec.make_config("smoke")
    layout = "unpaired" if spec.task in ("translate", "segment") else "single"
    masks = spec.task == "segment"  # a segmenter trains on masks: its data spec has classes, its batches masks
    data = DataSpec(
        layout, SIDE, SIDE, 3, {"a": ("x", "y")} if spec.conditional else {}, num_classes=CLASSES if masks else 0
    )
    state = spec.build(cfg, data)
    cuda = device == "cuda"
    fmt = torch.channels_last if cuda else torch.contiguous_format
    for name, net in state.nets.items():
        state.nets[name] = net.to(device, memory_format=fmt)
    for name, net in state.ema.items():
        state.ema[name] = net.to(device)
    gen = torch.Generator().manual_seed(0)
    images = (torch.rand(BATCH, 3, SIDE, SIDE, generator=gen) * 2 - 1).to(device).contiguous(memory_format=fmt)
    batch = {"A": images, "B": images.flip(0)} if layout == "unpaired" else {"image": images}
    if spec.conditional:
        batch["labels"] = torch.randint(0, 2, (BATCH, 1), generator=gen).to(device)
    if masks:
        for key in list(batch):
            batch[mask_key(key)] = torch.randint(0, CLASSES, (BATCH, SIDE, SIDE), generator=gen).to(device)
    return spec, cfg, state, batch


def _finite(out: dict[str, float]) -> bool:
    return bool(out) and all(torch.isfinite(torch.tensor(v)) for v in out.values())


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_gpu_case_builds_and_steps_on_cpu(family: str, one_torch_thread: None) -> None:
    """The CPU half of the GPU step test: the same case builds and trains one step (fp32, CPU)."""
    spec, cfg, state, batch = _case(family, "cpu")
    assert _finite(spec.train_step(state, batch, 0, cfg))


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_step_under_bf16_autocast_and_channels_last(family: str) -> None:
    spec, cfg, state, batch = _case(family, "cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = spec.train_step(state, batch, 0, cfg)
    assert _finite(out)


GPU_CLI = [
    "--preset",
    "smoke",
    "--max-steps",
    "20",
    "--batch-size",
    "16",
    "--gpus-per-worker",
    "1",
    "--set",
    "loop.compile=true",
    "--checkpoint-every",
    "20",
    "--eval-every",
    "20",
]


def test_gpu_cli_config_is_valid_on_cpu(tmp_path: Path) -> None:
    """The CPU half of the GPU CLI test: its flags make a valid config (GPU switches on) before anything runs."""
    from gansvc.train.__main__ import build_parser, config_from_args

    args = build_parser().parse_args(
        ["dcgan", "--dataset", "s3://b/shapes", "--storage", str(tmp_path), "--name", "gpu", *GPU_CLI]
    )
    cfg = config_from_args(args)
    assert cfg.scaling.use_gpu and cfg.scaling.gpus_per_worker == 1 and cfg.loop.compile and cfg.loop.max_steps == 20


@pytest.mark.gpu
@needs_cuda
def test_train_cli_on_gpu(ray_stack: local.StackState, s3_prefix: str, synth_put: Callable[..., str]) -> None:
    """One GPU worker through Ray Train (NCCL backend), with compile on."""
    from gansvc.train.__main__ import main

    synth_put("shapes", f"{s3_prefix}/shapes", count=64, size=32, seed=0)
    code = main(["dcgan", "--dataset", f"{s3_prefix}/shapes", "--storage", s3_prefix, "--name", "gpu", *GPU_CLI])
    assert code == 0
