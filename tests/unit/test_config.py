"""gansvc.config: strict experiment configs and the messages their errors give."""

from __future__ import annotations

import pytest

from gansvc.config import ConfigError, build_config, did_you_mean


def _raw(**sections: dict) -> dict:
    raw = {"family": "dcgan", "data": {"uri": "/nowhere"}, "loop": {"max_steps": 3}}
    for name, values in sections.items():
        raw[name] = {**raw.get(name, {}), **values}
    return raw


@pytest.mark.parametrize(
    ("sections", "expected"),
    [
        ({"model": {"lr": 1}}, "model.lr: Extra inputs are not permitted (did you mean lr_g, lr_d?)"),
        ({"loop": {"batchsize": 2}}, "loop.batchsize: Extra inputs are not permitted (did you mean batch_size?)"),
        ({"data": {"flp": False}}, "data.flp: Extra inputs are not permitted (did you mean flip?)"),
    ],
)
def test_unknown_field_suggests_the_close_names(sections: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        build_config(_raw(**sections))
    assert expected in str(err.value)


def test_unknown_field_with_no_close_name_lists_the_fields() -> None:
    with pytest.raises(ConfigError) as err:
        build_config(_raw(model={"zzzz": 1}))
    assert "model.zzzz: Extra inputs are not permitted; the fields here are: latent_dim," in str(err.value)
    assert did_you_mean("x", []) == ""


def test_one_strict_base_for_configs_specs_and_manifests() -> None:
    """Strict is defined once (gansvc.strict): the experiment config, sweep specs and dataset manifests all refuse
    unknown fields through it, and configs and specs are frozen."""
    from pydantic import ValidationError

    from gansvc.config import ExperimentConfig, LoopConfig
    from gansvc.data.manifest import Manifest
    from gansvc.strict import FrozenStrict, Strict
    from gansvc.tune.spec import SweepSpec

    assert issubclass(ExperimentConfig, FrozenStrict) and issubclass(SweepSpec, FrozenStrict)
    assert issubclass(Manifest, Strict) and not Manifest.model_config.get("frozen")
    for model, raw in (
        (LoopConfig, {"max_steps": 1, "sped": 2}),
        (SweepSpec, {"family": "dcgan", "space": {}, "sapce": {}}),
    ):
        with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
            model.model_validate(raw)
    with pytest.raises(ValidationError, match="frozen"):
        LoopConfig(max_steps=1).seed = 3  # type: ignore[misc]
