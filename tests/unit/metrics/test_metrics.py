"""gansvc.metrics: the math against independent computations, streaming statistics, SWD, the Inception loader (random
weights, local file, torch hub cache, real S3), reference statistics cached in real S3, and evaluate()."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from gansvc import local, storage
from gansvc.data.pipeline import DataConfig
from gansvc.metrics import (
    TORCHVISION_EXTRACTOR,
    WEIGHTS_FILE,
    FeatureExtractor,
    FeatureStats,
    ISStats,
    describe_metrics,
    evaluate,
    frechet_distance,
    inception_score,
    kernel_inception_distance,
    load_inception,
    metric_mode,
    mmd2_unbiased,
    reference_stats,
    sliced_wasserstein_distance,
)

# ------------------------------------------------------------------------------------------------------------ math


def _spd(rng: np.random.Generator, d: int, n: int) -> np.ndarray:
    return np.cov(rng.normal(size=(n, d)) @ rng.normal(size=(d, d)), rowvar=False)


def test_frechet_diagonal_closed_form() -> None:
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    s1, s2 = rng.uniform(0.1, 3, 6), rng.uniform(0.1, 3, 6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2)
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-10)


def test_frechet_matches_symmetric_eigen_form() -> None:
    # independent form: tr((S1 S2)^1/2) = sum sqrt(eig(S1^1/2 S2 S1^1/2)), S1^1/2 from a symmetric eigendecomposition
    rng = np.random.default_rng(1)
    d = 12
    mu1, mu2, s1, s2 = rng.normal(size=d), rng.normal(size=d), _spd(rng, d, 40), _spd(rng, d, 40)
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(w)) @ v.T
    tr_sqrt = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh(root1 @ s2 @ root1), 0, None)))
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)


def test_fid_of_identical_stats_is_zero() -> None:
    rng = np.random.default_rng(2)
    mu, sigma = rng.normal(size=16), _spd(rng, 16, 100)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-8
    x = rng.normal(size=(10, 64))  # fewer samples than dimensions: singular covariance
    mu, sigma = x.mean(0), np.cov(x, rowvar=False)
    fid = frechet_distance(mu, sigma, mu, sigma)
    assert np.isfinite(fid) and abs(fid) < 1e-3 * np.trace(sigma)


def _naive_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    d = x.shape[1]

    def k(a: np.ndarray, b: np.ndarray) -> float:
        return (sum(float(ai) * float(bi) for ai, bi in zip(a, b, strict=True)) / d + 1) ** 3

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_mmd_and_kid_match_naive_loops() -> None:
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(9, 5)), rng.normal(0.3, 1.2, size=(7, 5))
    assert mmd2_unbiased(x, y) == pytest.approx(_naive_mmd2(x, y), rel=1e-10)
    # subsets of the whole (equal-size) sets are permutations: every subset gives the full estimate, std 0
    y9 = rng.normal(0.3, 1.2, size=(9, 5))
    for precompute in (True, False):
        mean, std = kernel_inception_distance(x, y9, subsets=5, subset_size=100, precompute=precompute)
        assert mean == pytest.approx(_naive_mmd2(x, y9), rel=1e-9) and std == pytest.approx(0, abs=1e-9)
    # proper subsets: the two code paths draw the same subsets and agree
    a, b = rng.normal(size=(40, 8)), rng.normal(size=(30, 8))
    fast = kernel_inception_distance(a, b, subsets=7, subset_size=12, seed=4, precompute=True)
    slow = kernel_inception_distance(a, b, subsets=7, subset_size=12, seed=4, precompute=False)
    assert fast == pytest.approx(slow, rel=1e-9)


def test_kid_near_zero_for_same_distribution_positive_for_shifted() -> None:
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(400, 16)), rng.normal(size=(400, 16))
    same, same_std = kernel_inception_distance(a, b, subsets=20, subset_size=200)
    shifted, _ = kernel_inception_distance(a, b + 0.5, subsets=20, subset_size=200)
    assert abs(same) < 3 * same_std + 1e-3
    assert shifted > 0.1 and shifted > 20 * abs(same)


def test_inception_score_uniform_and_confident() -> None:
    assert inception_score(np.full((20, 7), 1 / 7), splits=4) == pytest.approx((1.0, 0.0))
    k = 5
    onehot = np.eye(k)[np.arange(50) % k]  # every split of 10 holds each class twice
    assert inception_score(onehot, splits=5) == pytest.approx((k, 0.0))
    mean, _ = inception_score(onehot * 60.0, splits=5)  # confident logits
    assert mean == pytest.approx(k, rel=1e-6)


def test_inception_score_streaming_equals_batch() -> None:
    logits = np.random.default_rng(6).normal(0, 3, size=(53, 11))
    acc = ISStats(total=53, splits=4)
    for part in np.array_split(logits, [5, 6, 30]):
        acc.update(part, logits=True)
    assert acc.result() == pytest.approx(inception_score(logits, splits=4), rel=1e-10)
    # torch-fidelity's shuffled splits (seeded permutation, then bounds i*N//splits), streamed the same way
    shuffled = ISStats(total=53, splits=4, shuffle_seed=2020)
    for part in np.array_split(logits, [5, 6, 30]):
        shuffled.update(part, logits=True)
    expected = inception_score(logits, splits=4, shuffle_seed=2020)
    assert shuffled.result() == pytest.approx(expected, rel=1e-10)
    assert expected != pytest.approx(inception_score(logits, splits=4), rel=1e-6), "the shuffle changes the splits"


def test_feature_stats_equal_numpy_on_concatenation() -> None:
    rng = np.random.default_rng(7)
    parts = [rng.normal(3.0, 2.0, size=(n, 6)) for n in (1, 7, 20, 3)]
    acc = FeatureStats(6, keep=10)
    for p in parts:
        acc.update(p)
    allx = np.concatenate(parts)
    assert acc.n == 31
    np.testing.assert_allclose(acc.mean, allx.mean(0), rtol=1e-12)
    np.testing.assert_allclose(acc.cov, np.cov(allx, rowvar=False), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(acc.kept, allx[:10], rtol=1e-6)


def _smooth(seed: int, n: int, detail: int, size: int = 32) -> torch.Tensor:
    """Random colour fields of `detail` x `detail` independent pixels, bicubically upsampled to `size`."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, detail, detail, generator=g) * 2 - 1
    return torch.nn.functional.interpolate(low, size=(size, size), mode="bicubic", align_corners=False).clamp(-1, 1)


def test_swd_zero_for_same_set_and_larger_for_different() -> None:
    a, a2, sharp = _smooth(0, 48, 4), _smooth(1, 48, 4), _smooth(1, 48, 16)
    assert sliced_wasserstein_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    same_dist, different = sliced_wasserstein_distance(a, a2), sliced_wasserstein_distance(a, sharp)
    assert 0 < same_dist < different / 2  # 48 images: the same-distribution value is sampling noise


def test_metric_directions() -> None:
    assert {k: metric_mode(k) for k in ("fid", "kid", "is", "swd")} == {
        "fid": "min",
        "kid": "min",
        "is": "max",
        "swd": "min",
    }
    assert set(describe_metrics()) >= {"fid", "kid", "kid_std", "is", "is_std", "swd"}


# ------------------------------------------------------------------------------------------------- Inception loader


@pytest.fixture(scope="module")
def inception_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised torchvision inception_v3 state dict, shaped like the real weights file."""
    from torchvision.models import inception_v3

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("inception") / WEIGHTS_FILE
    torch.save(inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict(), path)
    return path


def test_load_inception_without_weights_says_where_to_put_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    net, reason = load_inception(None, extractor=TORCHVISION_EXTRACTOR)
    assert net is None and WEIGHTS_FILE in reason and "metrics.inception" in reason
    assert str(tmp_path / "torch" / "hub" / "checkpoints") in reason
    net, reason = load_inception(str(tmp_path / "nope.pth"), extractor=TORCHVISION_EXTRACTOR)
    assert net is None and "nope.pth" in reason and "does not exist" in reason
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    net, reason = load_inception(str(tmp_path / "bad.pth"), extractor=TORCHVISION_EXTRACTOR)
    assert net is None and "not torchvision's inception_v3" in reason


def test_load_inception_from_file_and_torch_cache(
    inception_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    net, message = load_inception(str(inception_weights), extractor=TORCHVISION_EXTRACTOR)
    assert net is not None and str(inception_weights) in message and isinstance(net, FeatureExtractor)
    gray = torch.rand(2, 1, 16, 16) * 2 - 1
    feats, logits = net.extract(gray, batch_size=1)
    assert feats.shape == (2, 2048) and logits.shape == (2, 1000) and np.isfinite(feats).all()
    assert not np.allclose(feats[0], feats[1], rtol=1e-3, atol=0), "different images, different features"
    # a gray image is its RGB repeat; a large non-square one is resized (random weights: tiny magnitudes, so rtol)
    rgb, _ = net.extract(gray[:1].expand(-1, 3, -1, -1))
    np.testing.assert_allclose(rgb[0], feats[0], rtol=1e-4, atol=0)
    big, big_logits = net.extract(torch.rand(1, 3, 320, 300) * 2 - 1)
    assert big.shape == (1, 2048) and big_logits.shape == (1, 1000) and np.isfinite(big).all()

    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / WEIGHTS_FILE).symlink_to(inception_weights)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cached, message = load_inception(None, extractor=TORCHVISION_EXTRACTOR)
    assert cached is not None and str(cache / WEIGHTS_FILE) in message and cached.id == net.id


def test_load_inception_from_s3(stack: local.StackState, s3_prefix: str, inception_weights: Path) -> None:
    uri = f"{s3_prefix}/weights/{WEIGHTS_FILE}"
    storage.upload_file(inception_weights, uri)
    net, message = load_inception(uri, extractor=TORCHVISION_EXTRACTOR)
    assert net is not None and uri in message
    assert net.id.endswith(hashlib.sha256(inception_weights.read_bytes()).hexdigest()[:16]), "the same bytes"
    missing, reason = load_inception(f"{s3_prefix}/weights/missing.pth", extractor=TORCHVISION_EXTRACTOR)
    assert missing is None and "does not exist" in reason


# --------------------------------------------------------------------------------------- reference stats, evaluate


class TinyExtractor(nn.Module):
    """A fast stand-in satisfying the FeatureExtractor protocol: random conv features (32) and logits (10)."""

    def __init__(self, id: str = "tiny-test/1") -> None:
        super().__init__()
        torch.manual_seed(0)
        self.id = id
        self.conv = nn.Conv2d(3, 8, 3, stride=2)
        self.fc = nn.Linear(32, 10)
        self.calls = 0

    def extract(self, images: torch.Tensor, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
        self.calls += 1
        feats, logits = [], []
        with torch.inference_mode():
            for x in images.split(batch_size):
                x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
                f = nn.functional.adaptive_avg_pool2d(torch.relu(self.conv(x.float())), 2).flatten(1)
                feats.append(f.double().numpy())
                logits.append(self.fc(f).double().numpy())
        return np.concatenate(feats), np.concatenate(logits)


class BrokenExtractor:
    id = "tiny-test/1"

    def extract(self, images: torch.Tensor, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
        raise AssertionError("the cached statistics should have been used")


@pytest.fixture(scope="module")
def shapes_uri(stack: local.StackState, synth_put: Callable[..., str]) -> str:
    return synth_put("shapes", f"s3://{stack.bucket}/metrics-{uuid.uuid4().hex[:8]}/shapes", count=40, size=16, seed=0)


def test_reference_stats_are_cached_in_s3(shapes_uri: str, tmp_path: Path) -> None:
    cfg = DataConfig(uri=shapes_uri, cache_dir=str(tmp_path / "cache"))
    tiny = TinyExtractor()
    ref = reference_stats(cfg, tiny, max_samples=30, stream_key="image", batch_size=8, quiet=True)
    assert not ref.from_cache and ref.uri.startswith(f"{shapes_uri}/.gansvc-cache/inception-")
    assert ref.uri.endswith(".npz") and storage.exists(ref.uri)
    assert ref.n == 30 and ref.mu.shape == (32,) and ref.sigma.shape == (32, 32) and ref.kid_features.shape == (30, 32)
    assert ref.swd_images.shape == (30, 3, 16, 16) and ref.swd_images.dtype == np.uint8
    assert len({im.tobytes() for im in ref.swd_images}) == 30, "each image once"
    feats, _ = tiny.extract(ref.swd_tensor())  # the kept images are exactly the ones the statistics describe
    np.testing.assert_allclose(ref.mu, feats.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ref.sigma, np.cov(feats, rowvar=False), rtol=1e-4, atol=1e-6)

    again = reference_stats(cfg, BrokenExtractor(), max_samples=30, stream_key="image", quiet=True)
    assert again.from_cache and again.uri == ref.uri and again.n == 30 and again.extractor_id == tiny.id
    for name in ("mu", "sigma", "kid_features", "swd_images"):
        np.testing.assert_array_equal(getattr(again, name), getattr(ref, name))
    with pytest.raises(AssertionError, match="cached"):  # another sample count is another cache entry
        reference_stats(cfg, BrokenExtractor(), max_samples=20, stream_key="image", quiet=True)
    swd_only = reference_stats(cfg, None, max_samples=30, stream_key="image", quiet=True)
    assert swd_only.uri.split("/")[-1].startswith("swd-") and swd_only.mu is None
    np.testing.assert_array_equal(swd_only.swd_images, ref.swd_images)
    assert reference_stats(cfg, None, max_samples=30, quiet=True).from_cache


def test_reference_stats_of_translation_targets(tmp_path: Path, synth_put: Callable[..., str]) -> None:
    uri = synth_put("stripes", str(tmp_path / "stripes"), count=12, size=16, seed=1, test_count=1)
    cfg = DataConfig(uri=uri)
    ref = reference_stats(cfg, None, max_samples=100, stream_key="B", quiet=True)
    assert ref.swd_images.shape == (12, 3, 16, 16) and len({im.tobytes() for im in ref.swd_images}) == 12
    with pytest.raises(ValueError, match="no 'image' image stream"):
        reference_stats(cfg, None, max_samples=10, stream_key="image", quiet=True)


def test_evaluate_streams_and_reports_per_task(shapes_uri: str, tmp_path: Path) -> None:
    cfg = DataConfig(uri=shapes_uri, cache_dir=str(tmp_path / "cache"))
    tiny = TinyExtractor()
    ref = reference_stats(cfg, tiny, max_samples=30, stream_key="image", quiet=True)
    asked: list[int] = []

    def replay_real(n: int) -> torch.Tensor:  # a "perfect generator": the real images, in order
        asked.append(n)
        start = sum(asked[:-1]) % 30
        return ref.swd_tensor()[start : start + n]

    def noise(n: int) -> torch.Tensor:
        return torch.rand(n, 3, 16, 16, generator=gen) * 2 - 1

    gen = torch.Generator().manual_seed(0)
    good = evaluate(replay_real, ref, tiny, n_samples=30, batch_size=8, task="generate", kid_subsets=10)
    assert asked == [8, 8, 8, 6], "batches of at most batch_size, n_samples in all"
    bad = evaluate(noise, ref, tiny, n_samples=30, batch_size=8, task="generate", kid_subsets=10)
    assert set(good) == set(bad) == {"fid", "kid", "kid_std", "is", "is_std", "swd"}
    assert all(np.isfinite(v) for v in [*good.values(), *bad.values()])
    assert abs(good["fid"]) < 1e-3 * bad["fid"] and good["kid"] < bad["kid"] and bad["kid"] > 0
    assert good["swd"] == pytest.approx(0.0, abs=1e-9) and bad["swd"] > 1.0
    assert good["is"] >= 1.0 - 1e-9

    translated = evaluate(noise, ref, tiny, n_samples=10, batch_size=4, task="translate", kid_subsets=5)
    assert set(translated) == {"fid", "kid", "kid_std", "swd"}
    gray_small = evaluate(
        lambda n: torch.rand(n, 1, 12, 12) * 2 - 1, ref, None, n_samples=6, batch_size=4, task="generate"
    )
    assert set(gray_small) == {"swd"} and gray_small["swd"] > 0  # resized and channel-expanded to the reference
    with pytest.raises(ValueError, match="computed with feature extractor"):
        evaluate(noise, ref, TinyExtractor(id="other"), n_samples=4, batch_size=4, task="generate")


# ------------------------------------------------------------------ the FID extractor's weights: fetch, pin, offline


@pytest.fixture(scope="module")
def fid_weights_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random state dict with the layout of torch-fidelity's FID Inception (not the published file)."""
    from tests.unit.metrics.test_fidelity_equal import random_fid_inception_state

    path = tmp_path_factory.mktemp("fid-weights") / "served.pth"
    torch.save(random_fid_inception_state(0, spread_logits=False), path)
    return path


@pytest.fixture
def weights_server(fid_weights_file: Path) -> Iterator[tuple[str, list[str]]]:
    """A real HTTP server on 127.0.0.1 serving the weights file at /w.pth and counting its requests."""
    import http.server
    import threading

    hits: list[str] = []
    body = fid_weights_file.read_bytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            hits.append(self.path)
            if self.path != "/w.pth":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/w.pth", hits
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(5)


def test_fid_weights_fetched_into_torch_hub_cache_then_cached(
    weights_server: tuple[str, list[str]],
    fid_weights_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from gansvc.metrics import FID_EXTRACTOR, FID_WEIGHTS_FILE

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    url, hits = weights_server
    digest = hashlib.sha256(fid_weights_file.read_bytes()).hexdigest()
    net, message = load_inception(None, extractor=FID_EXTRACTOR, url=url, sha256=digest)
    assert net is not None, message
    cached = tmp_path / "torch" / "hub" / "checkpoints" / FID_WEIGHTS_FILE
    assert cached.read_bytes() == fid_weights_file.read_bytes() and hits == ["/w.pth"]
    assert "fetched" in message and net.id == f"{FID_EXTRACTOR}/{digest[:16]}"
    assert net.protocol["weights_sha256"] == digest and "299" in net.protocol["resize"]
    feats, logits = net.extract(torch.rand(2, 1, 16, 16) * 2 - 1)
    assert feats.shape == (2, 2048) and logits.shape == (2, 1008) and np.isfinite(feats).all()
    again, message = load_inception(None, extractor=FID_EXTRACTOR, url=url, sha256=digest)
    assert again is not None and hits == ["/w.pth"], "a verified cache file is used without any request"


def test_fid_weights_hash_mismatch_is_refused(
    weights_server: tuple[str, list[str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from gansvc.metrics import FID_EXTRACTOR, FID_WEIGHTS_FILE, FID_WEIGHTS_SHA256, FID_WEIGHTS_URL

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    url, hits = weights_server
    net, message = load_inception(None, extractor=FID_EXTRACTOR, url=url)  # production pin: the published digest
    assert net is None and hits == ["/w.pth"]
    assert "sha256 mismatch" in message and FID_WEIGHTS_SHA256 in message and FID_WEIGHTS_URL in message
    assert not any((tmp_path / "torch" / "hub" / "checkpoints").glob(f"{FID_WEIGHTS_FILE}*.part")), "nothing kept"
    assert not (tmp_path / "torch" / "hub" / "checkpoints" / FID_WEIGHTS_FILE).exists()


def test_fid_weights_offline_from_metrics_inception_and_no_weights_message(
    fid_weights_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gansvc.metrics import FID_EXTRACTOR, FID_WEIGHTS_FILE, FID_WEIGHTS_SHA256, FID_WEIGHTS_URL

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    dead = "http://127.0.0.1:9/never.pth"  # the discard port: nothing answers (an offline machine)
    net, message = load_inception(str(fid_weights_file), extractor=FID_EXTRACTOR, url=dead)
    assert net is not None and str(fid_weights_file) in message and "not the published" in message
    assert net.protocol["weights_are_published"] is False
    none, reason = load_inception(None, extractor=FID_EXTRACTOR, url=dead)
    assert none is None and "could not fetch" in reason
    for must in (
        FID_WEIGHTS_URL,
        FID_WEIGHTS_SHA256,
        "metrics.inception",
        "SWD",
        str(tmp_path / "torch" / "hub" / "checkpoints"),
    ):
        assert must in reason, must
    off, reason = load_inception(None, extractor=FID_EXTRACTOR, download=False)
    assert off is None and "downloads are off" in reason and FID_WEIGHTS_FILE in reason
    with pytest.raises(ValueError, match="unknown feature extractor"):
        load_inception(None, extractor="inception-from-somewhere")


def test_protocol_recorded_with_results_and_shown_by_the_registry(shapes_uri: str, tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    from gansvc.checkpoint import inference_payload, write_best
    from gansvc.data.spec import DataSpec
    from gansvc.families import FAMILIES
    from gansvc.metrics import evaluate_with_protocol
    from gansvc.registry import get_entry, promote

    cfg = DataConfig(uri=shapes_uri, cache_dir=str(tmp_path / "cache"))
    tiny = TinyExtractor()
    ref = reference_stats(cfg, tiny, max_samples=30, stream_key="image", quiet=True)
    results, protocol = evaluate_with_protocol(
        lambda n: torch.rand(n, 3, 16, 16) * 2 - 1,
        ref,
        tiny,
        n_samples=12,
        batch_size=5,
        task="generate",
        kid_subsets=4,
        kid_subset_size=50,
    )
    assert set(results) == {"fid", "kid", "kid_std", "is", "is_std", "swd"}
    assert protocol["extractor"] == tiny.id and protocol["n_generated"] == 12 and protocol["n_real"] == 30
    assert protocol["reference"]["split"] == "train" and protocol["reference"]["stream"] == "image"
    assert protocol["kid"] == {
        **protocol["kid"],
        "subsets": 4,
        "subset_size": 12,
        "subset_size_asked": 50,
        "n_real_features": 30,
        "n_generated_features": 12,
        "seed": 2020,
    }
    assert protocol["is"]["splits"] == 10 and protocol["is"]["shuffle_seed"] == 2020

    # training's best/meta.json carries it ("protocol"); promote copies it; registry show prints it
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    (run / "gansvc-config.json").write_text(json.dumps({"family": "dcgan", "data": {"uri": shapes_uri}}))
    spec = FAMILIES["dcgan"]
    fam = spec.make_config("smoke")
    data = DataSpec("single", 16, 16, 3, {})
    buf = __import__("io").BytesIO()
    torch.save(inference_payload(spec, fam, data, spec.build(fam, data), {"step": 5}), buf)
    write_best(
        str(run),
        buf.getvalue(),
        {"step": 5, "metric": "kid", "value": results["kid"], "metrics": results, "protocol": protocol},
    )
    reg = str(tmp_path / "registry")
    entry = promote(str(run), "with-protocol", root=reg)
    assert entry["metric_protocol"] == protocol and get_entry("with-protocol", reg)["metric_protocol"] == protocol
    shown = subprocess.run(
        [sys.executable, "-m", "gansvc.registry", "--registry", reg, "show", "with-protocol"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0 and json.loads(shown.stdout)["metric_protocol"]["kid"]["seed"] == 2020

    from gansvc.serve.schemas import ModelInfo  # what GET /v1/models returns per model

    assert "metric_protocol" in ModelInfo.model_fields


def test_metrics_package_loads_lazily_and_its_names_are_its_functions() -> None:
    """`gansvc.metrics` loads its computing modules on first use (the CLIs' --help stays torch-free), and importing a
    submodule first never shadows an exported function (`evaluate` was once both a function and a submodule)."""
    code = (
        "import sys, types\n"
        "from gansvc.metrics import DEFAULT_EXTRACTOR, EXTRACTORS\n"
        "assert 'torch' not in sys.modules, 'the extractor names loaded torch'\n"
        "import gansvc.metrics.scoring, gansvc.metrics.distances\n"
        "from gansvc.metrics import describe_metrics, evaluate, metric_mode\n"
        "import gansvc.metrics as m\n"
        "for name in m.__all__:\n"
        "    assert not isinstance(getattr(m, name), types.ModuleType), name\n"
        "assert callable(evaluate) and metric_mode('fid') == 'min' and DEFAULT_EXTRACTOR in EXTRACTORS\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
