"""How recognisable the demo's dcgan samples are: the demo's data and batch, trained in-process, scored by a classifier.

The demo (`./dev demo`) trains dcgan for 3200 steps on `shapes` at 16 px (2,000 synthetic images: a circle, square or
triangle in red, green, blue or yellow on a noisy dark ground; seed 0, as `data synth shapes --size 16` writes them)
with a global batch of 64 (2 workers x 32); the former demo trained 400 steps at 32 px. Whether its grid shows
"recognisable shapes of every colour" (issue 14 §5) is measured here, so a change of a default or of the demo can be
judged by figures rather than by eye:

- the scorer: a small CNN trained on 10,000 other images of the same generator and size (seed 7) to tell the 12
  (shape, colour) classes apart; its held-out accuracy is printed (1.00 at 32 px);
- per run: 1,000 samples of G (eval mode, as `gansvc.generate` draws them) ->
  `confident`: the share the scorer assigns to one class with p > 0.9 (a recognisable shape of a clear colour);
  `coverage`: classes holding >= 3 % of the confident samples (12 = every shape in every colour);
  `IS`: the Inception-Score analogue exp(E KL(p(y|x) || p(y))) (Salimans et al. 2016), 12 at most;
  the shares of circles / squares / triangles among the confident samples.
  The real images' own scores are printed first (at 32 px: IS 11.9, confident 100 %, coverage 12).

`python tests/gate/shapes.py [--size 16 --steps 3200] [--seeds 0,1] [--set lr_g=5e-4 ...] [--preset NAME] [--work DIR]`
prints one line per seed and writes each 8 x 8 sample grid to DIR (default /tmp/gansvc-shapes-gate). The training is
the family's own `train_step` on in-memory batches with the data pipeline's horizontal flip: no Ray, no S3. On one
CPU thread a run takes about 5 minutes (3200 steps at 16 px, or 400 at 32 px), after 1-4 minutes of training the
scorer. Figures measured with it: REPRODUCING.md ("The demo's grid").
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from gansvc.data.spec import DataSpec
from gansvc.data.synth import COLORS, SHAPES, shape_item
from gansvc.families import FAMILIES
from gansvc.imaging import grid, to_uint8
from tests.gate.digits import inception_score

SIZE = 16  # the demo's (gansvc/demo.py: 16 px shapes, 3200 steps); --size 32 for the former demo
N_CLASSES = len(SHAPES) * len(COLORS)
CONFIDENT = 0.9  # p(y|x) above which a sample counts as a recognisable (shape, colour)
MIN_SHARE = 0.03  # a class is covered when it holds this share of the confident samples


def shapes_data(count: int, seed: int, size: int = SIZE, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """(images (N, size, size, 3) uint8, class = shape index * 4 + colour index) of `data synth shapes --seed SEED
    --size SIZE`."""
    images, classes = [], []
    for i in range(count):
        img, shape, color = shape_item(seed, split, i, size)
        images.append(np.asarray(img.convert("RGB")))
        classes.append(SHAPES.index(shape) * len(COLORS) + list(COLORS).index(color))
    return np.stack(images), np.array(classes)


def to_tensor(images: np.ndarray) -> Tensor:
    """uint8 NHWC -> float NCHW in [-1, 1] (the training pipeline's scaling)."""
    return torch.from_numpy(images).float().div(127.5).sub(1.0).permute(0, 3, 1, 2)


def scorer_net() -> nn.Module:
    def block(c_in: int, c_out: int) -> list[nn.Module]:
        return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]

    return nn.Sequential(
        *block(3, 32), nn.MaxPool2d(2), *block(32, 64), nn.MaxPool2d(2), *block(64, 64),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, N_CLASSES),
    )  # fmt: skip


def train_scorer(count: int = 10_000, epochs: int = 25, seed: int = 7, size: int = SIZE) -> tuple[nn.Module, float]:
    """(scorer in eval mode, held-out accuracy on 1,000 images of another seed)."""
    torch.manual_seed(seed)
    x, y = shapes_data(count, seed, size)
    xs, ys = to_tensor(x), torch.from_numpy(y)
    net = scorer_net()
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    for _ in range(epochs):
        net.train()
        for idx in torch.randperm(len(xs)).split(64):
            loss = nn.functional.cross_entropy(net(xs[idx]), ys[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    x_test, y_test = shapes_data(1000, seed + 1, size)
    with torch.no_grad():
        accuracy = float((net(to_tensor(x_test)).argmax(1).numpy() == y_test).mean())
    return net, accuracy


@dataclass(frozen=True)
class Scores:
    inception_score: float
    confident: float
    coverage: int
    shape_shares: tuple[float, ...]  # circles, squares, triangles among the confident samples

    def line(self) -> str:
        shares = " / ".join(f"{s:.0%}" for s in self.shape_shares)
        return (
            f"IS {self.inception_score:5.2f}  confident {self.confident:4.0%}  coverage {self.coverage:2d}/{N_CLASSES}"
            f"  circles / squares / triangles {shares}"
        )


def score(scorer: nn.Module, images: np.ndarray) -> Scores:
    with torch.no_grad():
        p = torch.softmax(scorer(to_tensor(images)), 1).double().numpy()
    sure = p.max(1) > CONFIDENT
    counts = np.bincount(p.argmax(1)[sure], minlength=N_CLASSES)
    n_sure = max(1, int(sure.sum()))
    coverage = int((counts >= MIN_SHARE * n_sure).sum()) if sure.any() else 0
    shares = tuple(float(v) / n_sure for v in counts.reshape(len(SHAPES), len(COLORS)).sum(1))
    return Scores(inception_score(p), float(sure.mean()), coverage, shares)


def train_dcgan(
    steps: int,
    seed: int,
    overrides: dict[str, object],
    preset: str | None,
    size: int = SIZE,
    batch: int = 64,
    count: int = 2000,
) -> np.ndarray:
    """Train dcgan as the demo does (its data, global batch, flip) and return 1,000 samples (N, size, size, 3)."""
    spec = FAMILIES["dcgan"]
    cfg = spec.make_config(preset, overrides)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    data = to_tensor(shapes_data(count, 0, size)[0])
    state = spec.build(cfg, DataSpec(layout="single", height=size, width=size, channels=3))
    for net in state.nets.values():
        net.train()
    order, pos = rng.permutation(len(data)), 0
    for step in range(steps):
        if pos + batch > len(order):  # a new epoch: reshuffle, drop the last partial batch (as the loader does)
            order, pos = rng.permutation(len(data)), 0
        real = data[order[pos : pos + batch]].clone()
        pos += batch
        flip = torch.rand(batch) < 0.5  # the pipeline's random horizontal flip
        real[flip] = real[flip].flip(-1)
        spec.train_step(state, {"image": real}, step, cfg)
    nets = state.inference_nets()
    for net in nets.values():
        net.eval()
    z = torch.randn(1000, cfg.latent_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = spec.generate(nets, z, None, cfg)
    return to_uint8(out)


def save_grid(images: np.ndarray, path: Path) -> None:
    """The first 64 images as an 8 x 8 grid, 512 px wide (nearest neighbour) to be looked at."""
    grid(to_tensor(images[:64]), nrow=8, pad=0).resize((512, 512), Image.Resampling.NEAREST).save(path)


def parse_sets(items: list[str]) -> dict[str, object]:
    """`--set key=value` (value parsed as JSON when it can be: 5e-4, true, [0.5, 0.99]) -> overrides."""
    out: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set {item!r}: write key=value, e.g. --set lr_g=5e-4")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--steps", type=int, default=3200, help="training steps (the demo's: 3200)")
    p.add_argument("--size", type=int, default=SIZE, help="image size (the demo's: 16; the former demo's: 32)")
    p.add_argument("--seeds", default="0", help="comma-separated training seeds")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="dcgan config override")
    p.add_argument("--preset", default=None, help="dcgan preset (default: the defaults)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--quick", action="store_true", help="a rough scorer (1,500 images, 4 epochs): to check the tool")
    p.add_argument("--work", type=Path, default=Path("/tmp/gansvc-shapes-gate"), help="where the grids go")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    overrides = parse_sets(args.set)
    args.work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    scorer, accuracy = train_scorer(1500, 4, size=args.size) if args.quick else train_scorer(size=args.size)
    print(f"scorer: held-out accuracy {accuracy:.3f} ({time.perf_counter() - t0:.0f} s)")
    print(f"{'real shapes':<22} {score(scorer, shapes_data(1000, 9, args.size)[0]).line()}")
    label = ",".join(f"{k}={v}" for k, v in overrides.items()) or (args.preset or "defaults")
    for seed in (int(s) for s in args.seeds.split(",")):
        t = time.perf_counter()
        samples = train_dcgan(args.steps, seed, overrides, args.preset, args.size)
        save_grid(samples, args.work / f"grid-{args.size}px-{args.steps}-seed{seed}.png")
        print(f"{f'seed {seed}':<22} {score(scorer, samples).line()}  ({time.perf_counter() - t:.0f} s)  [{label}]")
    print(f"grids: {args.work}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
