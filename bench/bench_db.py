"""Database layer: verdict writes one by one vs in batches, and reads.

The conductor writes verdicts in batches; this measures why. For SQLite (a
file, the embedded default) and PostgreSQL (127.0.0.1, a scratch database
created and dropped here) it prints:

* verdict insert rate with one verdict per transaction (baseline) and with
  1000 per transaction, and their ratio;
* ``verdicts_since`` latency for a recent window of 100 and of 1000 rows out
  of a table of ~20,000 verdicts (index on ``issued_at``);
* ``latest_verdicts`` for 1000 hosts.

Run: ``.venv/bin/python -m bench.bench_db``. MariaDB is left out to keep
the run under two minutes; the functional tests cover its correctness.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import random
import string
import tempfile
import time
from typing import Iterator

import sqlalchemy as sa

from bench._timing import median_seconds, report
from trusted_pools.db import api
from trusted_pools.db import migration

_POSTGRESQL_ADMIN = os.environ.get(
    "TRUSTED_POOLS_TEST_POSTGRESQL_URL",
    "postgresql+psycopg2://postgres@127.0.0.1:5432/test")

HOSTS = 1000
SINGLE_WRITES = 200
BATCH = 1000
BATCHES = 10
UTC = datetime.timezone.utc


@contextlib.contextmanager
def _sqlite() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as directory:
        yield "sqlite:///" + os.path.join(directory, "bench.sqlite")


@contextlib.contextmanager
def _postgresql() -> Iterator[str]:
    name = "tp_bench_" + "".join(random.choices(string.ascii_lowercase,
                                                k=8))
    admin = sa.create_engine(_POSTGRESQL_ADMIN, isolation_level="AUTOCOMMIT",
                             poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        conn.exec_driver_sql("CREATE DATABASE %s" % name)
    try:
        yield sa.engine.make_url(_POSTGRESQL_ADMIN).set(
            database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = '%s' AND pid <> pg_backend_pid()" % name)
            conn.exec_driver_sql("DROP DATABASE IF EXISTS %s" % name)
        admin.dispose()


class _Verdicts:
    """Realistic verdict rows with increasing issue times."""

    def __init__(self, host_ids: list[int]) -> None:
        self.host_ids = host_ids
        self.clock = datetime.datetime(2026, 11, 1, tzinfo=UTC)
        self.count = 0

    def make(self, n: int) -> list[api.NewVerdict]:
        rows = []
        for _ in range(n):
            self.clock += datetime.timedelta(milliseconds=3)
            host = self.host_ids[self.count % len(self.host_ids)]
            self.count += 1
            rows.append(api.NewVerdict(
                host_id=host, status="trusted", level=4,
                issued_at=self.clock,
                expires_at=self.clock + datetime.timedelta(seconds=120),
                vector={"hardware": 2, "configuration": 2,
                        "executables": 2, "file-system": 2},
                reasons=[], policy_versions={"boot": 3, "runtime": 7},
                evidence_digest="%064x" % self.count,
                quote_clock=10_000_000 + self.count, reset_count=3,
                restart_count=0, signed_result="eyJhbGciOiJFUzI1NiJ9." +
                "x" * 400 + "." + "s" * 86))
        return rows


def _bench_backend(label: str, url: str) -> None:
    connection = api.Connection(api.make_context_manager(url))
    migration.upgrade(engine=connection.get_engine())
    host_ids = [connection.create_host("bench-%04d" % i).id
                for i in range(HOSTS)]
    verdicts = _Verdicts(host_ids)

    single = [verdicts.make(1) for _ in range(SINGLE_WRITES)]
    start = time.perf_counter()
    for row in single:
        connection.add_verdicts(row)
    single_rate = SINGLE_WRITES / (time.perf_counter() - start)

    batches = [verdicts.make(BATCH) for _ in range(BATCHES)]
    rates = []
    for batch in batches:
        start = time.perf_counter()
        connection.add_verdicts(batch)
        rates.append(BATCH / (time.perf_counter() - start))
    batch_rate = sorted(rates)[len(rates) // 2]

    report("%s insert, 1 verdict/transaction (rows/s)" % label,
           single_rate, unit="rows/s")
    report("%s insert, %d verdicts/transaction (rows/s)" % (label, BATCH),
           batch_rate, unit="rows/s")
    print("%-52s %12.1f x" % ("%s batch/single insert rate ratio" % label,
                               batch_rate / single_rate))

    newest = verdicts.clock
    since_100 = newest - datetime.timedelta(milliseconds=3 * 100)
    since_1000 = newest - datetime.timedelta(milliseconds=3 * 1000)
    assert len(connection.verdicts_since(since_100)) == 100
    assert len(connection.verdicts_since(since_1000)) == 1000
    t_100 = median_seconds(lambda: connection.verdicts_since(since_100),
                           number=20, repeat=5)
    t_1000 = median_seconds(lambda: connection.verdicts_since(since_1000),
                            number=5, repeat=5)
    report("%s verdicts_since, 100 of %d rows (ms)"
           % (label, verdicts.count), t_100 * 1e3, unit="ms")
    report("%s verdicts_since, 1000 rows" % label, t_1000, t_100,
           "100 rows")
    t_latest = median_seconds(lambda: connection.latest_verdicts(),
                              number=2, repeat=3)
    report("%s latest_verdicts, %d hosts (ms)" % (label, HOSTS),
           t_latest * 1e3, unit="ms")
    connection.dispose()


def main() -> None:
    with _sqlite() as url:
        _bench_backend("sqlite", url)
    try:
        postgresql = _postgresql()
        url = postgresql.__enter__()
    except sa.exc.OperationalError as exc:
        print("postgresql: not reachable at %s (%s); start it with "
              "pg_ctlcluster --skip-systemctl-redirect $(ls "
              "/etc/postgresql) main start"
              % (_POSTGRESQL_ADMIN, str(exc.orig).splitlines()[0]))
        return
    try:
        _bench_backend("postgresql", url)
    finally:
        postgresql.__exit__(None, None, None)


if __name__ == "__main__":
    main()
