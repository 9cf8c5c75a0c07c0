"""Building blocks shared by the families.

Modules are imported directly (e.g. `from gansvc.nn.dcgan_blocks import Generator`); this package file stays empty so
that importing one block never pulls in the others.

- `dcgan_blocks`: DCGAN-style generator / discriminator (critic) with the anime-face DCGAN report's knobs and
  optional conditioning (one-hot labels into G, one auxiliary softmax head per attribute in D).
- `noise`: Gaussian instance noise layers for D and their annealing schedule.
- `ema`: exponential moving average copies of generator weights.
- `gan_fields`: the pydantic field groups the conv GAN family configs are made of, and the optimizer factory.
- `adversarial`: the D / G training steps, n_critic scheduling, weight clipping, EMA update and generation shared by
  the dcgan, wgan, wgan-gp, acgan and wacgan families.
"""
