"""gansvc.config: strict experiment configs and the messages their errors give."""

from __future__ import annotations

import pytest

from gansvc.config import ConfigError, build_config, did_you_mean


def _raw(**sections: dict) -> dict:
    raw = {"family": "dcgan", "data": {"uri": "/nowhere"}, "loop": {"max_steps": 3}}
    for name, values in sections.items():
        raw[name] = {**raw.get(name, {}), **values}
    return raw


@pytest.mark.parametrize(("sections", "expected"), [
    ({"model": {"lr": 1}}, "model.lr: Extra inputs are not permitted (did you mean lr_g, lr_d?)"),
    ({"loop": {"batchsize": 2}}, "loop.batchsize: Extra inputs are not permitted (did you mean batch_size?)"),
    ({"data": {"flp": False}}, "data.flp: Extra inputs are not permitted (did you mean flip?)"),
])
def test_unknown_field_suggests_the_close_names(sections: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        build_config(_raw(**sections))
    assert expected in str(err.value)


def test_unknown_field_with_no_close_name_lists_the_fields() -> None:
    with pytest.raises(ConfigError) as err:
        build_config(_raw(model={"zzzz": 1}))
    assert "model.zzzz: Extra inputs are not permitted; the fields here are: latent_dim," in str(err.value)
    assert did_you_mean("x", []) == ""
