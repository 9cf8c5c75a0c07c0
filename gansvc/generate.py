"""`python -m gansvc.generate --model NAME --n 64 --seed 0 [--labels k=v,...] [--grid] OUT_DIR`: offline generation.

Loads a registered model exactly as Serve does (`registry.load_model`), draws seeded latents (and labels), and writes
one PNG per image (`--grid`: also one grid). The same seed and model give the same images.

`python -m gansvc.generate --model NAME --interpolate SEED_A SEED_B --steps N [--method slerp|lerp]
[--labels k=v,... [--labels k=v,...]] --out FILE.png|.webp|.gif`: a latent walk from seed A's image to seed B's, the
frames Serve's POST /v1/models/NAME/interpolate makes (the same `sampling.walk_inputs`), written as a grid PNG or an
animated WebP / GIF (the format from FILE's suffix).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from gansvc import storage
from gansvc.checkpoint_layout import CheckpointError
from gansvc.registry import RegistryError, load_model

if TYPE_CHECKING:
    import torch


def parse_labels(text: str | None) -> dict[str, str]:
    """`hair_color=blue,eye_color=red` -> dict; a clear error for anything else."""
    if not text:
        return {}
    out = {}
    for item in text.split(","):
        if "=" not in item:
            raise ValueError(f"--labels {text!r}: write attribute=value pairs separated by commas")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def generate_images(
    model_name: str, n: int, seed: int, labels: dict[str, str], registry: str | None = None, device: str = "cpu"
) -> torch.Tensor:
    # torch and the samplers imported here, not at module level: `--help` and argument errors start in well under a
    # second without them
    import torch

    from gansvc.families.sampling import encode_labels, sample_latents

    with torch.inference_mode():
        _, model = load_model(model_name, registry, device)
        if model.spec.task != "generate" or model.spec.generate is None:
            raise ValueError(
                f"{model_name} is a {model.spec.task} model ({model.spec.name}): use python -m "
                "gansvc.translate for image-to-image models"
            )
        if n < 1:
            raise ValueError("--n must be at least 1")
        z = sample_latents(model.config, n, seed, device)
        y = None
        if model.spec.conditional:
            y = encode_labels(model.data, [labels] * n, seed=seed, device=device)  # unnamed attributes: seeded draws
        elif labels:
            raise ValueError(f"{model_name} is not label-conditioned: drop --labels")
        return model.spec.generate(model.nets, z, y, model.config)


WALK_SUFFIXES = {".png": "grid", ".webp": "webp", ".gif": "gif"}
MAX_STEPS = 4096  # as Serve's cap on images per request (MAX_N_CAP)


def interpolate_images(
    model_name: str,
    seeds: tuple[int, int],
    steps: int,
    method: str = "slerp",
    labels: list[dict[str, str]] | None = None,
    registry: str | None = None,
    device: str = "cpu",
) -> torch.Tensor:
    """The frames (steps, C, H, W) of a latent walk from seed A to seed B: `sampling.walk_inputs`, one forward pass."""
    import torch

    from gansvc.families.sampling import walk_inputs

    with torch.inference_mode():
        _, model = load_model(model_name, registry, device)
        if model.spec.task != "generate" or model.spec.generate is None:
            raise ValueError(
                f"{model_name} is a {model.spec.task} model ({model.spec.name}): --interpolate needs a generation model"
            )
        if not model.spec.conditional and labels:
            raise ValueError(f"{model_name} is not label-conditioned: drop --labels")
        data = model.data if model.spec.conditional else None
        z, y = walk_inputs(model.config, seeds, steps, method, data, labels if data is not None else None)
        return model.spec.generate(model.nets, z.to(device), None if y is None else y.to(device), model.config)


def _walk(args: argparse.Namespace, p: argparse.ArgumentParser) -> int:
    if not args.out:
        p.error("--interpolate needs --out FILE (.png: a grid, .webp / .gif: an animation)")
    if args.out_dir:
        p.error(f"--interpolate writes one file (--out): drop the positional {args.out_dir!r}")
    fmt = WALK_SUFFIXES.get(Path(args.out).suffix.lower())
    if fmt is None:
        p.error(f"--out {args.out!r}: the suffix picks the format, one of {', '.join(WALK_SUFFIXES)}")
    if not 2 <= args.steps <= MAX_STEPS:
        p.error(f"--steps {args.steps}: give 2 to {MAX_STEPS} frames (both ends included)")
    if any(s < 0 or s > 2**63 - 1 for s in args.interpolate):
        p.error(f"--interpolate {args.interpolate[0]} {args.interpolate[1]}: seeds are integers from 0 to 2**63 - 1")
    given = args.labels or []
    if len(given) > 2:
        p.error("--labels: give it once (both ends) or twice (seed A's, then seed B's)")
    try:
        ends = [parse_labels(t) for t in given]
        labels = None if not ends else ends * 2 if len(ends) == 1 else ends
        images = interpolate_images(
            args.model, (args.interpolate[0], args.interpolate[1]), args.steps, args.method, labels, args.registry
        )
    except (ValueError, RegistryError, CheckpointError, storage.StorageError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from gansvc.imaging import WALK_MEDIA_TYPES, walk_bytes  # torch: deferred as in generate_images

    uri = storage.parse_uri(args.out)
    if not uri.is_s3:
        Path(uri.path).parent.mkdir(parents=True, exist_ok=True)
    storage.write_bytes(uri.uri(), walk_bytes(images, fmt), WALK_MEDIA_TYPES[fmt])
    print(f"wrote {args.steps} frames ({args.method}, {fmt}) to {uri.uri()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gansvc.generate", description=__doc__.strip().splitlines()[0])
    p.add_argument("out_dir", nargs="?", help="local folder or s3:// prefix for the PNGs")
    p.add_argument("--model", required=True, help="registered model name (python -m gansvc.registry list)")
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--labels",
        action="append",
        default=None,
        help="attribute values, e.g. hair_color=blue,eye_color=red; with --interpolate: once for both ends, or twice "
        "(seed A's, then seed B's; frames before the midpoint take A's)",
    )
    p.add_argument("--grid", action="store_true", help="also write grid.png")
    p.add_argument("--registry", default=None, help="registry root (default $GANSVC_STORAGE/registry)")
    p.add_argument(
        "--interpolate",
        nargs=2,
        type=int,
        metavar=("SEED_A", "SEED_B"),
        help="a latent walk from seed A's image to seed B's, written to --out (see --steps, --method)",
    )
    p.add_argument("--steps", type=int, default=8, help="--interpolate: frames, both ends included (default 8)")
    p.add_argument(
        "--method",
        choices=("slerp", "lerp"),
        default="slerp",
        help="--interpolate: slerp (spherical, keeps the latents' norm; default) or lerp (straight line)",
    )
    p.add_argument("--out", default=None, help="--interpolate: FILE.png (grid), .webp or .gif (animation), or s3://")
    args = p.parse_args(argv)
    if args.interpolate is not None:
        return _walk(args, p)
    if not args.out_dir:
        p.error("give OUT_DIR (a folder or s3:// prefix for the PNGs), or --interpolate SEED_A SEED_B --out FILE")
    if args.labels is not None and len(args.labels) > 1:
        p.error("--labels: give it once (every image gets those attribute values)")
    try:
        labels_text = args.labels[0] if args.labels else None
        images = generate_images(args.model, args.n, args.seed, parse_labels(labels_text), args.registry)
    except (ValueError, RegistryError, CheckpointError, storage.StorageError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = storage.parse_uri(args.out_dir)
    if not out.is_s3:
        Path(out.path).mkdir(parents=True, exist_ok=True)
    from gansvc.imaging import grid, png_bytes, to_pil, to_uint8  # torch: deferred as in generate_images

    paths = []
    for i, arr in enumerate(to_uint8(images)):
        uri = out.join(f"{args.model}-seed{args.seed}-{i:04d}.png").uri()
        storage.write_bytes(uri, png_bytes(to_pil(arr)), "image/png")
        paths.append(uri)
    if args.grid:
        uri = out.join(f"{args.model}-seed{args.seed}-grid.png").uri()
        storage.write_bytes(uri, png_bytes(grid(images)), "image/png")
        paths.append(uri)
    print(f"wrote {len(paths)} file(s) to {out.uri()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
