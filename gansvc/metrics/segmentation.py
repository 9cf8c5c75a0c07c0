"""Segmentation scores: confusion matrix, per-class IoU, mean IoU, pixel accuracy (the fixed palette that colours
masks is `gansvc.nn.segnet.colorize`: metrics sit below the networks and never import them).

mIoU convention (Long et al. 2015 / the Cityscapes and pix2pix "FCN score" evaluations): counts are pooled over all
pixels of all images first; IoU_c = TP_c / (TP_c + FP_c + FN_c); the mean is over the classes whose union
(TP + FP + FN) is not empty, so a class absent from both prediction and truth neither helps nor hurts. Pixels whose
target is `ignore_index` (255) are left out entirely. With no counted pixel at all the mIoU is NaN.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from gansvc.data.spec import IGNORE_INDEX


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """(K, K) int64 counts, rows = true class, columns = predicted class, over pixels whose target is not ignored.

    `pred` and `target` are integer tensors of the same shape (any, e.g. (N, H, W)). Targets outside [0, K) other than
    `ignore_index`, and predictions outside [0, K), are errors.
    """
    if pred.shape != target.shape:
        raise ValueError(f"prediction and target differ in shape: {tuple(pred.shape)} vs {tuple(target.shape)}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    t = target.reshape(-1).long()
    p = pred.reshape(-1).long().to(t.device)
    keep = t != ignore_index
    t, p = t[keep], p[keep]
    if t.numel():
        if int(t.min()) < 0 or int(t.max()) >= num_classes:
            raise ValueError(f"target classes outside [0, {num_classes}) (other than {ignore_index} = ignore)")
        if int(p.min()) < 0 or int(p.max()) >= num_classes:
            raise ValueError(f"predicted classes outside [0, {num_classes})")
    return torch.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def iou_per_class(confusion: Tensor) -> Tensor:
    """IoU of each class from a confusion matrix; NaN where the class is in neither prediction nor truth."""
    cm = confusion.double()
    tp = cm.diagonal()
    union = cm.sum(0) + cm.sum(1) - tp
    return torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, math.nan))


def miou_from_confusion(confusion: Tensor) -> float:
    ious = iou_per_class(confusion)
    valid = ~torch.isnan(ious)
    return float(ious[valid].mean()) if bool(valid.any()) else math.nan


def pixel_accuracy(confusion: Tensor) -> float:
    total = int(confusion.sum())
    return float(confusion.diagonal().sum()) / total if total else math.nan


def mean_iou(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX) -> float:
    """Mean IoU of predicted class maps against target class maps (see the module doc for the convention)."""
    return miou_from_confusion(confusion_matrix(pred, target, num_classes, ignore_index))
