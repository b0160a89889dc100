"""trust: extra specs and trust traits: the scheduler's parser and the
validators nova-api runs at flavor creation."""

from __future__ import annotations

import pytest

from tests import nova_harness
from trusted_pools.nova.scheduler import extra_specs as es


@pytest.mark.parametrize("specs, traits, expected", [
    ({}, None, None),
    ({"hw:cpu_policy": "dedicated"}, None, None),
    ({"trait:HW_CPU_X86_AVX2": "required"}, None, None),
    ({"trust:trusted_host": "required"}, None, (1, None)),
    ({"trust:min_level": "3"}, None, (3, None)),
    ({"trust:max_age": "60"}, None, (1, 60)),
    ({"trust:trusted_host": "required", "trust:min_level": "4",
      "trust:max_age": "30"}, None, (4, 30)),
    ({"trait:CUSTOM_TRUSTED_POOLS_TRUSTED": "required"}, None, (1, None)),
    ({"trait:CUSTOM_TRUSTED_POOLS_LOA_2": "required"}, None, (2, None)),
    ({"trait:CUSTOM_TRUSTED_POOLS_TRUSTED": "forbidden"}, None, None),
    ({}, ["CUSTOM_TRUSTED_POOLS_TRUSTED"], (1, None)),
    ({}, ["CUSTOM_TRUSTED_POOLS_LOA_3", "HW_CPU_X86_AVX2"], (3, None)),
    ({"trust:min_level": "2"}, ["CUSTOM_TRUSTED_POOLS_LOA_4"], (4, None)),
    ({}, ["CUSTOM_TRUSTED_POOLS_LOA_9"], None),
])
def test_requirement(specs, traits, expected):
    got = es.requirement_from_specs(specs, traits)
    if expected is None:
        assert got is None
    else:
        assert got is not None and got.invalid is None
        assert (got.min_level, got.max_age) == expected


def test_default_min_level_applies():
    got = es.requirement_from_specs({"trust:trusted_host": "required"},
                                    default_min_level=3)
    assert got.min_level == 3


@pytest.mark.parametrize("specs", [
    {"trust:trusted_host": "yes"},
    {"trust:trusted_host": "forbidden"},
    {"trust:min_level": "0"},
    {"trust:min_level": "5"},
    {"trust:min_level": "high"},
    {"trust:max_age": "0"},
    {"trust:max_age": "86401"},
    {"trust:max_age": "1e3"},
    {"trust:maxage": "10"},
])
def test_bad_values_make_an_unsatisfiable_requirement(specs):
    got = es.requirement_from_specs(specs)
    assert got is not None and got.invalid


@pytest.mark.parametrize("level", [1, 2, 3, 4])
def test_trait_for_level(level):
    assert es.trait_for_level(level) == "CUSTOM_TRUSTED_POOLS_LOA_%d" % level


@pytest.mark.parametrize("level", [0, 5, True])
def test_trait_for_bad_level(level):
    with pytest.raises(ValueError):
        es.trait_for_level(level)


# --- nova-api's validators ------------------------------------------------------

@pytest.fixture(scope="module")
def validate():
    nova_harness.load_validators()
    from nova.api.validation.extra_specs import validators
    return validators.validate


@pytest.mark.parametrize("name, value", [
    ("trust:trusted_host", "required"), ("trust:min_level", "1"),
    ("trust:min_level", "4"), ("trust:max_age", "1"),
    ("trust:max_age", "86400"),
])
def test_nova_accepts(validate, name, value):
    validate(name, value)


@pytest.mark.parametrize("name, value", [
    ("trust:trusted_host", "true"), ("trust:trusted_host", "forbidden"),
    ("trust:min_level", "0"), ("trust:min_level", "5"),
    ("trust:min_level", "three"), ("trust:max_age", "0"),
    ("trust:max_age", "86401"), ("trust:max_age", "soon"),
    ("trust:unknown_key", "1"),
])
def test_nova_rejects(validate, name, value):
    from nova import exception as nova_exception
    with pytest.raises(nova_exception.ValidationError):
        validate(name, value)


def test_every_value_nova_accepts_the_scheduler_accepts(validate):
    """No flavor that passes nova-api may become unsatisfiable here."""
    for name, values in (("trust:min_level", range(1, 5)),
                         ("trust:max_age", (1, 59, 86400))):
        for value in values:
            validate(name, str(value))
            got = es.requirement_from_specs({name: str(value)})
            assert got.invalid is None
