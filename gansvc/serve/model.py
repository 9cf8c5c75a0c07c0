"""The model deployment: one registered model per Serve application, loaded once per replica, batched with @serve.batch.

- Load: `registry.load_model` (generator nets only, EMA weights where the family keeps them), eval, no grad; on CUDA
  the nets run in bf16 with channels_last.
- Generation batching: the latents (and labels) of every request in a batch are drawn from each request's own seed,
  concatenated, run as ONE forward pass and split back, so requests with different n share a pass. A latent walk
  (interpolate, `WalkJob`) joins the same queue: its frames' inputs (`sampling.walk_inputs`) are one more slice of
  that pass.
- Translation batching: the requests of a batch are grouped by (direction, height, width); each group is one forward
  pass (same-size requests are stacked, different sizes run one pass per size).
- Metrics (ray.serve.metrics, exported by Ray with a `ray_` prefix and deployment/replica/application tags):
  gansvc_model_requests, gansvc_images, gansvc_batch_size, gansvc_forward_seconds, gansvc_model_skipped, each tagged
  model and task.
- Work whose caller has gone is not done: every job carries the ingress's deadline; a job past it is skipped right
  before the forward pass (and raises DeadlineExpired to whoever still listens), and a job whose caller cancelled
  (ingress timeout, client disconnect) leaves the @serve.batch queue before its batch runs (Serve drops cancelled
  futures). `info()["counters"]` counts forward passes, computed and skipped jobs of this replica.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, cast

import torch
from ray import serve
from ray.serve.metrics import Counter, Histogram

from gansvc.families.sampling import encode_labels, sample_latents, walk_inputs
from gansvc.imaging import grid, png_bytes, to_pil, to_uint8, walk_bytes
from gansvc.registry import load_model
from gansvc.serve.schemas import GenJob, JobResult, ModelArgs, TranslateJob, WalkJob, expired

if TYPE_CHECKING:
    from gansvc.families.base import Direction

BATCH_BOUNDS: list[float] = [1, 2, 4, 8, 16, 32, 64, 128, 256]
SECONDS_BOUNDS: list[float] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]


def tag_keys(*keys: str) -> tuple[str]:
    """`keys` as the tag_keys of a ray.serve.metrics metric. Its hints say Tuple[str], one key, a slip: the metric
    takes any number of keys (it checks for a tuple and hands them to ray.util.metrics, typed Tuple[str, ...])."""
    return cast("tuple[str]", keys)


class _BatchSetters(Protocol):
    """What a @serve.batch method also has at run time (ray.serve.batching sets them on the wrapper it returns);
    serve.batch's hints type the wrapper as a plain callable."""

    def set_max_batch_size(self, new_max_batch_size: int) -> None: ...

    def set_batch_wait_timeout_s(self, new_batch_wait_timeout_s: float) -> None: ...


class DeadlineExpired(RuntimeError):
    """The job's deadline passed before its forward pass: its caller (the ingress) had already answered 504."""


def truncate(z: torch.Tensor, threshold: float, seed: int) -> torch.Tensor:
    """Redraw every component with |z_i| > threshold (seeded, at most 1000 rounds, then clamp): the truncation trick."""
    gen = torch.Generator(device="cpu").manual_seed((int(seed) * 1_000_003 + 12_345) % (2**63))
    z = z.clone()
    for _ in range(1000):
        mask = z.abs() > threshold
        if not mask.any():
            break
        z[mask] = torch.randn(int(mask.sum()), generator=gen, dtype=z.dtype)
    return z.clamp(-threshold, threshold)


class GanModel:
    def __init__(self, args: dict[str, Any]) -> None:
        self.args = ModelArgs.model_validate(args)
        if self.args.torch_threads:
            torch.set_num_threads(self.args.torch_threads)
        want_cuda = self.args.device == "cuda" or (self.args.device == "auto" and torch.cuda.is_available())
        self.device = torch.device("cuda" if want_cuda else "cpu")
        self.dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        self.entry, self.m = load_model(self.args.model, self.args.registry, str(self.device))
        if self.device.type == "cuda":
            for net in self.m.nets.values():
                # two calls: torch's hints of Module.to have no overload taking both (its parser does)
                net.to(dtype=self.dtype)
                net.to(memory_format=torch.channels_last)
        self.task = self.m.spec.task
        self.version = int(self.entry.get("version", 0))
        self.directions = list(self.entry.get("directions") or self.m.extra.get("directions") or ["a2b", "b2a"])
        # whether the family returns attention heatmaps is its declaration (FamilySpec.heatmap); a warm-up pass at the
        # training size (translation families) so the first request does not pay for lazy initialisation
        d = self.m.data
        self.has_heatmap = self.task != "generate" and self.m.spec.heatmap
        if self.task != "generate":
            self._translate_pass(torch.zeros(1, d.channels, d.height, d.width), self.directions[0])
        for batched in (self._generate_batch, self._translate_batch):
            setters = cast(_BatchSetters, batched)  # the @serve.batch wrapper: see _BatchSetters
            setters.set_max_batch_size(self.args.max_batch_size)
            setters.set_batch_wait_timeout_s(self.args.batch_wait_timeout_s)
        try:
            ctx = serve.get_replica_context()
            self.replica, self.served_as = ctx.replica_id.unique_id, ctx.app_name or self.args.model
        except Exception:  # noqa: BLE001 - outside a replica (unit use)
            self.replica, self.served_as = "local", self.args.model
        tags = tag_keys("model", "task")
        self.m_requests = Counter("gansvc_model_requests", "requests run by a model replica", tags)
        self.m_images = Counter("gansvc_images", "images produced", tags)
        self.m_batch = Histogram("gansvc_batch_size", "requests per forward pass", BATCH_BOUNDS, tags)
        self.m_forward = Histogram("gansvc_forward_seconds", "forward pass + PNG encoding time", SECONDS_BOUNDS, tags)
        self.m_skipped = Counter("gansvc_model_skipped", "jobs skipped because their deadline had passed", tags)
        self.counters = {"forward_passes": 0, "computed_jobs": 0, "skipped_jobs": 0}
        self.tags = {"model": self.served_as, "task": self.task}  # the served name, as the front door's metrics
        for metric in (self.m_requests, self.m_images, self.m_batch, self.m_forward, self.m_skipped):
            metric.set_default_tags(dict(self.tags))  # Serve adds its tags to (mutates) the dict

    # ------------------------------------------------------------------------------------------------------ info

    def info(self) -> dict[str, Any]:
        e, d, cfg = self.entry, self.m.data, self.m.config
        return {
            "registry_name": e["name"],
            "family": e["family"],
            "task": self.task,
            "image": {"height": d.height, "width": d.width, "channels": d.channels},
            "attributes": {k: list(v) for k, v in d.attributes.items()},
            "conditional": bool(self.m.spec.conditional),
            "latent_dim": getattr(cfg, "latent_dim", None),
            "metrics": dict(e.get("metrics", {})),
            "metric_protocol": dict(e.get("metric_protocol") or {}),
            "version": int(e.get("version", 0)),
            "created": e.get("created"),
            "dataset": str(e.get("dataset") or ""),
            "step": e.get("step") if isinstance(e.get("step"), int) else None,
            "directions": self.directions if self.task != "generate" else [],
            "heatmap": self.has_heatmap,
            "max_n": self.args.max_n,
            "data_spec": d.to_dict(),
            "replica": self.replica,
            "max_pixels": self.args.pixel_limit(d.height, d.width) if self.task != "generate" else 0,
            "counters": dict(self.counters),
        }

    # ------------------------------------------------------------------------------------------------ generation

    async def generate(self, job: GenJob) -> JobResult:
        return self._checked(await self._generate_batch(job))

    async def interpolate(self, job: WalkJob) -> JobResult:
        """A latent walk, batched with the generate requests (the same queue, limits and forward pass)."""
        return self._checked(await self._generate_batch(job))

    @staticmethod
    def _checked(res: JobResult) -> JobResult:
        if res.skipped:
            raise DeadlineExpired("the request's deadline passed before its forward pass: not computed")
        return res

    def _run_live(self, jobs: list[Any], run: Callable[[list[Any]], list[JobResult]]) -> list[JobResult]:
        """`run` on the jobs whose caller still waits (deadline not passed); the others get a skipped result."""
        now = time.time()
        live = [i for i, job in enumerate(jobs) if not expired(job.deadline, now)]
        out = [JobResult([], skipped=True) for _ in jobs]
        if len(live) < len(jobs):
            self.counters["skipped_jobs"] += len(jobs) - len(live)
            self.m_skipped.inc(len(jobs) - len(live))
        if live:
            for i, res in zip(live, run([jobs[i] for i in live]), strict=True):
                out[i] = res
        return out

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
    async def _generate_batch(self, jobs: list[GenJob | WalkJob]) -> list[JobResult]:
        return await asyncio.to_thread(self._run_generate, jobs)

    def _run_generate(self, jobs: list[GenJob | WalkJob]) -> list[JobResult]:
        return self._run_live(jobs, self._generate_pass)

    @torch.inference_mode()
    def _generate_pass(self, jobs: list[GenJob | WalkJob]) -> list[JobResult]:
        t0 = time.perf_counter()
        zs, ys = [], []
        for job in jobs:
            if isinstance(job, WalkJob):
                data = self.m.data if self.m.spec.conditional else None
                z, y = walk_inputs(self.m.config, job.seeds, job.steps, job.method, data, job.labels)
                zs.append(z)
                if y is not None:
                    ys.append(y)
                continue
            z = sample_latents(self.m.config, job.n, job.seed)
            zs.append(truncate(z, job.truncation, job.seed) if job.truncation else z)
            if self.m.spec.conditional:
                ys.append(encode_labels(self.m.data, job.labels or [{}] * job.n, seed=job.seed))
        z = torch.cat(zs).to(self.device, self.dtype)
        y = torch.cat(ys).to(self.device) if ys else None
        assert self.m.spec.generate is not None
        images = self.m.spec.generate(self.m.nets, z, y, self.m.config).float().cpu()
        out, start, total = [], 0, z.shape[0]
        for job in jobs:
            part = images[start : start + job.n]
            start += job.n
            if isinstance(job, WalkJob):
                pngs = [walk_bytes(part, job.fmt)]
            elif job.fmt == "grid":
                pngs = [png_bytes(grid(part))]
            else:
                pngs = [png_bytes(to_pil(a)) for a in to_uint8(part)]
            out.append(
                JobResult(
                    pngs, batch_requests=len(jobs), batch_images=total, replica=self.replica, version=self.version
                )
            )
        self._observe(len(jobs), total, time.perf_counter() - t0)
        return out

    # ----------------------------------------------------------------------------------------------- translation

    async def translate(self, job: TranslateJob) -> JobResult:
        return self._checked(await self._translate_batch(job))

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
    async def _translate_batch(self, jobs: list[TranslateJob]) -> list[JobResult]:
        return await asyncio.to_thread(self._run_translate, jobs)

    def _translate_pass(self, x: torch.Tensor, direction: Direction) -> dict[str, torch.Tensor]:
        x = x.to(self.device, self.dtype)
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        assert self.m.spec.translate is not None
        with torch.inference_mode():
            return {
                k: v.float().cpu() for k, v in self.m.spec.translate(self.m.nets, x, direction, self.m.config).items()
            }

    def _run_translate(self, jobs: list[TranslateJob]) -> list[JobResult]:
        return self._run_live(jobs, self._translate_jobs)

    def _translate_jobs(self, jobs: list[TranslateJob]) -> list[JobResult]:
        t0 = time.perf_counter()
        groups: dict[tuple[Direction, int, int], list[int]] = {}
        for i, job in enumerate(jobs):
            groups.setdefault((job.direction, *job.image.shape[:2]), []).append(i)
        out: list[JobResult | None] = [None] * len(jobs)
        for (direction, _, _), idx in groups.items():
            x = torch.stack([torch.from_numpy(jobs[i].image.copy()).permute(2, 0, 1) for i in idx]).float()
            res = self._translate_pass(x / 255.0 * 2.0 - 1.0, direction)
            imgs = to_uint8(res["image"])
            heat = to_uint8(res["heatmap"] * 2.0 - 1.0) if "heatmap" in res else None
            for k, i in enumerate(idx):
                hm = [png_bytes(to_pil(heat[k]))] if jobs[i].heatmap and heat is not None else []
                out[i] = JobResult(
                    [png_bytes(to_pil(imgs[k]))],
                    hm,
                    batch_requests=len(jobs),
                    batch_images=len(jobs),
                    replica=self.replica,
                    version=self.version,
                    extra={"groups": len(groups)},
                )
        self._observe(len(jobs), len(jobs), time.perf_counter() - t0, passes=len(groups))
        return [r for r in out if r is not None]

    # --------------------------------------------------------------------------------------------------- metrics

    def _observe(self, requests: int, images: int, seconds: float, passes: int = 1) -> None:
        self.counters["forward_passes"] += passes
        self.counters["computed_jobs"] += requests
        self.m_requests.inc(requests)
        self.m_images.inc(images)
        self.m_batch.observe(requests)
        self.m_forward.observe(seconds)
