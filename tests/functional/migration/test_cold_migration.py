"""Cold vTPM migration end to end (issue 12), with the real parts: swtpm
host TPMs booted from real event logs, their agents and a conductor on the
real RabbitMQ, SQLite, the swtpm vTPM driver.

The attacks are a compromised compute host's: it owns its agent, its
files and its bus credentials, not its TPM's keys or another host's."""

from __future__ import annotations

import os

import pytest

from trusted_pools import exception
from trusted_pools.vtpm.driver import VTPMStatus

pytestmark = [pytest.mark.swtpm, pytest.mark.rabbitmq, pytest.mark.slow]


def test_cold_migration_moves_the_marker_and_erases_the_source(
        migration_pool):
    mp = migration_pool
    a, b, _ = mp.hosts
    marker = os.urandom(32)
    uuid = mp.create_marked_vtpm(a, marker)

    done = mp.migrate(uuid, a, b)
    assert (done["step"], done["outcome"], done["epoch"]) == (
        "completed", "completed", 1), done
    assert done["transport_key_name"]
    # The marker reads back at the destination, which sealed the state to
    # its own TPM; the source copy is gone.
    assert mp.read_marker(b, uuid) == marker
    assert mp.driver(b).status(uuid).metadata["migration_epoch"] == 1
    with pytest.raises(exception.VTPMNotFound):
        mp.driver(a).status(uuid)
    assert not (mp.driver(a).state_dir / uuid).exists()
    assert mp.migrations(a).epoch_floor(uuid) == 1
    # And back: epoch 2.
    back = mp.migrate(uuid, b, a)
    assert (back["step"], back["epoch"]) == ("completed", 2), back
    assert mp.read_marker(a, uuid) == marker
    assert mp.pool.db.vtpm_epoch(uuid) == 2
