"""Twenty cold vTPM migrations at once across four trusted hosts (issue
12): each host is the source of five and the destination of five; every
one completes, every marker reads back at its destination, and no source
keeps a copy."""

from __future__ import annotations

import os
from concurrent import futures

import pytest

from tests.functional.migration.conftest import build_pool
from trusted_pools import exception

pytestmark = [pytest.mark.swtpm, pytest.mark.rabbitmq, pytest.mark.slow]

PER_HOST = 5


@pytest.fixture
def four_hosts(tmp_path, rabbit_conf, swtpm_pool, swtpm_ca):
    # Twenty at once queue behind each other on a host's TPM: agent calls
    # get the default time.
    yield from build_pool(tmp_path, rabbit_conf, swtpm_pool, swtpm_ca, 4,
                          overrides={("conductor", "agent_rpc_timeout"): 60})


def test_twenty_concurrent_cold_migrations(four_hosts):
    mp = four_hosts
    hosts = mp.hosts

    def make(host):
        return [(host, mp.create_marked_vtpm(host, os.urandom(32)))
                for _ in range(PER_HOST)]
    with futures.ThreadPoolExecutor(len(hosts)) as pool:
        made = [item for batch in pool.map(make, hosts) for item in batch]
    markers = {}
    for host, uuid in made:
        markers[uuid] = mp.read_marker(host, uuid)
    assert len(made) == 20 and all(markers.values())

    # Source i sends its vTPMs to host i+1: every host sends five and
    # receives five, all requested before the first one ends.
    plan = [(uuid, source, hosts[(hosts.index(source) + 1) % len(hosts)])
            for source, uuid in made]
    started = [mp.start(uuid, source, destination)
               for uuid, source, destination in plan]
    done = [mp.wait(s["id"], timeout=180) for s in started]
    assert [d["outcome"] for d in done] == ["completed"] * 20, [
        (d["outcome"], d["reason"]) for d in done if d["outcome"] !=
        "completed"]
    for (uuid, source, destination), row in zip(plan, done):
        assert (row["source"], row["destination"], row["epoch"]) == (
            source.name, destination.name, 1)
        with pytest.raises(exception.VTPMNotFound):
            mp.driver(source).status(uuid)
        assert mp.read_marker(destination, uuid) == markers[uuid]
