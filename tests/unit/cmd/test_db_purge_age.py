"""``db purge-* --older-than``: only a finite positive number of days is an
age (a NaN or infinite cut-off would delete everything or nothing)."""

from __future__ import annotations

import argparse

import pytest

from trusted_pools.cmd import db as db_cmd


@pytest.mark.parametrize("value", ["0", "-1", "nan", "NaN", "inf", "-inf",
                                   "x", ""])
def test_not_an_age(value):
    with pytest.raises(argparse.ArgumentTypeError):
        db_cmd._days(value)


@pytest.mark.parametrize("value,days", [("0.5", 0.5), ("30", 30.0)])
def test_an_age(value, days):
    assert db_cmd._days(value) == days
