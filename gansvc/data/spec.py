"""What a family needs to know about a dataset to build its networks.

A `DataSpec` is derived from a dataset manifest plus the training transforms (target size), and is stored in every
checkpoint so that inference knows image size, channels and the attribute vocabulary without the dataset.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Layout = Literal["single", "unpaired"]
IGNORE_INDEX = 255  # segmentation mask value meaning "no label here" (left out of losses and scores)


def mask_key(stream: str) -> str:
    """The batch key of a stream's segmentation masks: "image" -> "mask", "A" -> "A_mask", "B" -> "B_mask"."""
    return "mask" if stream == "image" else f"{stream}_mask"


@dataclass(frozen=True)
class DataSpec:
    """Shape of the batches a family receives.

    Batches are dicts of tensors, images scaled to [-1, 1], NCHW float32:
    - layout "single":   {"image": (B, C, H, W)} plus {"labels": (B, n_attributes) int64} when `attributes` is non-empty
                         (column j holds the index of the value in `attributes[name_j]`, names in insertion order).
    - layout "unpaired": {"A": (B, C, H, W), "B": (B, C, H, W)}.
    Datasets with segmentation masks add, per image stream that has them, {"mask"} (single) or {"A_mask"} / {"B_mask"}
    (unpaired): (B, H, W) int64 class indices in [0, num_classes), 255 = ignore, geometrically aligned with the image.
    """

    layout: Layout
    height: int
    width: int
    channels: int
    # attribute name -> allowed values, in a fixed order (the label index is the position in this tuple)
    attributes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # classes of the dataset's segmentation masks (0: the dataset has no masks)
    num_classes: int = 0

    @property
    def image_size(self) -> int:
        """Side of a square training image; raises for non-square specs (noise-to-image families need squares)."""
        if self.height != self.width:
            raise ValueError(f"this family needs square images, the data is {self.height}x{self.width}: set data.size")
        return self.height

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["attributes"] = {k: list(v) for k, v in self.attributes.items()}
        if not self.num_classes:  # mask-less data serialises as before masks existed
            del d["num_classes"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataSpec:
        attrs = {str(k): tuple(str(x) for x in v) for k, v in dict(d.get("attributes") or {}).items()}
        return cls(
            layout=d["layout"],
            height=int(d["height"]),
            width=int(d["width"]),
            channels=int(d["channels"]),
            attributes=attrs,
            num_classes=int(d.get("num_classes") or 0),
        )
