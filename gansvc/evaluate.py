"""`python -m gansvc.evaluate --model NAME --dataset URI [--n 10000]`: FID / KID / IS of any registered model, with
the protocol of published numbers (gansvc.metrics: the TF FID Inception through torch-fidelity by default).

- generate families: `--n` samples (seeded latents, and uniformly drawn labels for conditional models) against the
  dataset's images of `--split` (default: test when the dataset has one, else train).
- translate families: the translations of every source test image (up to `--n`) against the target domain's test
  images, per direction the model has (a2b: testA -> vs testB; b2a: testB -> vs testA); `kid_x100` is KID x 100, the
  unit of the U-GAT-IT tables.
- conditional (label) models, e.g. acgan / wacgan: also the intra-FID of Miyato & Koyama 2018 ("cGANs with Projection
  Discriminator", sec. 5): per class of the first attribute, FID of the samples generated with that class against the
  dataset's images of that class, and their mean. (A registered model holds only its inference nets, not the
  discriminator's auxiliary classifier, so the classifier accuracy of the ACGAN paper cannot be reported.)

Prints a table and the protocol (`--json`: one JSON document). Without Inception weights only SWD is computed, and the
output says so and how to get the weights. Exit status 2 on bad input (unknown model, dataset of the wrong layout).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np

from gansvc import storage
from gansvc.checkpoint_layout import CheckpointError
from gansvc.metrics import DEFAULT_EXTRACTOR, EXTRACTORS
from gansvc.registry import RegistryError, load_model

# torch, the data pipeline, the samplers and the metrics' computing parts are imported in the functions that compute,
# not here: `--help` and argument errors start in well under a second without them
if TYPE_CHECKING:
    import torch

    from gansvc.checkpoint import InferenceModel
    from gansvc.data.pipeline import DataConfig, ImageDataset
    from gansvc.families.base import Direction

SCALED = {"kid": 100.0}  # reported also as <name>_x100 (U-GAT-IT tables give KID x 100)


class EvaluateError(ValueError):
    """Bad input to gansvc.evaluate; the message says what was wrong and what to do."""


def _data_config(uri: str, model: InferenceModel, split: str | None) -> DataConfig:
    """The dataset at the model's image size, split `split` (None: test when there is one), fixed order."""
    from gansvc.data.pipeline import DataConfig, ImageDataset  # deferred: see the imports

    d = model.data
    # DataConfig validates the count at run time (1 or 3; another is its ValidationError, as before the cast)
    channels = cast("Literal[1, 3]", d.channels)
    base = DataConfig(uri=uri, size=(d.height, d.width), channels=channels, flip=False, crop="center")
    try:
        manifest = ImageDataset(base).manifest
    except (ValueError, FileNotFoundError, storage.StorageError) as err:
        raise EvaluateError(f"cannot read dataset {uri}: {err}") from None
    if manifest.layout != d.layout:
        want = "one image folder per split" if d.layout == "single" else "trainA/trainB and testA/testB"
        raise EvaluateError(
            f"{uri} is a {manifest.layout!r} dataset, but {model.spec.name} models need "
            f"{d.layout!r} data ({want}): give a dataset of that layout (python -m gansvc.data info "
            "URI shows a dataset's layout)"
        )
    names = ("test",) if d.layout == "single" else ("testA", "testB")
    if split is None:
        split = "test" if all(n in manifest.splits for n in names) else "train"
    return base.model_copy(update={"split": split})


def _images(ds: ImageDataset, stream: str, files: list[str], batch: int) -> Iterator[torch.Tensor]:
    """The images of `files` (one stream), in order, `batch` at a time, as the training pipeline decodes them."""
    import torch  # deferred: see the imports

    from gansvc.data.pipeline import Sample

    for start in range(0, len(files), batch):
        chunk = files[start : start + batch]
        yield torch.stack([ds.load_sample(Sample({stream: f}), np.random.default_rng(0))[stream] for f in chunk])


def _with_x100(results: dict[str, float], suffix: str = "") -> dict[str, float]:
    out = {}
    for k, v in results.items():
        out[f"{k}{suffix}"] = v
        if k in SCALED:
            out[f"{k}_x100{suffix}"] = v * SCALED[k]
    return out


def _generator(
    model: InferenceModel, seed: int, device: str, fixed_class: int | None = None
) -> Callable[[int], torch.Tensor]:
    from gansvc.families.sampling import sample_labels, sample_latents  # deferred: see the imports

    generate = model.spec.generate
    assert generate is not None, f"{model.spec.name} does not generate"  # run() calls this for generate families
    drawn = [0]

    def sample(n: int) -> torch.Tensor:
        s = seed + drawn[0]
        drawn[0] += n
        z = sample_latents(model.config, n, s, device)
        labels = sample_labels(model.data, n, s, device) if model.spec.conditional else None
        if labels is not None and fixed_class is not None:
            labels[:, 0] = fixed_class
        return generate(model.nets, z, labels, model.config).float()

    return sample


def _translator(
    model: InferenceModel, ds: ImageDataset, stream: str, direction: Direction, n: int, batch: int, device: str
) -> Callable[[int], torch.Tensor]:
    import torch  # deferred: see the imports

    translate = model.spec.translate
    assert translate is not None, f"{model.spec.name} does not translate"  # run() calls this for translate families
    sources = _images(ds, stream, ds.streams[stream][:n], batch)
    buffer: list[torch.Tensor] = []

    def sample(k: int) -> torch.Tensor:
        while sum(len(b) for b in buffer) < k:
            buffer.append(next(sources))
        x = torch.cat(buffer)
        buffer[:] = [x[k:]] if len(x) > k else []
        return translate(model.nets, x[:k].to(device), direction, model.config)["image"].float()

    return sample


def _intra_fid(model: InferenceModel, cfg: DataConfig, extractor: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Intra-FID (Miyato & Koyama 2018): per value of the first attribute, FID of generated vs real of that class."""
    import torch  # deferred: see the imports

    from gansvc.data.pipeline import ImageDataset
    from gansvc.metrics import stats_from_batches
    from gansvc.metrics.distances import frechet_distance
    from gansvc.metrics.stats import FeatureStats

    ds = ImageDataset(cfg)
    attr, values = next(iter(model.data.attributes.items()))
    files = ds.streams["image"]
    per_class: dict[str, float] = {}
    skipped: list[str] = []
    counts: dict[str, list[int]] = {}
    for v_idx, value in enumerate(values):
        mine = [f for f in files if ds.labels.get(f, (-1,))[0] == v_idx][: args.n_real]
        n_gen = max(2, args.n_per_class)
        if len(mine) < 2:
            skipped.append(value)
            continue
        real = stats_from_batches(
            _images(ds, "image", mine, args.batch_size), extractor, args.batch_size, kid_keep=0, swd_n=1
        )
        stats: FeatureStats | None = None
        sample = _generator(model, args.seed + 7919 * (v_idx + 1), args.device, v_idx)
        for start in range(0, n_gen, args.batch_size):
            with torch.inference_mode():
                feats, _ = extractor.extract(sample(min(args.batch_size, n_gen - start)), args.batch_size)
            stats = stats or FeatureStats(feats.shape[1], keep=0)
            stats.update(feats)
        assert stats is not None  # n_gen >= 2: the loop ran
        assert real.mu is not None and real.sigma is not None  # computed with the extractor, of >= 2 images
        per_class[value] = frechet_distance(stats.mean, stats.cov, real.mu, real.sigma)
        counts[value] = [len(mine), n_gen]
    if not per_class:
        return {}
    return {
        "intra_fid": float(np.mean(list(per_class.values()))),
        "protocol": {
            "attribute": attr,
            "fid_per_class": per_class,
            "n_real_and_generated": counts,
            "skipped_classes_under_2_real_images": skipped,
            "definition": "mean over classes of FID(generated with class c, real of class c), Miyato & Koyama 2018",
        },
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The evaluation document (what --json prints)."""
    import torch  # deferred: see the imports

    from gansvc.metrics import IS_SHUFFLE_SEED, KID_SEED, evaluate_with_protocol, load_inception, reference_stats

    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        entry, model = load_model(args.model, args.registry, args.device)
    except (RegistryError, CheckpointError) as err:
        raise EvaluateError(str(err)) from None
    cfg = _data_config(args.dataset, model, args.split)
    extractor, message = load_inception(args.inception, args.device, args.extractor)
    doc: dict[str, Any] = {
        "model": args.model,
        "version": entry.get("version"),
        "family": model.spec.name,
        "task": model.spec.task,
        "dataset": args.dataset,
        "split": cfg.split,
        "weights": message,
        "results": {},
        "protocol": {},
        "notes": [],
    }
    if extractor is None:
        doc["notes"].append(f"FID/KID/IS NOT computed: {message}. Only SWD is reported.")
    common = {
        "batch_size": args.batch_size,
        "kid_subsets": args.kid_subsets,
        "kid_subset_size": args.kid_subset_size,
        "is_splits": args.is_splits,
        "kid_seed": KID_SEED,
        "is_shuffle_seed": IS_SHUFFLE_SEED,
    }
    with torch.inference_mode():
        if model.spec.task == "generate":
            real = reference_stats(cfg, extractor, args.n_real, "image", batch_size=args.batch_size, quiet=args.json)
            results, proto = evaluate_with_protocol(
                _generator(model, args.seed, args.device), real, extractor, args.n, task="generate", **common
            )
            doc["results"], doc["protocol"] = _with_x100(results), {**proto, "latent_seed": args.seed}
            if model.spec.conditional and extractor is not None and model.data.attributes and args.n_per_class > 0:
                intra = _intra_fid(model, cfg, extractor, args)
                if intra:
                    doc["results"]["intra_fid"] = intra["intra_fid"]
                    doc["protocol"]["intra_fid"] = intra["protocol"]
        else:
            _translate_all(model, entry, cfg, extractor, args, common, doc)
    return doc


def _translate_all(
    model: InferenceModel,
    entry: dict[str, Any],
    cfg: DataConfig,
    extractor: Any,
    args: argparse.Namespace,
    common: dict[str, Any],
    doc: dict[str, Any],
) -> None:
    from gansvc.data.pipeline import ImageDataset  # deferred: see the imports
    from gansvc.metrics import evaluate_with_protocol, reference_stats

    ds = ImageDataset(cfg)
    directions = list(entry.get("directions") or model.extra.get("directions") or ["a2b", "b2a"])
    for direction in directions:
        src, dst = ("A", "B") if direction == "a2b" else ("B", "A")
        n = min(args.n, len(ds.streams[src]))
        if n < 2:
            doc["notes"].append(f"{direction}: {cfg.split}{src} has {n} image(s); at least 2 are needed")
            continue
        real = reference_stats(cfg, extractor, args.n_real, dst, batch_size=args.batch_size, quiet=args.json)
        results, proto = evaluate_with_protocol(
            _translator(model, ds, src, direction, n, args.batch_size, args.device),
            real,
            extractor,
            n,
            task="translate",
            **common,
        )
        doc["results"].update(_with_x100(results, f"_{direction}"))
        doc["protocol"][direction] = {**proto, "sources": f"{cfg.split}{src}, first {n} in manifest order"}


def _fmt(v: Any) -> str:
    return f"{v:.6g}" if isinstance(v, float) and math.isfinite(v) else str(v)


def render(doc: dict[str, Any]) -> str:
    lines = [
        f"model {doc['model']} v{doc['version']} ({doc['family']}, {doc['task']}) on {doc['dataset']} "
        f"split {doc['split']}",
        f"weights: {doc['weights']}",
        "",
        f"{'metric':<22}value",
    ]
    lines += [f"{k:<22}{_fmt(v)}" for k, v in doc["results"].items()]
    lines += ["", "protocol:", json.dumps(doc["protocol"], indent=2, default=str)]
    lines += [f"note: {n}" for n in doc["notes"]]
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m gansvc.evaluate",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, help="registered model name (python -m gansvc.registry list)")
    p.add_argument("--dataset", required=True, help="dataset root (local folder or s3:// URI with manifest.json)")
    p.add_argument("--n", type=int, default=10_000, help="generated images (translate: at most this many sources)")
    p.add_argument("--n-real", type=int, default=50_000, help="at most this many real images for the statistics")
    p.add_argument(
        "--split",
        choices=["train", "test"],
        default=None,
        help="reference split (default: test when the dataset has one, else train)",
    )
    p.add_argument(
        "--registry", default=None, help="registry root (default $GANSVC_REGISTRY or $GANSVC_STORAGE/registry)"
    )
    p.add_argument(
        "--inception",
        default=None,
        help="local path or s3:// URI of the extractor's weights file "
        "(default: the torch hub cache, fetched when online)",
    )
    p.add_argument(
        "--extractor",
        choices=EXTRACTORS,
        default=DEFAULT_EXTRACTOR,
        help=f"feature extractor (default {DEFAULT_EXTRACTOR}: the one of published numbers)",
    )
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--seed", type=int, default=0, help="latent / label seed of the generated images")
    p.add_argument("--kid-subsets", type=int, default=100, help="KID subsets (torch-fidelity default 100)")
    p.add_argument(
        "--kid-subset-size",
        type=int,
        default=1000,
        help="KID subset size (torch-fidelity default 1000; clipped to the smaller set)",
    )
    p.add_argument("--is-splits", type=int, default=10, help="IS splits (default 10, as Salimans et al.)")
    p.add_argument(
        "--n-per-class",
        type=int,
        default=1000,
        help="conditional models: generated images per class for intra-FID (0: skip it)",
    )
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.n < 2 or args.n_real < 2 or args.batch_size < 1 or args.n_per_class < 0:
        print(
            "error: --n and --n-real must be at least 2, --batch-size at least 1, --n-per-class at least 0",
            file=sys.stderr,
        )
        return 2
    try:
        doc = run(args)
    except (EvaluateError, ValueError, storage.StorageError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(doc, indent=2, default=str) if args.json else render(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
