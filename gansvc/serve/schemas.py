"""What crosses the wire: builder args (YAML `args:`), HTTP request/response bodies, and the jobs the ingress sends to
model replicas. Builder args and request bodies are strict (`extra="forbid"`): a typo is an error, not a silent default.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, Field, model_validator

from gansvc.registry import NAME_PATTERN
from gansvc.strict import Strict

MAX_N_CAP = 4096  # no model may allow more images per request (ModelArgs.max_n): the schema's static bound
MIN_SIDE = 8  # default smallest translate input side: the nets downsample twice (4 x 4 after two stride-2 steps)
PIXELS_PER_TRAIN_PIXEL = 4  # default max_pixels = 4 x the training size (e.g. 256x256 -> 512x512)
MODEL_DEPLOYMENT = "GanModel"  # the deployment name inside every model application (how the ingress finds models)
INGRESS_DEPLOYMENT = "Ingress"


# ------------------------------------------------------------------------------------------------------ builder args


class Autoscaling(Strict):
    """Serve autoscaling of one model's replicas (ray.serve.config.AutoscalingConfig)."""

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(1, ge=1)
    initial_replicas: int | None = Field(None, ge=0)
    target_ongoing_requests: float = Field(8.0, gt=0, description="ongoing requests per replica Serve aims for")

    @model_validator(mode="after")
    def _order(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) > max_replicas ({self.max_replicas})")
        return self


class ModelArgs(Strict):
    """`args:` of a model application (`build_app` with a `model` key): one registered model, its replicas, batching."""

    model: str = Field(pattern=NAME_PATTERN, description="registry name of the model to load")
    registry: str | None = Field(
        None,
        description="registry root; default $GANSVC_REGISTRY or $GANSVC_STORAGE/registry in the replica's environment",
    )
    max_n: int = Field(64, ge=1, le=MAX_N_CAP, description="most images one generate request may ask for")
    max_pixels: int | None = Field(
        None,
        ge=64,
        description="largest translate input, width x height -> else 413. Default: "
        f"{PIXELS_PER_TRAIN_PIXEL} x the model's training height x width (a forward pass "
        "costs about its pixels: this bounds one request to a few training-size passes)",
    )
    max_batch_size: int = Field(16, ge=1, le=1024, description="most requests @serve.batch puts in one forward pass")
    batch_wait_timeout_s: float = Field(0.01, ge=0.0, le=10.0, description="how long a batch waits to fill")
    num_cpus: float = Field(1.0, ge=0.0)
    num_gpus: float = Field(0.0, ge=0.0, description="0 on CPU clusters: a GPU ask there never schedules")
    max_ongoing_requests: int | None = Field(None, ge=1, description="default max(2 x max_batch_size, 8)")
    autoscaling: Autoscaling = Field(default_factory=Autoscaling)
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: cuda when the replica sees a GPU")
    torch_threads: int | None = Field(None, ge=1, description="torch intra-op threads per replica (default: torch's)")
    revision: str = Field(
        "",
        description="free text; changing it rolls the replicas onto the registry's latest "
        "version of the model (Serve restarts an application when its args change)",
    )
    max_surge_percent: int = Field(
        100,
        ge=0,
        le=100,
        description="extra replicas during a rolling restart: >0 keeps "
        "old replicas answering until the new ones loaded",
    )

    @model_validator(mode="after")
    def _gpu(self) -> ModelArgs:
        if self.device == "cuda" and self.num_gpus <= 0:
            raise ValueError("device cuda needs num_gpus > 0 (a replica without a GPU ask sees no GPU)")
        return self

    def ongoing_limit(self) -> int:
        return self.max_ongoing_requests or max(2 * self.max_batch_size, 8)

    def pixel_limit(self, height: int, width: int) -> int:
        """The translate input limit for a model trained at height x width."""
        return self.max_pixels or PIXELS_PER_TRAIN_PIXEL * height * width


class IngressArgs(Strict):
    """`args:` of the HTTP front door (`build_app` without a `model` key)."""

    max_request_bytes: int = Field(8 << 20, ge=1024, description="largest request body (upload) in bytes -> else 413")
    max_pixels: int | None = Field(
        None,
        ge=64,
        description="a cap on every model's translate input (width x height) -> else 413; None: each "
        "model's own limit (its max_pixels, default 4 x its training pixels)",
    )
    min_side: int = Field(MIN_SIDE, ge=1, description="smallest translate input side (the nets downsample twice)")
    expect_models: list[str] = Field(default_factory=list, description="/readyz stays 503 until these are served")
    request_timeout_s: float = Field(120.0, gt=0, description="a model call taking longer answers 504")
    discovery_ttl_s: float = Field(1.0, ge=0.0, description="how long the list of model applications is cached")
    num_cpus: float = Field(0.5, ge=0.0)
    num_replicas: int = Field(1, ge=1)
    max_ongoing_requests: int = Field(256, ge=1)
    max_surge_percent: int = Field(100, ge=0, le=100, description="see ModelArgs.max_surge_percent")


# ------------------------------------------------------------------------------------------------------ HTTP bodies


class GenerateRequest(Strict):
    # strict numbers (pydantic's lax mode would take true / "7" as 1 / 7): the schema is the contract, and a JSON
    # boolean or string where a number belongs is a client bug to report, not to guess at
    n: int = Field(
        1,
        ge=1,
        le=MAX_N_CAP,
        strict=True,
        description=f"number of images: at most the model's max_n (GET /v1/models; a larger n answers "
        f"422 n_out_of_range), never more than {MAX_N_CAP}",
    )
    seed: int | None = Field(
        None,
        ge=0,
        le=2**63 - 1,
        strict=True,
        description="same seed + same model version = same images; default: a random seed, returned in X-Seed",
    )
    labels: dict[str, str] | list[dict[str, str]] | None = Field(
        None,
        description="label-conditioned models: attribute -> value for every image, or one mapping per image "
        "(n of them). Attributes left out are drawn from the seed.",
    )
    truncation: float | None = Field(
        None,
        ge=0.05,
        le=10.0,
        strict=True,
        description="truncation trick (Brock et al. 2019): every latent component with |z_i| > truncation is redrawn "
        "(seeded) until it lies within it; smaller = more typical, less varied images. Default: none",
    )
    format: Literal["png", "grid", "json"] | None = Field(
        None,
        description="png: one image/png (n must be 1); grid: one image/png grid of all n; json: "
        '{"images": [base64 PNG, ...]}. Default: png for n=1, grid otherwise',
    )


Seed = Annotated[int, Field(ge=0, le=2**63 - 1, strict=True)]


class InterpolateRequest(Strict):
    """A latent walk: `steps` frames from seed A's image to seed B's (the images generate makes for n=1 and each
    seed), in one forward pass."""

    seeds: list[Seed] = Field(
        min_length=2,
        max_length=2,
        description="[A, B]: the first frame is generate's image for seed A (n=1), the last for seed B",
    )
    steps: int = Field(
        8,
        ge=2,
        le=MAX_N_CAP,
        strict=True,
        description="number of frames, both ends included: at least 2, at most the model's max_n "
        "(422 steps_out_of_range)",
    )
    method: Literal["slerp", "lerp"] = Field(
        "slerp",
        description="slerp: spherical interpolation (Shoemake 1985; White 2016, Sampling Generative Networks), "
        "frames keep a Gaussian latent's norm; lerp: straight line (the middle frames' latents are shorter)",
    )
    labels: list[dict[str, str]] | None = Field(
        None,
        min_length=2,
        max_length=2,
        description="label-conditioned models: [labels of A, labels of B], each attribute -> value (attributes left "
        "out are drawn from that end's seed). Attributes are categorical: frames before the midpoint (t < 0.5) take "
        "A's labels, the others B's",
    )
    format: Literal["grid", "webp", "gif"] = Field(
        "grid",
        description="grid: one image/png grid of the frames, row by row; webp / gif: an animated image/webp "
        "(lossless) or image/gif, 100 ms a frame, looping",
    )


class ImageSize(BaseModel):
    height: int
    width: int
    channels: int


class ModelInfo(BaseModel):
    name: str = Field(description="served name (the URL path segment)")
    registry_name: str
    family: str
    task: str = Field(description="generate (noise/labels -> image) or translate (image -> image)")
    image: ImageSize = Field(
        description="training image size; generate returns this size, translate keeps the input's size"
    )
    attributes: dict[str, list[str]] = Field(description="label-conditioned models: attribute -> allowed values")
    conditional: bool
    latent_dim: int | None = None
    metrics: dict[str, float]
    metric_protocol: dict[str, Any] = Field(
        default_factory=dict,
        description="how `metrics` were computed: extractor and weights SHA-256, resize, image counts, reference split",
    )
    version: int
    created: str | None = None
    dataset: str = Field("", description="the dataset the model was trained on (its URI), when the registry knows it")
    step: int | None = Field(None, description="training steps of the registered checkpoint, when known")
    directions: list[str] = Field(description="translate models: a2b and/or b2a (one-way imports: a2b only)")
    heatmap: bool = Field(description="translate models whose family returns attention maps: heatmap=true is accepted")
    max_n: int = Field(description="generate: most images per request")
    max_pixels: int = Field(0, description="translate: largest input, width x height (0 for generate models)")
    min_side: int = Field(0, description="translate: smallest input side (0 for generate models)")
    max_request_bytes: int = Field(
        0, description="translate: largest request body, the upload (the front door's max_request_bytes; 0: generate)"
    )


class ModelList(BaseModel):
    models: list[ModelInfo]


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


class ImagesBody(BaseModel):
    images: list[str] = Field(description="base64-encoded PNGs")
    seed: int
    model: str
    version: int


class TranslationBody(BaseModel):
    image: str = Field(description="base64 PNG of the translation, the input's size")
    heatmap: str = Field(description="base64 grayscale PNG of the attention heatmap (white = attended), same size")
    width: int
    height: int


# ------------------------------------------------------------------------------------------------------ replica jobs


@dataclass
class GenJob:
    n: int
    seed: int
    labels: list[dict[str, str]] | None  # one mapping per image (already validated by the ingress)
    truncation: float | None
    fmt: Literal["png", "grid", "json"]
    deadline: float = 0.0  # time.time() after which nobody waits for the answer: skipped, not computed (0: none)


@dataclass
class WalkJob:
    """A latent walk (POST .../interpolate): run through the generate batch queue (one forward pass of its frames,
    shared with the generate jobs of the same batch); its result's `pngs` holds the one encoded file."""

    seeds: tuple[int, int]
    steps: int
    method: Literal["slerp", "lerp"]
    labels: list[dict[str, str]] | None  # [A's, B's] (already validated by the ingress); None: drawn from the seeds
    fmt: Literal["grid", "webp", "gif"]
    deadline: float = 0.0  # as GenJob.deadline

    @property
    def n(self) -> int:
        return self.steps


@dataclass
class TranslateJob:
    image: np.ndarray  # (H, W, C) uint8, C = the model's channels
    direction: Literal["a2b", "b2a"]
    heatmap: bool
    deadline: float = 0.0  # as GenJob.deadline


def expired(deadline: float, now: float | None = None) -> bool:
    """True when a job's caller has stopped waiting (the ingress timed out). Wall clock: the ingress and the replica
    compare time.time() of their hosts (NTP-synchronised cluster nodes; a skew only shifts when work is dropped)."""
    return deadline > 0 and (now if now is not None else time.time()) > deadline


@dataclass
class JobResult:
    pngs: list[bytes]  # one per image, or one grid (a walk: its one grid PNG, WebP or GIF)
    heatmaps: list[bytes] = field(default_factory=list)
    batch_requests: int = 1  # requests in the forward pass this job shared
    batch_images: int = 1  # images in that forward pass
    replica: str = ""
    version: int = 0  # registry version of the weights that answered
    extra: dict[str, Any] = field(default_factory=dict)
    skipped: bool = False  # the deadline had passed before the forward pass: nothing was computed
