"""GPU paths of the training loop (bf16 autocast, channels_last, torch.compile, NCCL): skipped without CUDA."""

from __future__ import annotations

import pytest
import torch

from gansvc.families import FAMILIES

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_step_under_bf16_autocast_and_channels_last(family: str) -> None:
    from gansvc.data.spec import DataSpec

    spec = FAMILIES[family]
    cfg = spec.make_config("smoke")
    layout = "unpaired" if spec.task in ("translate", "segment") else "single"
    data = DataSpec(layout, 32, 32, 3, {"a": ("x", "y")} if spec.conditional else {})
    state = spec.build(cfg, data)
    for name, net in state.nets.items():
        state.nets[name] = net.cuda().to(memory_format=torch.channels_last)
    for name, net in state.ema.items():
        state.ema[name] = net.cuda()
    images = (torch.rand(4, 3, 32, 32, device="cuda") * 2 - 1).contiguous(memory_format=torch.channels_last)
    batch = {"A": images, "B": images.flip(0)} if layout == "unpaired" else {"image": images}
    if spec.conditional:
        batch["labels"] = torch.randint(0, 2, (4, 1), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = spec.train_step(state, batch, 0, cfg)
    assert out and all(torch.isfinite(torch.tensor(v)) for v in out.values())


def test_train_cli_on_gpu(ray_stack, s3_prefix: str) -> None:  # noqa: ANN001
    """One GPU worker through Ray Train (NCCL backend), with compile on."""
    from gansvc.data.ingest import put
    from gansvc.data.synth import synth
    from gansvc.train.__main__ import main

    put(str(synth("shapes", count=64, size=32, seed=0)), f"{s3_prefix}/shapes", quiet=True)
    code = main(["dcgan", "--dataset", f"{s3_prefix}/shapes", "--storage", s3_prefix, "--name", "gpu",
                 "--preset", "smoke", "--max-steps", "20", "--batch-size", "16", "--gpus-per-worker", "1",
                 "--set", "loop.compile=true", "--checkpoint-every", "20", "--eval-every", "20"])
    assert code == 0
