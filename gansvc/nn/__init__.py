"""Networks and layers the families are built from.

Modules are imported directly (e.g. `from gansvc.nn.dcgan_blocks import Generator`); this package file stays empty so
that importing one block never pulls in the others.

- `dcgan_blocks`: DCGAN-style generator / discriminator (critic) with the anime-face DCGAN report's knobs and
  optional conditioning (one-hot labels into G, one auxiliary softmax head per attribute in D).
- `noise`: Gaussian instance noise layers for D and their annealing schedule.
- `ema`: exponential moving average copies of generator weights.
- `wrappers`: `unwrap`, the plain module behind DDP / torch.compile wrappers.
- `resnet`, `unet`, `patchgan`, `ugatit`, `segnet`: image-to-image and segmentation networks; `pool`: image history
  pools; `i2i_util`: weight init and padding for translation.
Networks and layers only: training steps, config fields and schedules live in `gansvc.families` (e.g.
`families.adversarial`, `families.gan_fields`, `families.cycle`, `families.training`).
"""
