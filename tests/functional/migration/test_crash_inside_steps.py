"""Crash points *inside* the steps of a cold vTPM migration (issue 12),
with the real parts (swtpm host TPMs, agents and a conductor on the real
RabbitMQ, SQLite, the swtpm driver).

The fault matrix (test_fault_matrix.py) crashes a party after it
completed a step; here the party dies in the middle of one: after the
vTPM driver changed the disk and before the journal says so, between the
epoch floor and the journal, between an agent's answer and the
conductor's record. After recovery, in every cell: exactly one runnable
copy, holding the marker; every other copy refuses to start.

How a crash is made: the step's next action raises (the agent's answer
is an error, as the conductor sees a dying agent), then the agent
service is stopped and started again on the same TPM, vTPM state and
journal directories; for the conductor, its database write of the step
raises and the conductor is restarted as a killed process.
"""

from __future__ import annotations

import json
import os
import threading
import time

import pytest

from tests.migration_harness import build_pool
from trusted_pools import exception
from trusted_pools.vtpm.driver import VTPMStatus

pytestmark = [pytest.mark.swtpm, pytest.mark.rabbitmq, pytest.mark.slow]


class Crash(RuntimeError):
    """The injected fault."""


@pytest.fixture
def crash_pool(tmp_path, rabbit_conf, swtpm_pool, swtpm_ca):
    yield from build_pool(tmp_path, rabbit_conf, swtpm_pool, swtpm_ca, 2)


def _after(obj, name, fired, when=lambda *a, **k: True):
    """``obj.name`` runs, then the process 'dies' (once)."""
    real = getattr(obj, name)

    def crashing(*args, **kwargs):
        result = real(*args, **kwargs)
        if not fired.is_set() and when(*args, **kwargs):
            fired.set()
            raise Crash("injected: died right after %s" % name)
        return result
    setattr(obj, name, crashing)


def _before(obj, name, fired, when=lambda *a, **k: True):
    """The process 'dies' as ``obj.name`` is called (once)."""
    real = getattr(obj, name)

    def crashing(*args, **kwargs):
        if not fired.is_set() and when(*args, **kwargs):
            fired.set()
            raise Crash("injected: died before %s" % name)
        return real(*args, **kwargs)
    setattr(obj, name, crashing)


def _saving(step):
    return lambda entry: entry.get("step") == step


#: (name, party, arm(mp, source, destination, fired)). party: the agent
#: restarted after the crash ("source", "destination") or "conductor".
CELLS = (
    ("destination prepare: key made, journal not written", "destination",
     lambda mp, s, d, f: _before(mp.migrations(d), "_save", f,
                                 _saving("prepared"))),
    ("destination import: state imported, not started", "destination",
     lambda mp, s, d, f: _after(mp.driver(d), "import_state", f)),
    ("destination import: started and stopped, journal not written",
     "destination",
     lambda mp, s, d, f: _before(mp.migrations(d), "_save", f,
                                 _saving("imported"))),
    ("source export: locked and exported, journal not written", "source",
     lambda mp, s, d, f: _after(mp.driver(s), "export_state", f)),
    ("destination commit: rebound, journal not written", "destination",
     lambda mp, s, d, f: _after(mp.migrations(d), "_rebind", f)),
    ("destination commit: journaled (the floor), no answer",
     "destination",
     lambda mp, s, d, f: _after(mp.migrations(d), "_save", f,
                                _saving("committed"))),
    ("source finish: journaled (the floor), state not erased", "source",
     lambda mp, s, d, f: _after(mp.migrations(s), "_save", f,
                                _saving("finished"))),
    ("source finish: state erased, no answer", "source",
     lambda mp, s, d, f: _after(mp.driver(s), "destroy", f)),
    ("conductor: destination imported, step not recorded", "conductor",
     lambda mp, s, d, f: _before(
         mp.pool.db, "advance_vtpm_migration", f,
         lambda mid, expected, step, **kw: step == "imported")),
    ("conductor: destination committed, source not asked", "conductor",
     lambda mp, s, d, f: _before(
         mp.conductor.manager.migrations, "_call", f,
         lambda method, *a, **kw: method == "migration_finish")),
)


def _runnable(mp, uuid):
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
        (runnable if info.status is VTPMStatus.STOPPED
         else refused).append(host)
    return runnable, refused


def test_crash_inside_each_step(crash_pool):
    mp = crash_pool
    marker = os.urandom(32)
    here = mp.hosts[0]
    uuid = mp.create_marked_vtpm(here, marker)
    db_advance = mp.pool.db.advance_vtpm_migration
    matrix = []
    for name, party, arm in CELLS:
        began = time.monotonic()
        mp.ensure_trusted()
        source = here
        destination = next(h for h in mp.hosts if h is not here)
        fired = threading.Event()
        arm(mp, source, destination, fired)
        try:
            started = mp.start(uuid, source, destination)
            assert fired.wait(60), "cell %r never fired" % name
        finally:
            # The crashed process's patched objects go with it.
            mp.pool.db.advance_vtpm_migration = db_advance
        if party == "conductor":
            mp.restart_conductor()
        else:
            mp.restart_agent({"source": source,
                              "destination": destination}[party])
        done = mp.wait(started["id"], timeout=90)
        runnable, refused = _runnable(mp, uuid)
        cell = {"cell": name, "outcome": done["outcome"],
                "runnable": [h.name for h in runnable],
                "refusing": [h.name for h in refused]}
        if len(runnable) == 1:
            cell["marker"] = mp.read_marker(runnable[0], uuid) == marker
            for host in refused:
                with pytest.raises((exception.VTPMStale,
                                    exception.VTPMInvalidState)):
                    mp.migrations(host).start_vtpm(uuid)
            here = runnable[0]
            # Exactly the copy the database names: the destination after
            # a commit, else the source.
            cell["where_the_database_says"] = here is (
                destination if done["outcome"] == "completed" else source)
        cell["seconds"] = round(time.monotonic() - began, 1)
        matrix.append(cell)

    lost = sum(1 for c in matrix if not c["runnable"])
    cloned = sum(1 for c in matrix if len(c["runnable"]) > 1)
    report = {"cells": len(matrix), "lost": lost, "cloned": cloned,
              "marker_missing": sum(not c.get("marker") for c in matrix),
              "misplaced": sum(not c.get("where_the_database_says")
                               for c in matrix),
              "matrix": matrix}
    print("vTPM migration crash points inside steps: %s"
          % json.dumps(report, indent=1))
    assert (report["cells"], lost, cloned, report["marker_missing"],
            report["misplaced"]) == (len(CELLS), 0, 0, 0, 0), report
    outcomes = {c["outcome"] for c in matrix}
    assert outcomes == {"completed", "aborted"}, report
