"""Segmentation masks in datasets, the `segmenter` and `semantic-cyclegan` families, mIoU and the semantic loss.

Against the real S3 server (put, pipeline, checkpoints) and, for the loop, a real Ray instance. CPU only, tiny nets.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gansvc import local, losses, storage
from gansvc.checkpoint import MODEL_FILE, inference_payload, load_inference, read_best
from gansvc.data.__main__ import main as data_main
from gansvc.data.ingest import DatasetError, put
from gansvc.data.manifest import Manifest, read_manifest
from gansvc.data.pipeline import BatchStream, DataConfig, ImageDataset
from gansvc.data.spec import DataSpec
from gansvc.families import FAMILIES
from gansvc.families import semantic_cyclegan as semcg
from gansvc.metrics.segmentation import confusion_matrix, iou_per_class, mean_iou
from gansvc.nn.segnet import FrozenSegmenter, SegNet
from gansvc.nn.unet import UnetGenerator
from gansvc.train.__main__ import main as train_main

SEG, SEMCG = FAMILIES["segmenter"], FAMILIES["semantic-cyclegan"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def datasets(stack: local.StackState, synth_put: Callable[..., str]) -> dict[str, str]:
    root = f"s3://{stack.bucket}/semantic-data"
    uris = {"shapes-seg": f"{root}/shapes-seg", "stripes-masks": f"{root}/stripes-masks", "stripes": f"{root}/stripes"}
    synth_put("shapes-seg", uris["shapes-seg"], count=64, size=16, seed=0, test_count=16)
    synth_put("stripes", uris["stripes-masks"], count=16, size=16, seed=0, test_count=4, masks=True)
    synth_put("stripes", uris["stripes"], count=8, size=16, seed=0, test_count=2)
    return uris


def _png(path: Path, arr: np.ndarray, mode: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode).save(path)


def _image(seed: int, h: int = 16, w: int = 20) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _mask(h: int = 16, w: int = 20, k: int = 3) -> np.ndarray:
    return (np.arange(h * w).reshape(h, w) % k).astype(np.uint8)


# --------------------------------------------------------------------------------------------------- metrics, losses


def test_mean_iou_against_a_hand_computation() -> None:
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 1]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 2, 2]])
    # valid pixels (target != 255): (t, p) = (0,0) (0,1) (1,1) (1,1) (2,2) (2,0) (1,2)
    # class 0: TP 1, FP 1 (t2 p0), FN 1 (t0 p1) -> 1/3; class 1: TP 2, FP 1, FN 1 -> 2/4;
    # class 2: TP 1, FP 1, FN 1 -> 1/3
    expected = (1 / 3 + 2 / 4 + 1 / 3) / 3
    assert mean_iou(pred, target, 3) == pytest.approx(expected)
    cm = confusion_matrix(pred, target, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 1], [1, 0, 1]] and int(cm.sum()) == 7
    # class 3 absent from prediction and truth: left out of the mean, not counted as 0
    assert mean_iou(pred, target, 4) == pytest.approx(expected)
    assert math.isnan(float(iou_per_class(confusion_matrix(pred, target, 4))[3]))
    assert mean_iou(target.clamp(max=2), target.clamp(max=2), 3) == 1.0
    assert math.isnan(mean_iou(torch.zeros(2, 2), torch.full((2, 2), 255), 3)), "no counted pixel: NaN"
    with pytest.raises(ValueError, match="outside"):
        mean_iou(pred, target, 2)


def test_semantic_loss_against_a_hand_computation() -> None:
    src = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2).requires_grad_()
    out = torch.tensor([[1.5, 2.0], [1.0, 6.0]]).view(1, 1, 2, 2).requires_grad_()
    loss = losses.semantic_loss(src, out)
    assert float(loss.detach()) == pytest.approx((0.25 + 0 + 4 + 4) / 4)
    loss.backward()
    assert src.grad is None, "the source features are the fixed target"
    assert torch.allclose(out.grad, 2 * (out - src).detach() / 4)
    with pytest.raises(ValueError, match="shape"):
        losses.semantic_loss(src, out.view(1, 4, 1, 1))


def test_semantic_terms_use_the_frozen_network_in_both_directions() -> None:
    """sem_A = L2(Sem_A(a), Sem_B(G_A(a))), sem_B = L2(Sem_B(b), Sem_A(G_B(b))), recomputed by hand; gradients reach
    the fakes, never the segmenter's weights."""
    torch.manual_seed(0)
    sem_a, sem_b = (FrozenSegmenter(SegNet("tiny", 3, 4), f"s{i}") for i in range(2))
    a, b = torch.rand(2, 3, 16, 16) * 2 - 1, torch.rand(2, 3, 16, 16) * 2 - 1
    fake_b, fake_a = (torch.rand(2, 3, 16, 16) * 2 - 1).requires_grad_(), (torch.rand(2, 3, 16, 16) * 2 - 1)
    ta, tb = semcg.semantic_terms(sem_a, sem_b, a, b, fake_b, fake_a.requires_grad_(), "logits")
    with torch.no_grad():
        want_a = ((sem_b.net(fake_b) - sem_a.net(a)) ** 2).mean()
        want_b = ((sem_a.net(fake_a) - sem_b.net(b)) ** 2).mean()
    assert float(ta.detach()) == pytest.approx(float(want_a), rel=1e-5)
    assert float(tb.detach()) == pytest.approx(float(want_b), rel=1e-5)
    (ta + tb).backward()
    assert fake_b.grad is not None and fake_b.grad.abs().sum() > 0
    assert all(p.grad is None for p in sem_a.net.parameters()), "the segmenter stays frozen"
    backbone = semcg.semantic_terms(sem_a, sem_a, a, b, fake_b.detach(), fake_a.detach(), "backbone")
    assert all(float(t) > 0 for t in backbone)


# ---------------------------------------------------------------------------------------------------------- U-Net


@pytest.mark.parametrize("size", [(20, 28), (28, 20), (12, 36)])
def test_unet_generators_keep_any_multiple_of_four_size_both_directions(size: tuple[int, int]) -> None:
    h, w = size
    cfg = SEMCG.make_config("smoke")
    state = SEMCG.build(cfg, DataSpec("unpaired", h, w, 3))
    nets = state.inference_nets()
    x = torch.rand(2, 3, h, w) * 2 - 1
    for direction in ("a2b", "b2a"):
        y = SEMCG.translate(nets, x, direction, cfg)["image"]
        assert y.shape == x.shape and float(y.abs().max()) <= 1.0
    assert SEMCG.translate(nets, torch.rand(1, 3, h + 3, w - 1), "a2b", cfg)["image"].shape == (1, 3, h + 3, w - 1)
    # the official unet_256 layout: 8 levels, outermost keys model.model.0 / model.model.3 (the transposed conv)
    keys = UnetGenerator(3, 3, 8, 8).state_dict()
    assert keys["model.model.0.weight"].shape == (8, 3, 4, 4) and keys["model.model.3.weight"].shape == (16, 3, 4, 4)


# ----------------------------------------------------------------------------------------------- masks at put


def test_put_masks_valid_and_invalid(tmp_path: Path, s3_prefix: str) -> None:
    src = tmp_path / "src"
    for i in range(3):  # valid pairs (one image a JPEG: its mask is still .png)
        _png(src / "train" / f"ok{i}.png", _image(i), "RGB")
        _png(src / "train_masks" / f"ok{i}.png", _mask(), "L")
    Image.fromarray(_image(9)).save(src / "train" / "photo.jpg")
    pal = Image.fromarray(_mask(k=4), "P")
    pal.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 12))
    pal.save(src / "train_masks" / "photo.png")
    _png(src / "train" / "small.png", _image(3), "RGB")
    _png(src / "train_masks" / "small.png", _mask(8, 8), "L")  # size mismatch
    _png(src / "train" / "range.png", _image(4), "RGB")
    _png(src / "train_masks" / "range.png", np.full((16, 20), 7, np.uint8), "L")  # 7 >= 4 classes
    _png(src / "train" / "rgbmask.png", _image(5), "RGB")
    _png(src / "train_masks" / "rgbmask.png", _image(6), "RGB")  # not single-channel
    _png(src / "train" / "nomask.png", _image(7), "RGB")  # orphan image
    _png(src / "train_masks" / "noimage.png", _mask(), "L")  # orphan mask
    ignore = _mask()
    ignore[0, :] = 255
    _png(src / "test" / "t0.png", _image(8), "RGB")
    _png(src / "test_masks" / "t0.png", ignore, "L")
    (src / "classes.txt").write_text("road\ncar\nsky\nperson\n")
    m = put(str(src), s3_prefix, quiet=True).manifest
    assert m == read_manifest(s3_prefix)
    assert m.num_classes == 4 and m.classes == ["road", "car", "sky", "person"]
    assert m.splits["train"].files == ["train/ok0.png", "train/ok1.png", "train/ok2.png", "train/photo.jpg"]
    assert m.splits["train"].masks["train/photo.jpg"] == "train_masks/photo.png"
    assert m.splits["test"].masks == {"test/t0.png": "test_masks/t0.png"}
    reasons = {s.path: s.reason for s in m.skipped}
    assert "mask is 8x8 but its image train/small.png is 20x16" in reasons["train_masks/small.png"]
    assert "its mask train_masks/small.png is invalid" in reasons["train/small.png"]
    assert "values 7 out of range" in reasons["train_masks/range.png"] and "train/range.png" in reasons
    assert "mode L or P" in reasons["train_masks/rgbmask.png"] and "train/rgbmask.png" in reasons
    assert "no mask: expected train_masks/nomask.png" in reasons["train/nomask.png"]
    assert "no image for this mask" in reasons["train_masks/noimage.png"]
    assert storage.exists(f"{s3_prefix}/{m.object_rel('classes.txt')}")
    assert storage.exists(f"{s3_prefix}/{m.object_rel('train_masks/photo.png')}")
    assert not storage.exists(f"{s3_prefix}/{m.object_rel('train_masks/noimage.png')}"), (
        "skipped files are not uploaded"
    )
    # without classes.txt: K = max value + 1, and a P mask's palette indices are its classes
    (src / "classes.txt").unlink()
    assert put(str(src), f"{s3_prefix}-k", quiet=True).manifest.num_classes == 8  # range.png's 7 is valid now
    # a manifest written before masks existed still loads, as a dataset without masks
    old = {k: v for k, v in m.model_dump().items() if k not in ("num_classes", "classes")}
    old["splits"] = {k: {f: x for f, x in v.items() if f != "masks"} for k, v in old["splits"].items()}
    legacy = Manifest.model_validate(old)
    assert legacy.num_classes == 0 and legacy.masked_splits() == [] and legacy.data_spec().num_classes == 0
    assert DataSpec.from_dict({"layout": "single", "height": 8, "width": 8, "channels": 3}).num_classes == 0
    spec = read_manifest(s3_prefix).data_spec()
    assert spec.num_classes == 4 and DataSpec.from_dict(spec.to_dict()) == spec
    # the synthetic datasets with masks, from the CLI
    assert data_main(["synth", "shapes-seg", f"{s3_prefix}-ss", "--count", "6", "--size", "16", "--quiet"]) == 0
    ss = read_manifest(f"{s3_prefix}-ss")
    assert ss.num_classes == 4 and ss.classes[0] == "background" and ss.masked_splits() == ["train", "test"]
    assert data_main(["synth", "stripes", f"{s3_prefix}-st", "--count", "4", "--size", "16", "--masks", "--quiet"]) == 0
    assert read_manifest(f"{s3_prefix}-st").masked_splits() == ["trainA", "trainB", "testA", "testB"]
    assert data_main(["synth", "shapes", f"{s3_prefix}-no", "--masks", "--quiet"]) == 2
    bad = tmp_path / "bad"
    _png(bad / "train" / "x.png", _image(0), "RGB")
    (bad / "classes.txt").write_text("a\nb\n")
    with pytest.raises(DatasetError, match="no masks"):
        put(str(bad), f"{s3_prefix}-bad", quiet=True)


# --------------------------------------------------------------------------------------------------------- pipeline


def test_pipeline_masks_follow_the_image_geometry(tmp_path: Path, s3_prefix: str) -> None:
    """Images whose grey level encodes the class (class * 80) in large blocks: after crop and flip the mask must be the
    image's class map exactly; after a (bicubic vs nearest) resize, away from block edges."""
    src = tmp_path / "src"
    rng = np.random.default_rng(0)
    for i in range(8):
        cls = np.kron(rng.integers(0, 4, (6, 5)), np.ones((4, 4), np.int64)).astype(np.uint8)  # 24 x 20
        _png(src / "train" / f"{i}.png", np.repeat((cls * 80)[:, :, None], 3, axis=2), "RGB")
        _png(src / "train_masks" / f"{i}.png", cls, "L")
    put(str(src), s3_prefix, quiet=True)
    crop = ImageDataset(DataConfig(uri=s3_prefix, size=(16, 12), load_size=(24, 20), cache_dir=""))
    assert crop.spec.num_classes == 4 and crop.spec.height == 16 and crop.spec.width == 12

    def classes(image: torch.Tensor) -> torch.Tensor:  # the class map the grey levels encode
        return torch.round((image[..., 0, :, :] + 1) * 127.5 / 80).long()

    stream = BatchStream(crop, batch_size=8, seed=3)
    batch = next(stream)
    stream.close()
    assert batch["mask"].shape == (8, 16, 12) and batch["mask"].dtype == torch.int64
    assert torch.equal(classes(batch["image"]), batch["mask"]), "same crop and flip for image and mask"
    sample = crop.epoch_samples(0, 3, 0, 1)[0]
    assert sample.masks["mask"].startswith("train_masks/")
    views = [crop.load_sample(sample, np.random.default_rng(s)) for s in range(8)]
    assert len({v["mask"].numpy().tobytes() for v in views}) > 2, "crops and flips vary between draws"
    assert all(torch.equal(classes(v["image"]), v["mask"]) for v in views)
    resized = ImageDataset(DataConfig(uri=s3_prefix, size=(12, 10), cache_dir=""))  # 24x20 -> 12x10
    stream = BatchStream(resized, batch_size=8, seed=1)
    batch = next(stream)
    stream.close()
    assert set(batch["mask"].unique().tolist()) <= {0, 1, 2, 3}, "nearest resize invents no class"
    assert (classes(batch["image"]).clamp(0, 3) == batch["mask"]).float().mean() > 0.9


def test_unpaired_masks_and_random_flips_agree(datasets: dict[str, str]) -> None:
    ds = ImageDataset(DataConfig(uri=datasets["stripes-masks"], cache_dir=""))
    assert ds.spec.num_classes == 2 and set(ds.masks) == {"A", "B"}
    stream = BatchStream(ds, batch_size=8, seed=0)
    batch = next(stream)
    stream.close()
    assert set(batch) == {"A", "B", "A_mask", "B_mask"} and batch["A_mask"].shape == (8, 16, 16)
    # blobs are brown on green grass: the red-minus-green sign tells blob from grass, flipped or not
    blob = (batch["A"][:, 0] - batch["A"][:, 1]) > 0
    assert (blob == batch["A_mask"].bool()).float().mean() > 0.9
    plain = ImageDataset(DataConfig(uri=datasets["stripes"], cache_dir=""))
    assert plain.masks == {} and plain.spec.num_classes == 0


# -------------------------------------------------------------------------------------------------------- families


def test_segmenter_learns_shapes_seg(datasets: dict[str, str]) -> None:
    ds = ImageDataset(DataConfig(uri=datasets["shapes-seg"], cache_dir=""))
    test = ImageDataset(DataConfig(uri=datasets["shapes-seg"], split="test", flip=False, cache_dir=""))
    stream = BatchStream(test, batch_size=16)
    held_out = next(stream)
    stream.close()
    cfg = SEG.make_config("smoke")
    assert (cfg.lr, cfg.optimizer, SEG.make_config().arch) == (1e-3, "adam", "deeplabv3_mobilenet_v3_large")
    torch.manual_seed(0)
    state = SEG.build(cfg, ds.spec)

    def score() -> float:
        state.nets["S"].eval()
        try:
            return SEG.evaluate(state, [held_out], cfg)["miou"]
        finally:
            state.nets["S"].train()

    before = score()
    stream = BatchStream(ds, batch_size=8, seed=0)
    for step in range(150):
        out = SEG.train_step(state, next(stream), step, cfg)
    stream.close()
    after = score()
    # predicting background everywhere scores about 0.2 here (IoU_bg ~ 0.8 over 4 classes)
    assert after > 0.5 and after > before + 0.3, (before, after)
    assert out["loss_seg"] < 0.3
    pred = SEG.translate(state.inference_nets(), held_out["image"], "a2b", cfg)
    assert pred["mask"].shape == (16, 16, 16) and pred["image"].shape == (16, 3, 16, 16)
    with pytest.raises(ValueError, match="segmentation masks"):
        SEG.build(cfg, DataSpec("unpaired", 16, 16, 3))


def _tiny_segmenter_checkpoint(root: str, data: DataSpec) -> tuple[str, torch.Tensor]:
    """A checkpoint directory with the model.pt of a tiny segmenter after one real training step."""
    cfg = SEG.make_config("smoke")
    state = SEG.build(cfg, data)
    batch = {"A": torch.rand(2, 3, 16, 16) * 2 - 1, "A_mask": torch.randint(0, data.num_classes, (2, 16, 16))}
    SEG.train_step(state, batch, 0, cfg)
    buf = io.BytesIO()
    torch.save(inference_payload(SEG, cfg, data, state, {"step": 1}), buf)
    storage.write_bytes(f"{root}/checkpoint-00000001/{MODEL_FILE}", buf.getvalue())
    return f"{root}/checkpoint-00000001", state.nets["S"].net.classifier.weight.detach().clone()


def test_semantic_cyclegan_step_with_a_trained_segmenter_checkpoint(s3_prefix: str) -> None:
    data = DataSpec("unpaired", 16, 16, 3, num_classes=3)
    ckpt, weight = _tiny_segmenter_checkpoint(s3_prefix, data)
    assert load_inference(ckpt).spec.name == "segmenter"
    cfg = SEMCG.make_config("smoke", {"segmenter": ckpt})
    state = SEMCG.build(cfg, data)
    sem_a, sem_b = semcg.segmenters(state)
    assert sem_a is sem_b and torch.equal(sem_a.net.net.classifier.weight, weight), "the checkpoint's weights"
    before = {k: v.clone() for k, v in sem_a.net.state_dict().items()}
    batch = {
        "A": torch.rand(2, 3, 16, 16) * 2 - 1,
        "B": torch.rand(2, 3, 16, 16) * 2 - 1,
        "A_mask": torch.randint(0, 3, (2, 16, 16)),
    }
    out = SEMCG.train_step(state, batch, 0, cfg)
    assert {"sem_A", "sem_B", "cycle_A", "G_A", "D_A"} <= set(out) and all(math.isfinite(v) for v in out.values())
    assert out["sem_A"] > 0 and out["G"] > 10 * (out["cycle_A"] + out["cycle_B"])
    assert all(torch.equal(v, before[k]) for k, v in sem_a.net.state_dict().items()), "frozen: BN stats too"
    scores = SEMCG.evaluate(state, [batch], cfg)
    assert set(scores) == {"fcn_miou", "fcn_pixel_acc", "fcn_miou_real"} and 0 <= scores["fcn_miou"] <= 1
    assert set(scores) == set(SEMCG.extra_metrics), (
        "every metric evaluate returns is declared (FamilySpec.extra_metrics)"
    )
    assert SEMCG.evaluate(state, [{k: v for k, v in batch.items() if k != "A_mask"}], cfg) == {}
    # the same weights as a plain state dict of the architecture (torchvision-style keys), and a second network for B
    plain = f"{s3_prefix}/plain.pt"
    buf = io.BytesIO()
    torch.save(sem_a.net.net.state_dict(), buf)
    storage.write_bytes(plain, buf.getvalue())
    both = SEMCG.build(SEMCG.make_config("smoke", {"segmenter": ckpt, "segmenter_b": plain}), data)
    seg_a, seg_b = semcg.segmenters(both)
    assert seg_a is not seg_b and seg_b.digest == seg_a.digest == sem_a.digest, "the same weights, read back"
    # a checkpoint keeps the segmenter's digest; resuming with other segmenter weights is refused
    with pytest.raises(ValueError, match="differ"):
        state.extras["segmenter_A"].load_state_dict({"digest": "other", "source": "x"})
    with pytest.raises(ValueError, match="not a segmenter"):
        cyc = FAMILIES["cyclegan"]
        buf = io.BytesIO()
        torch.save(
            inference_payload(cyc, cyc.make_config("smoke"), data, cyc.build(cyc.make_config("smoke"), data)), buf
        )
        storage.write_bytes(f"{s3_prefix}/cyc/{MODEL_FILE}", buf.getvalue())
        SEMCG.build(SEMCG.make_config("smoke", {"segmenter": f"{s3_prefix}/cyc"}), data)


def test_missing_segmenter_weights_stop_the_run_at_start(
    datasets: dict[str, str], s3_prefix: str, capsys: pytest.CaptureFixture
) -> None:
    data = DataSpec("unpaired", 64, 64, 3)
    for cfg in (SEMCG.make_config(), SEMCG.make_config("report")):
        with pytest.raises(ValueError) as err:
            SEMCG.build(cfg, data)
        assert "model.segmenter is not set" in str(err.value)
        assert "python -m gansvc.train segmenter" in str(err.value) and "--set model.segmenter=s3://" in str(err.value)
    with pytest.raises(ValueError, match="cannot read the segmenter weights"):
        SEMCG.build(SEMCG.make_config(overrides={"segmenter": f"{s3_prefix}/nothing"}), data)
    code = train_main(
        [
            "semantic-cyclegan",
            "--dataset",
            datasets["stripes"],
            "--storage",
            s3_prefix,
            "--name",
            "x",
            "--max-steps",
            "2",
            "--batch-size",
            "1",
            "--dry-run",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "Traceback" not in err
    assert "model.segmenter is not set" in err and "python -m gansvc.train segmenter" in err
    assert not list(storage.list_objects(f"{s3_prefix}/x")), "nothing started"


# ------------------------------------------------------------------------------------------------------- the loop


@pytest.mark.slow
def test_both_families_train_and_evaluate_through_the_loop(
    ray_stack: local.StackState,
    datasets: dict[str, str],
    s3_prefix: str,
) -> None:
    """segmenter (2 DDP workers) on stripes with masks: mIoU picks its best checkpoint; semantic-cyclegan then uses
    that run's checkpoint as its frozen segmenter and reports the FCN score."""
    common = [
        "--dataset",
        datasets["stripes-masks"],
        "--storage",
        s3_prefix,
        "--preset",
        "smoke",
        "--batch-size",
        "2",
        "--checkpoint-every",
        "2",
        "--eval-every",
        "2",
        "--log-every",
        "1",
    ]
    assert train_main(["segmenter", "--name", "seg", "--num-workers", "2", "--max-steps", "4", *common]) == 0
    objects = {o.rel for o in storage.list_objects(f"{s3_prefix}/seg")}
    assert {"checkpoint-00000004/model.pt", "samples/step-00000004.png", "best/meta.json"} <= objects
    assert read_best(f"{s3_prefix}/seg") is not None, "best/ names a model whose hash matches"
    meta = storage.read_json(f"{s3_prefix}/seg/checkpoint-00000004/meta.json")
    assert meta["metrics"]["replicas_identical"] == 1.0 and 0 <= meta["metrics"]["miou"] <= 1
    best = storage.read_json(f"{s3_prefix}/seg/best/meta.json")
    history = storage.read_json(f"{s3_prefix}/seg/history.json")
    assert best["metric"] == "miou" and best["value"] == max(h["miou"] for h in history if "miou" in h)
    with Image.open(io.BytesIO(storage.read_bytes(f"{s3_prefix}/seg/samples/step-00000004.png"))) as grid:
        assert grid.size == (4 * 18 + 2, 6 * 18 + 2), "4 test images; rows A, prediction, truth, B, prediction, truth"
    seg_ckpt = f"{s3_prefix}/seg/checkpoint-00000004"
    assert (
        train_main(
            [
                "semantic-cyclegan",
                "--name",
                "sem",
                "--max-steps",
                "2",
                *common,
                "--set",
                f"model.segmenter={seg_ckpt}",
                "--set",
                "metrics.samples=32",
            ]
        )
        == 0
    )
    meta = storage.read_json(f"{s3_prefix}/sem/checkpoint-00000002/meta.json")
    assert {"fcn_miou", "fcn_miou_real", "swd", "sem_A"} <= set(meta["metrics"])
    model = load_inference(f"{s3_prefix}/sem/checkpoint-00000002")
    assert model.config.segmenter == seg_ckpt and set(model.nets) == {"G_A", "G_B"}


def test_the_fcn_metrics_are_declared_by_the_family_and_read_from_the_declaration() -> None:
    """issue 16 #3: the fcn_* metrics are semantic-cyclegan's declaration, not entries of the shared metric table, and
    what reads metric directions (Tune's mode, best-checkpoint selection) and the curves' quality panel reads them
    from it."""
    from gansvc.families import metric_mode
    from gansvc.metrics import METRICS
    from gansvc.train.evaluation import QUALITY_KEYS, is_train_term, quality_keys

    assert not any(k.startswith("fcn_") for k in METRICS) and "fcn_miou" not in QUALITY_KEYS
    assert {k: m.mode for k, m in SEMCG.extra_metrics.items()} == {
        "fcn_miou": "max",
        "fcn_pixel_acc": "max",
        "fcn_miou_real": "max",
    }
    assert [metric_mode(k) for k in ("fcn_miou", "fcn_miou_real", "miou", "kid", "unknown")] == [
        "max",
        "max",
        "max",
        "min",
        "min",
    ]
    keys = quality_keys(SEMCG)
    assert keys == (*QUALITY_KEYS, "fcn_miou")  # curves.png draws fcn_miou with the quality metrics, as before
    assert not is_train_term("fcn_miou", keys) and is_train_term("fcn_pixel_acc", keys) and is_train_term("sem_A", keys)
    assert quality_keys(FAMILIES["cyclegan"]) == QUALITY_KEYS
    assert SEMCG.selection_metric() is None and FAMILIES["segmenter"].selection_metric() == "miou"
    assert [s.name for s in FAMILIES.values() if s.selection_metric() is not None] == [
        s.name for s in FAMILIES.values() if s.task == "segment"
    ]
