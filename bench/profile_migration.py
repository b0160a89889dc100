"""Where a cold vTPM migration's time goes (issue 12).

Run: ``.venv/bin/python -m bench.profile_migration [MOVES]``.

The pool of bench/bench_migration.py (real swtpm hosts, agents and a
conductor on the real RabbitMQ, SQLite). Conductor, agents and drivers run
as threads of this process, so cProfile (one thread) would miss most of a
migration: instead the functions the steps call are wrapped with a wall
clock, and each step's duration comes from the conductor's step hook.
Prints the median of each step and, per wrapped function, its calls and
total time per move (a nested function counts in its callers too; a time
includes waiting for the host TPM's lock). A tool, not a benchmark: the
ratio to the floor is bench_migration's.
"""

from __future__ import annotations

import collections
import functools
import os
import pathlib
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from typing import Any

from oslo_config import cfg

from bench._bus import bench_vhost, configure_bus
from tests import swtpm_pool as sp
from tests.migration_harness import build_pool
from tests.rabbitmq import RABBIT_URL
from trusted_pools.agent import attester as attester_mod
from trusted_pools.agent import migration as agent_migration
from trusted_pools.conductor import migration as conductor_migration
from trusted_pools.db import api as db_api
from trusted_pools.protocol import vtpm_migration as proto
from trusted_pools.vtpm import swtpm

_SPENT: dict[str, list[float]] = collections.defaultdict(list)

_WRAPPED: tuple[tuple[Any, str, tuple[str, ...]], ...] = (
    (agent_migration.MigrationAgent, "agent", (
        "prepare", "export", "import_state", "commit", "finish", "_save",
        "_transport_key", "_open", "_vtpm_keys", "_rebind",
        "_certified_binding_key", "_raise_floor")),
    (conductor_migration.MigrationCoordinator, "conductor", (
        "_notify", "_attest", "_certify_key", "_export", "_import",
        "_commit", "_finish", "_advance", "_attest_now", "_prepare")),
    (swtpm.SwtpmDriver, "driver", (
        "import_state", "export_state", "start", "stop", "destroy",
        "status", "_unwrap", "update_metadata")),
    (db_api.Connection, "db", (
        "advance_vtpm_migration", "get_vtpm_migration",
        "create_vtpm_migration", "get_host_by_name", "latest_verdicts",
        "get_registration")),
    (attester_mod.Attester, "attester", ("run_on_device", "binding_key")),
    (proto, "proto", ("seal", "open_sealed", "check_transport_key")),
)


def _wrap(owner: Any, name: str, label: str) -> None:
    real = getattr(owner, name)

    @functools.wraps(real)
    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            _SPENT[label].append(time.perf_counter() - start)
    setattr(owner, name, timed)


def _run(url: str, workdir: pathlib.Path, moves: int) -> None:
    fixture = configure_bus(url, "tp-prof-%s" % uuid.uuid4().hex[:8],
                            "trusted-pools-profile")
    ca = sp.LocalCA.create(str(workdir / "ca"))
    tpms = sp.SwtpmPool(ca, workdir / "tpms")
    pools = build_pool(workdir, cfg.CONF, tpms.start, ca, 2)
    try:
        mp = next(pools)
        a, b = mp.hosts
        instance = mp.create_marked_vtpm(a, os.urandom(32))
        here, there = a, b
        for _ in range(2):  # warm up
            mp.migrate(instance, here, there)
            here, there = there, here
        _SPENT.clear()
        steps: dict[str, list[float]] = collections.defaultdict(list)
        last: dict[str, float] = {}
        ended = threading.Event()

        def reached(migration_id: str, step: str) -> None:
            now = time.perf_counter()
            steps[step].append(now - last[migration_id])
            last[migration_id] = now
            if step in ("completed", "aborted"):
                ended.set()
        mp.coordinator.after_step = reached
        times = []
        for _ in range(moves):
            ended.clear()
            start = time.perf_counter()
            started = mp.start(instance, here, there)
            last[started["id"]] = start
            assert ended.wait(60), "the migration never ended"
            times.append(time.perf_counter() - start)
            assert mp.wait(started["id"])["outcome"] == "completed"
            here, there = there, here
        print("median move %.1f ms" % (statistics.median(times) * 1e3))
        for step, values in steps.items():
            print("step %-16s %8.1f ms" % (step,
                                           statistics.median(values) * 1e3))
        for label, values in sorted(_SPENT.items(),
                                    key=lambda item: -sum(item[1])):
            print("%-36s calls/move %5.1f  ms/move %8.1f" % (
                label, len(values) / moves, sum(values) / moves * 1e3))
    finally:
        pools.close()
        tpms.close()
        fixture.cleanUp()


def main() -> None:
    moves = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    for owner, prefix, names in _WRAPPED:
        for name in names:
            _wrap(owner, name, "%s.%s" % (prefix, name))
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="tp-profile-migration-"))
    try:
        with bench_vhost(RABBIT_URL) as url:
            _run(url, workdir, moves)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
