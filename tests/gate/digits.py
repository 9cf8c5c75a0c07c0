"""Real data for the sample-quality gate, and its independent scorer.

Data: scikit-learn's bundled handwritten digits (`sklearn.datasets.load_digits`: 1,797 8x8 grey images, ink 0..16,
10 classes; the UCI "Optical Recognition of Handwritten Digits" test set that ships inside the scikit-learn wheel, so
no download). dcgan's smallest image size is 16 (gansvc.nn.dcgan_blocks.MIN_SIZE), so every image is upscaled 8x8 ->
16x16 with bilinear interpolation (PIL) after mapping ink 0..16 to grey 0..255 (white ink on black, as loaded).

Scorer: a classifier trained on the real 16x16 digits only (never on generated images), a multinomial logistic
regression on the 256 pixels (held-out accuracy printed by the gate). From its p(y|x) on generated images:
- `inception_score`: the Inception-Score analogue exp(E_x KL(p(y|x) || p(y))) of Salimans et al. 2016 (their formula,
  with this classifier in place of Inception): high when each sample is confidently one digit and all digits appear.
  Its maximum is the number of classes (10).
- `coverage`: the number of classes that receive at least `share` of the confident predictions (max p(y|x) >= conf),
  i.e. how many digits the generator draws recognisably, whatever it does with the rest.
The real images' own scores are the reference the gate prints next to the generated ones.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 16  # dcgan's minimum image size; the 8x8 digits are upscaled to it
N_CLASSES = 10


def load_digits_16() -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 16, 16) uint8 0..255, labels (N,) int64) of scikit-learn's digits, upscaled bilinearly."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    small = np.clip(bunch.images * (255.0 / 16.0), 0, 255).round().astype(np.uint8)  # ink 0..16 -> grey 0..255
    big = np.stack([np.asarray(Image.fromarray(im).resize((SIZE, SIZE), Image.Resampling.BILINEAR)) for im in small])
    return big, bunch.target.astype(np.int64)


def write_folder(out: Path) -> Path:
    """All digits as `train/NNNNN.png` (mode L) plus `labels.csv` (attribute `digit`): the layout `data put` takes."""
    images, labels = load_digits_16()
    (out / "train").mkdir(parents=True, exist_ok=True)
    with open(out / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "digit"])
        for i, (im, y) in enumerate(zip(images, labels, strict=True)):
            name = f"train/{i:05d}.png"
            Image.fromarray(im).save(out / name)
            w.writerow([name, str(int(y))])
    return out


def read_pngs(folder: Path) -> np.ndarray:
    """Every PNG directly in `folder` (sorted; grid.png left out) as (N, 16, 16) uint8 grey."""
    files = sorted(p for p in folder.glob("*.png") if p.name != "grid.png")
    if not files:
        raise FileNotFoundError(f"no generated PNGs in {folder}")
    return np.stack(
        [np.asarray(Image.open(p).convert("L").resize((SIZE, SIZE), Image.Resampling.BILINEAR)) for p in files]
    )


def _features(images: np.ndarray) -> np.ndarray:
    return images.reshape(len(images), -1).astype(np.float64) / 255.0


def inception_score(probabilities: np.ndarray) -> float:
    """exp(E_x KL(p(y|x) || p(y))) of class probabilities (N, K), p(y) their mean over the images (Salimans et al.
    2016). Shared by the gates' scorers (this one and tests/gate/shapes.py)."""
    p = np.clip(probabilities, 1e-12, 1.0)
    marginal = p.mean(axis=0, keepdims=True)
    return float(np.exp(np.mean(np.sum(p * (np.log(p) - np.log(marginal)), axis=1))))


@dataclass(frozen=True)
class Scorer:
    """The independent classifier and the scores computed from it."""

    model: object
    held_out_accuracy: float

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        return self.model.predict_proba(_features(images))  # type: ignore[attr-defined]

    def inception_score(self, images: np.ndarray) -> float:
        return inception_score(self.probabilities(images))

    def coverage(self, images: np.ndarray, conf: float = 0.8, share: float = 0.02) -> int:
        """Classes with at least `share` of the images predicted confidently (max p >= conf) as that class."""
        p = self.probabilities(images)
        confident = p.max(axis=1) >= conf
        counts = np.bincount(p.argmax(axis=1)[confident], minlength=N_CLASSES)
        return int(np.sum(counts >= share * len(images)))

    def confident_share(self, images: np.ndarray, conf: float = 0.8) -> float:
        return float(np.mean(self.probabilities(images).max(axis=1) >= conf))


def train_scorer(seed: int = 0) -> Scorer:
    """Logistic regression on a stratified 75 % of the real digits; accuracy on the other 25 %, then refit on all."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    images, labels = load_digits_16()
    x = _features(images)
    x_tr, x_te, y_tr, y_te = train_test_split(x, labels, test_size=0.25, random_state=seed, stratify=labels)
    held = LogisticRegression(C=0.5, max_iter=2000).fit(x_tr, y_tr)
    accuracy = float(held.score(x_te, y_te))
    return Scorer(LogisticRegression(C=0.5, max_iter=2000).fit(x, labels), accuracy)
