"""`python -m gansvc.demo`: the end-to-end story on the embedded stack, in a few minutes on a laptop CPU.

Start the stack, write the synthetic datasets to its S3, run the input pipeline as a Ray job, train a dcgan (noise ->
image) and a cyclegan (image -> image) with `ray job submit` (2 DDP workers each), promote both into the registry,
run offline generation and translation through the registry, serve both with Ray Serve and call both HTTP endpoints.
Everything it made lands in `demo-output/`.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from PIL import Image

from gansvc import local, storage
from gansvc.data.manifest import read_manifest


def activate_hint(env: dict[str, str] | None = None) -> str | None:
    """The command that puts this interpreter's `python` and `ray` first on PATH (`source .venv/bin/activate`), or
    None when a shell already finds them there (outside .venv, bare `python` lacks the dependencies and `ray` is
    not found)."""
    bindir = Path(sys.executable).parent
    path = (env if env is not None else os.environ).get("PATH", "")
    found = [shutil.which(tool, path=path) for tool in ("python", "ray")]
    if all(f is not None and Path(f).parent == bindir for f in found):
        return None
    activate = bindir / "activate"
    if activate.exists():
        return f"source {shlex.quote(str(_relative(activate)))}"
    return f'export PATH={shlex.quote(str(bindir))}:"$PATH"'


def _relative(path: Path) -> Path:
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path


def _step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def _run(cmd: list[str], env: dict[str, str]) -> None:
    print("$ " + shlex.join(cmd), flush=True)
    subprocess.run(cmd, check=True, env=env)


def _http(url: str, body: bytes, content_type: str, out: Path) -> None:
    """POST to the running service and save the image it returns."""
    request = urllib.request.Request(url, data=body, headers={"content-type": content_type}, method="POST")
    print(f"$ POST {url}", flush=True)
    with urllib.request.urlopen(request, timeout=120) as resp:
        out.write_bytes(resp.read())
    print(f"  -> {out} ({resp.status}, {resp.headers.get('content-type')})")


def viewable(png: bytes, min_width: int = 384) -> bytes:
    """A PNG scaled up by a whole factor (nearest neighbour: every pixel stays a visible square) until it is at least
    `min_width` wide: the 16 px dcgan's 8 x 8 sample grid is 146 px, too small to judge by eye."""
    img = Image.open(io.BytesIO(png))
    factor = -(-min_width // max(1, img.width))
    if factor <= 1:
        return png
    out = io.BytesIO()
    img.resize((img.width * factor, img.height * factor), Image.Resampling.NEAREST).save(out, format="PNG")
    return out.getvalue()


def _loop_flags(every: int, log_every: int) -> list[str]:
    """The demo's training flags: 2 DDP workers, a checkpoint and an evaluation every `every` steps."""
    n = str(every)
    return ["--num-workers", "2", "--checkpoint-every", n, "--eval-every", n, "--log-every", str(log_every)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gansvc.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", type=Path, default=None, help="embedded stack state (default ~/.gansvc/local)")
    parser.add_argument("--out", type=Path, default=Path("demo-output"), help="where results land locally")
    parser.add_argument("--count", type=int, default=2000, help="synthetic training images per domain")
    parser.add_argument("--steps", type=int, default=3200, help="training steps of the dcgan (16 px shapes)")
    parser.add_argument("--cyclegan-steps", type=int, default=200, help="training steps of the cyclegan")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    state_dir = (args.state_dir or local.default_state_dir()).expanduser().resolve()

    _step("1. embedded stack: S3 server + Ray head on 127.0.0.1")
    try:
        state = local.up(state_dir)
    except local.StackError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("\n".join(local.status_lines(state)))
    env = {**os.environ, **state.env()}
    os.environ.update(state.env())
    py = sys.executable
    bucket = f"s3://{state.bucket}"

    _step("2. synthetic datasets into S3 (deterministic; a re-run is a no-op)")
    # shapes at 16 px (see step 4 for why); its own name, so a `shapes` dataset written at another size stays as it is
    shapes = f"{bucket}/datasets/shapes16"
    _run([py, "-m", "gansvc.data", "synth", "shapes", shapes, "--count", str(args.count), "--size", "16"], env)
    _run(
        [py, "-m", "gansvc.data", "synth", "stripes", f"{bucket}/datasets/stripes", "--count", str(args.count // 2)],
        env,
    )

    _step("3. the training input pipeline as a Ray job (reads S3, writes previews to S3)")
    job = (
        f"python -m gansvc.data preview {shapes} {bucket}/demo/shapes-preview.png && "
        f"python -m gansvc.data preview {bucket}/datasets/stripes {bucket}/demo/stripes-preview.png --n 8"
    )
    ray = str(Path(py).parent / "ray")
    _run([ray, "job", "submit", "--", "bash", "-c", job], env)

    _step("4. train a noise -> image model (dcgan on shapes, 2 DDP workers) with `ray job submit`")
    # dcgan's default model (no --set): resize-convolution G without the checkerboard, ReLU in G, BN in D (see
    # gansvc/families/dcgan.py). A GAN needs thousands of steps before its samples have shapes: at 32 px, 400 steps
    # (the former demo) gave blobs, barely 14-28 % of them recognisable to a shape classifier and no triangle
    # (REPRODUCING.md, "The demo's grid"). A 16 px step costs a quarter of a 32 px one (about 760 vs 186 img/s on
    # 2 CPU workers), so 3200 steps at 16 px take about 1.7x the time of 400 at 32 px and show circles, squares and
    # triangles in all four colours.
    _run(
        [
            ray,
            "job",
            "submit",
            "--",
            "python",
            "-m",
            "gansvc.train",
            "dcgan",
            "--dataset",
            shapes,
            "--name",
            "demo-dcgan",
            "--max-steps",
            str(args.steps),
            "--batch-size",
            "32",
            *_loop_flags(max(1, args.steps // 4), max(1, args.steps // 8)),
        ],
        env,
    )

    _step("5. train a translation model (cyclegan on stripes: plain -> striped) the same way")
    _run(
        [
            ray,
            "job",
            "submit",
            "--",
            "python",
            "-m",
            "gansvc.train",
            "cyclegan",
            "--dataset",
            f"{bucket}/datasets/stripes",
            "--name",
            "demo-cyclegan",
            "--max-steps",
            str(args.cyclegan_steps),
            "--batch-size",
            "4",
            "--set",
            "model.ngf=16",
            "--set",
            "model.ndf=16",
            "--set",
            "model.n_blocks=3",
            *_loop_flags(100, 50),
        ],
        env,
    )

    _step("6. promote both into the model registry")
    _run([py, "-m", "gansvc.registry", "promote", "demo-dcgan", "--name", "shapes-dcgan"], env)
    _run([py, "-m", "gansvc.registry", "promote", "demo-cyclegan", "--name", "stripes-cyclegan"], env)
    _run([py, "-m", "gansvc.registry", "list"], env)

    _step("7. offline inference through the registry (the load path Serve uses)")
    args.out.mkdir(parents=True, exist_ok=True)
    _run(
        [
            py,
            "-m",
            "gansvc.generate",
            "--model",
            "shapes-dcgan",
            "--n",
            "16",
            "--seed",
            "0",
            "--grid",
            str(args.out / "generated"),
        ],
        env,
    )
    sample = args.out / "stripes-testA-0.png"
    stripes = read_manifest(f"{bucket}/datasets/stripes")  # files live in the manifest's version folder
    first = stripes.splits["testA"].files[0]
    sample.write_bytes(storage.read_bytes(f"{bucket}/datasets/stripes/{stripes.object_rel(first)}"))
    _run(
        [
            py,
            "-m",
            "gansvc.translate",
            "--model",
            "stripes-cyclegan",
            "--direction",
            "a2b",
            str(sample),
            str(args.out / "stripes-testA-0-a2b.png"),
        ],
        env,
    )
    for run_name in ("demo-dcgan", "demo-cyclegan"):
        (args.out / f"{run_name}-curves.png").write_bytes(
            storage.read_bytes(f"{bucket}/runs/{run_name}/samples/curves.png")
        )
        grids = sorted(
            o.rel for o in storage.list_objects(f"{bucket}/runs/{run_name}/samples") if o.rel.startswith("step-")
        )
        (args.out / f"{run_name}-samples.png").write_bytes(
            viewable(storage.read_bytes(f"{bucket}/runs/{run_name}/samples/{grids[-1]}"))
        )

    _step("8. serve both models over HTTP with Ray Serve and call both endpoints")
    _run([py, "-m", "gansvc.serve", "--models", "shapes-dcgan,stripes-cyclegan", "--detach"], env)
    url = f"http://127.0.0.1:{state.ports.serve_http}"
    served = args.out / "served"
    served.mkdir(exist_ok=True)
    _http(
        f"{url}/v1/models/shapes-dcgan/generate",
        json.dumps({"n": 16, "seed": 7, "format": "grid"}).encode(),
        "application/json",
        served / "generate-seed7-grid.png",
    )
    _http(
        f"{url}/v1/models/stripes-cyclegan/translate?direction=a2b",
        sample.read_bytes(),
        "image/png",
        served / "translate-a2b.png",
    )

    _step(f"9. results in {args.out}/")
    for name in ("shapes-preview.png", "stripes-preview.png"):
        (args.out / name).write_bytes(viewable(storage.read_bytes(f"{bucket}/demo/{name}")))
    for path in sorted(args.out.glob("*.png")):
        print(f"  {path.resolve()}")
    print(f"  {(args.out / 'generated').resolve()}/  (16 generated images and a grid)")
    print(f"  {(args.out / 'served').resolve()}/  (what the HTTP endpoints returned)")
    print(f"\ndone in {time.perf_counter() - t0:.0f}s. The stack keeps running; try:")
    hint = activate_hint()
    if hint:
        print(f"  {hint}    # first: the commands below need this environment's python and ray on PATH")
    print(f'  eval "$(python -m gansvc.local env{" --state-dir " + str(state_dir) if args.state_dir else ""})"')
    print(f"  python -m gansvc.data info {shapes}")
    print(f"  ray job submit -- python -m gansvc.data preview {bucket}/datasets/stripes {bucket}/demo/mine.png")
    print(f"  curl -s {url}/v1/models")
    print(
        f"  curl -s -X POST {url}/v1/models/shapes-dcgan/generate -H 'content-type: application/json' "
        '-d \'{"n": 16, "seed": 1, "format": "grid"}\' -o grid.png'
    )
    print(
        f"  curl -s -X POST '{url}/v1/models/stripes-cyclegan/translate?direction=a2b' -H 'content-type: image/png' "
        f"--data-binary @{sample} -o zebra.png"
    )
    print(f"  playground (open in a browser): {url}/")
    print(
        f"  API docs: {url}/docs   Ray dashboard: {state.dashboard_url} (token: cat {state.token_path})   "
        f"stop everything: python -m gansvc.local down{' --state-dir ' + str(state_dir) if args.state_dir else ''}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
