"""Fixtures of the vTPM migration tests (tests/migration_harness.py)."""

from __future__ import annotations

from typing import Iterator

import pytest

from tests.migration_harness import MigrationPool, build_pool


@pytest.fixture
def migration_pool(tmp_path, rabbit_conf, swtpm_pool, swtpm_ca
                   ) -> Iterator[MigrationPool]:
    """Three hosts: compute-00 and compute-01 trusted, compute-02 booted
    an unapproved kernel (untrusted)."""
    yield from build_pool(tmp_path, rabbit_conf, swtpm_pool, swtpm_ca, 3,
                          tamper=(2,))
