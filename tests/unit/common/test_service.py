"""The job table runner: spacing from options, failures survive, a stop
waits for the round in flight, and the wrong oslo.service backend is
refused with a reason."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from oslo_config import cfg

from trusted_pools import exception
from trusted_pools.common import service


@pytest.fixture
def conf():
    conf = cfg.ConfigOpts()
    conf.register_opts([cfg.FloatOpt("fast", default=0.05),
                        cfg.FloatOpt("slow", default=3600.0),
                        cfg.FloatOpt("zero", default=0.0)], group="jobs")
    conf([], project="trusted-pools-test")
    return conf


def test_spacing_comes_from_the_named_option(conf):
    jobs = [service.PeriodicJob("a", lambda: None, "jobs.fast"),
            service.PeriodicJob("b", lambda: None, "jobs.slow"),
            service.PeriodicJob("c", lambda: None, lambda c: 2 * c.jobs.fast)]
    runner = service.JobRunner(jobs, conf)
    try:
        assert runner.spacings == {"a": 0.05, "b": 3600.0, "c": 0.1}
    finally:
        runner.stop()


@pytest.mark.parametrize("spacing,match", [
    ("jobs.missing", "jobs.missing does not exist"),
    ("nogroup.fast", "nogroup.fast does not exist"),
    ("jobs.zero", "must be more than 0 seconds"),
])
def test_a_bad_spacing_option_is_a_config_error(conf, spacing, match):
    with pytest.raises(exception.ConfigInvalid, match=match):
        service.JobRunner([service.PeriodicJob("x", lambda: None, spacing)],
                          conf)


def test_a_failing_round_does_not_stop_the_job(conf):
    calls = []

    def flaky() -> None:
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise RuntimeError("first round fails")

    runner = service.JobRunner(
        [service.PeriodicJob("flaky", flaky, "jobs.fast",
                             run_immediately=True)], conf)
    runner.start()
    try:
        deadline = time.monotonic() + 5
        while len(calls) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        runner.stop()
    assert len(calls) >= 3
    # Spaced by the option, not run back to back.
    assert calls[2] - calls[1] >= 0.04


def test_stop_waits_for_the_round_in_flight(conf):
    started, release, finished = (threading.Event(), threading.Event(),
                                  threading.Event())

    def batch() -> None:
        started.set()
        release.wait(5)
        time.sleep(0.2)          # the batch is still being verified
        finished.set()

    runner = service.JobRunner(
        [service.PeriodicJob("batch", batch, "jobs.slow",
                             run_immediately=True)], conf)
    runner.start()
    assert started.wait(5)
    release.set()
    runner.stop()
    assert finished.is_set()


def test_spawned_work_runs_off_the_caller_and_stop_waits_for_it(conf):
    runner = service.JobRunner([], conf)
    runner.start()
    seen = []

    def work() -> None:
        time.sleep(0.2)
        seen.append(threading.current_thread().name)

    runner.spawn(work)
    runner.stop()
    assert seen and seen[0] != threading.current_thread().name
    with pytest.raises(exception.TemporaryFailure, match="stopping"):
        runner.spawn(work)


def test_launch_refuses_another_backend(monkeypatch):
    from oslo_service import backend

    def already_eventlet(type_):
        raise backend.exceptions.BackendAlreadySelected(
            "Backend already set to 'eventlet'")

    monkeypatch.setattr(backend, "init_backend", already_eventlet)
    with pytest.raises(exception.ConfigInvalid, match="threading backend"):
        service.select_threading_backend()


def test_stops_run_side_by_side():
    """Each stop waits until every other one has started: one after
    another they would never all start (the barrier breaks instead)."""
    barrier = threading.Barrier(3, timeout=30)
    done = []

    def stop(name: str):
        def run() -> None:
            barrier.wait()
            done.append(name)
        return run
    service.stop_side_by_side(stop("a"), stop("b"), stop("c"))
    assert sorted(done) == ["a", "b", "c"]


def test_a_failing_stop_is_raised_after_the_others_finished():
    finished = threading.Event()

    def fails() -> None:
        raise RuntimeError("listener would not stop")

    def slow() -> None:
        time.sleep(0.2)
        finished.set()
    with pytest.raises(RuntimeError, match="listener would not stop"):
        service.stop_side_by_side(fails, slow)
    assert finished.is_set()


def test_every_failing_stop_is_logged_not_only_the_raised_one(caplog):
    """Only one error can be raised: the others must still be seen."""
    def first() -> None:
        raise RuntimeError("listener would not stop")

    def second() -> None:
        time.sleep(0.1)
        raise ValueError("jobs would not stop")
    with caplog.at_level(logging.ERROR, logger=service.__name__):
        with pytest.raises(RuntimeError, match="listener would not stop"):
            service.stop_side_by_side(first, second)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "listener would not stop" in logged
    assert "ValueError: jobs would not stop" in logged


def test_rpc_server_stop_waits_after_stopping():
    calls = []

    class Server:
        def stop(self) -> None:
            calls.append("stop")

        def wait(self) -> None:
            calls.append("wait")
    service.stop_rpc_server(Server())()
    assert calls == ["stop", "wait"]
