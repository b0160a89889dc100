"""The fault matrix of issue 12: a cold vTPM migration interrupted at each
protocol step by a crash of the conductor, of the source agent or of the
destination agent, or by RabbitMQ dropping every connection. After
recovery, in every cell: exactly one runnable copy of the vTPM, holding
the marker, and any other copy refuses to start.

How each fault is made:

* conductor: its worker dies right after it recorded the step (the hook
  raises), and the conductor service is stopped as a killed process
  (heartbeat row left online) and started again; its resume job takes the
  migration over;
* agent: the agent dies after it journaled its step and before it
  answered (the hook raises; the conductor gets an error), and the agent
  service is stopped and started again on the same TPM, vTPM state and
  journal directories;
* RabbitMQ: every connection of the test's virtual host is closed by the
  broker (``rabbitmqctl close_all_connections -p``) right after the step:
  what clients see of a broker restart, without taking the shared broker
  of this machine away from the other test sessions.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.parse

import pytest

from tests.functional.migration.conftest import build_pool
from tests.rabbitmq import rabbitmqctl
from trusted_pools import exception
from trusted_pools.vtpm.driver import VTPMStatus

pytestmark = [pytest.mark.swtpm, pytest.mark.rabbitmq, pytest.mark.slow]

#: (party, step) cells. A conductor or RabbitMQ cell fires after the
#: conductor recorded that step; an agent cell after the agent journaled
#: its own step (its names are the agent's: prepare, export, import,
#: commit, finish).
CELLS = (
    [("conductor", s) for s in ("attested", "key_certified", "exported",
                                "imported", "committed")]
    + [("destination", s) for s in ("prepare", "import", "commit")]
    + [("source", s) for s in ("export", "finish")]
    + [("rabbitmq", s) for s in ("key_certified", "exported", "imported",
                                 "committed")])


class Crash(RuntimeError):
    """The injected fault."""


@pytest.fixture
def fault_pool(tmp_path, rabbit_conf, swtpm_pool, swtpm_ca):
    yield from build_pool(tmp_path, rabbit_conf, swtpm_pool, swtpm_ca, 2)


def _runnable(mp, uuid):
    """Hosts whose copy would start (present, stopped, not stale, not an
    uncommitted import), and hosts holding a copy that refuses."""
    runnable, refused = [], []
    for host in mp.hosts:
        try:
            info = mp.driver(host).status(uuid)
        except exception.VTPMNotFound:
            continue
        try:
            mp.migrations(host).check_startable(uuid)
        except (exception.VTPMStale, exception.VTPMInvalidState):
            refused.append(host)
            continue
        if info.status is VTPMStatus.STOPPED:
            runnable.append(host)
        else:
            refused.append(host)
    return runnable, refused


def test_fault_matrix(fault_pool, rabbit_url):
    mp = fault_pool
    vhost = urllib.parse.unquote(
        urllib.parse.urlsplit(rabbit_url).path.lstrip("/")) or "/"
    marker = os.urandom(32)
    uuid = mp.create_marked_vtpm(mp.hosts[0], marker)
    here = mp.hosts[0]
    matrix = []
    for party, step in CELLS:
        began = time.monotonic()
        source = here
        destination = next(h for h in mp.hosts if h is not here)
        fired = threading.Event()

        def crash_at(name, step=step, fired=fired):
            if name == step and not fired.is_set():
                fired.set()
                raise Crash("injected: died after %s" % name)

        def drop_bus(migration_id, name, step=step, fired=fired):
            if name == step and not fired.is_set():
                fired.set()
                assert rabbitmqctl("close_all_connections", "-p", vhost,
                                   "fault matrix"), "rabbitmqctl failed"

        victim = {"source": source, "destination": destination}.get(party)
        if party == "conductor":
            mp.coordinator.after_step = lambda mid, name: crash_at(name)
        elif party == "rabbitmq":
            mp.coordinator.after_step = drop_bus
        else:
            mp.migrations(victim).after_step = crash_at
        started = mp.start(uuid, source, destination)
        assert fired.wait(60), "cell %s/%s never fired" % (party, step)
        if party == "conductor":
            mp.restart_conductor()
        elif party != "rabbitmq":
            mp.restart_agent(victim)
        mp.coordinator.after_step = None
        done = mp.wait(started["id"], timeout=90)
        runnable, refused = _runnable(mp, uuid)
        cell = {"party": party, "step": step, "outcome": done["outcome"],
                "runnable": [h.name for h in runnable],
                "refusing": [h.name for h in refused]}
        if len(runnable) == 1:
            cell["marker"] = mp.read_marker(runnable[0], uuid) == marker
            for host in refused:
                with pytest.raises((exception.VTPMStale,
                                    exception.VTPMInvalidState)):
                    mp.migrations(host).start_vtpm(uuid)
            here = runnable[0]
        cell["seconds"] = round(time.monotonic() - began, 1)
        matrix.append(cell)
        for host in mp.hosts:
            mp.migrations(host).after_step = None

    lost = sum(1 for c in matrix if not c["runnable"])
    cloned = sum(1 for c in matrix if len(c["runnable"]) > 1)
    stale_marker = sum(1 for c in matrix if not c.get("marker"))
    report = {"cells": len(matrix), "lost": lost, "cloned": cloned,
              "marker_missing": stale_marker,
              "completed": sum(c["outcome"] == "completed" for c in matrix),
              "aborted": sum(c["outcome"] == "aborted" for c in matrix),
              "matrix": matrix}
    print("vTPM migration fault matrix: %s" % json.dumps(report, indent=1))
    assert (len(matrix), lost, cloned, stale_marker) == \
        (len(CELLS), 0, 0, 0), report
    # Both endings happened: crashes before the commit roll back, after
    # it roll forward.
    assert report["completed"] and report["aborted"], report
