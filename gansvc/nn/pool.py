"""History of generated images for the discriminator (Shrivastava et al. 2017; CycleGAN, Zhu et al. 2017 sec. 4:
"we update the discriminators using a history of generated images rather than the ones produced by the latest
generators. We keep an image buffer that stores the 50 previously created images").

Same rule as `ImagePool.query` of the official pytorch-CycleGAN-and-pix2pix code (util/image_pool.py): while the pool is
not full, each new image is stored and returned; once full, with probability 1/2 a random stored image is returned and
replaced by the new one, otherwise the new image is returned. The draws come from the pool's own `torch.Generator`,
whose state is part of `state_dict()`, so a restored checkpoint continues with the same draws.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


class ImagePool:
    """Stateful (state_dict / load_state_dict), kept in `GanState.extras`. size 0 disables it (query is identity)."""

    def __init__(self, size: int = 50, seed: int = 0) -> None:
        if size < 0:
            raise ValueError(f"pool size must be >= 0, got {size}")
        self.size = size
        self.images: list[Tensor] = []
        self.generator = torch.Generator(device="cpu")
        self.generator.manual_seed(seed)

    def __len__(self) -> int:
        return len(self.images)

    @torch.no_grad()
    def query(self, images: Tensor) -> Tensor:
        """A batch of the same shape as `images` (N, C, H, W), detached, mixing new and stored fakes."""
        images = images.detach()
        if self.size == 0:
            return images
        out: list[Tensor] = []
        for image in images:
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
                continue
            if torch.rand((), generator=self.generator).item() > 0.5:
                idx = int(torch.randint(self.size, (), generator=self.generator).item())
                out.append(self.images[idx].to(image.device))
                self.images[idx] = image.clone()
            else:
                out.append(image)
        return torch.stack(out)

    def state_dict(self) -> dict[str, Any]:
        return {"size": self.size, "images": [t.clone() for t in self.images], "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["size"]) != self.size:
            raise ValueError(f"image pool size differs: checkpoint {state['size']}, config {self.size}")
        self.images = [t.clone() for t in state["images"]]
        self.generator.set_state(state["generator"].to("cpu", torch.uint8))
