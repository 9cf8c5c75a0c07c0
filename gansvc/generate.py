"""`python -m gansvc.generate --model NAME --n 64 --seed 0 [--labels k=v,...] [--grid] OUT_DIR`: offline generation.

Loads a registered model exactly as Serve does (`registry.load_model`), draws seeded latents (and labels), and writes
one PNG per image (`--grid`: also one grid). The same seed and model give the same images.
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gansvc.generate", description=__doc__.strip().splitlines()[0])
    p.add_argument("out_dir", help="local folder or s3:// prefix for the PNGs")
    p.add_argument("--model", required=True, help="registered model name (python -m gansvc.registry list)")
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--labels", default=None, help="attribute values, e.g. hair_color=blue,eye_color=red")
    p.add_argument("--grid", action="store_true", help="also write grid.png")
    p.add_argument("--registry", default=None, help="registry root (default $GANSVC_STORAGE/registry)")
    args = p.parse_args(argv)
    try:
        images = generate_images(args.model, args.n, args.seed, parse_labels(args.labels), args.registry)
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
