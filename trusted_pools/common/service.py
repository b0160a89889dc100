"""Running a service: oslo.service's threading backend, futurist periodics.

The services are oslo.service services (the threading backend, as Ironic
runs now: a cotyledon supervisor process, one worker process that runs the
service's threads, graceful stop on SIGTERM within
``[DEFAULT] graceful_shutdown_timeout``). The eventlet backend is never
used: oslo.messaging's threading executor and the TPM libraries block.

Periodic work is a *job table*: a list of :class:`PeriodicJob`, each a
callable and the option that holds its spacing, run by
:class:`futurist.periodics.PeriodicWorker` on a bounded
:class:`futurist.ThreadPoolExecutor` that also takes the service's other
long work (:meth:`JobRunner.spawn`), so that work never runs on an RPC
thread and a stop waits for what is in flight.

The backend is chosen by ``trusted_pools.cmd`` before anything imports
oslo.messaging (whose server module loads ``oslo_service.service``, which
picks the backend's classes at import, eventlet unless told otherwise), as
Ironic does in ``ironic.command``. This module itself is backend-neutral:
the services' base class is oslo.service's ``ServiceBase`` (the same class
in both backends), so tests and Nova's processes (which choose their own
backend) can import and run the services in-process; only :func:`launch`
needs the threading backend, and refuses to launch without it.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from typing import Any, Callable, Sequence

import futurist
from futurist import periodics
from oslo_config import cfg
from oslo_service import backend
from oslo_service.backend import base as service_base

from trusted_pools import exception
from trusted_pools.common.backend import select_threading_backend  # noqa: F401,E501 - kept importable here

LOG = logging.getLogger(__name__)


__all__ = ["PeriodicJob", "JobRunner", "ServiceBase", "launch"]

#: Threads for periodic jobs and spawned work beyond one per job.
_SPARE_WORKERS = 8


@dataclasses.dataclass(frozen=True)
class PeriodicJob:
    """One row of a service's job table.

    ``spacing`` names the option (``"group.option"``, seconds) read when
    the service starts, so each job keeps the spacing operators set; a
    spacing derived from options is a function of the configuration.
    ``run_immediately`` runs it once at start instead of after one spacing.
    """

    name: str
    run: Callable[[], object]
    spacing: str | Callable[[cfg.ConfigOpts], float]
    run_immediately: bool = False

    def spacing_from(self, conf: cfg.ConfigOpts) -> float:
        if callable(self.spacing):
            value = float(self.spacing(conf))
        else:
            group, _, option = self.spacing.rpartition(".")
            try:
                value = float(conf[group][option] if group
                              else conf[option])
            except (cfg.NoSuchOptError, cfg.NoSuchGroupError,
                    KeyError) as exc:
                raise exception.ConfigInvalid(
                    reason="periodic job %s: spacing option %s does not "
                           "exist" % (self.name, self.spacing)) from exc
        if value <= 0:
            raise exception.ConfigInvalid(
                reason="periodic job %s: %s must be more than 0 seconds, "
                       "not %s" % (self.name, self.spacing, value))
        return value


class JobRunner:
    """Runs a job table and spawned work on one bounded thread pool.

    A failing round is logged and the job runs again after its spacing:
    one bad round must not stop attestation.
    """

    def __init__(self, jobs: Sequence[PeriodicJob], conf: cfg.ConfigOpts,
                 spare_workers: int = _SPARE_WORKERS) -> None:
        self._table = [(job, job.spacing_from(conf)) for job in jobs]
        self._executor = futurist.ThreadPoolExecutor(
            max_workers=len(self._table) + spare_workers)
        self._worker = periodics.PeriodicWorker(
            [(self._as_periodic(job, spacing), None, None)
             for job, spacing in self._table],
            executor_factory=periodics.ExistingExecutor(self._executor),
            on_failure=self._log_failure)
        self._loop: threading.Thread | None = None

    @staticmethod
    def _as_periodic(job: PeriodicJob, spacing: float) -> Callable[[], Any]:
        # futurist marks the function it decorates; a fresh one per job
        # keeps bound methods (which take no attributes) usable.
        def run_job() -> object:
            return job.run()
        run_job.__name__ = run_job.__qualname__ = job.name
        return periodics.periodic(
            spacing, run_immediately=job.run_immediately)(run_job)

    @staticmethod
    def _log_failure(cb: Callable[..., Any], kind: str, spacing: float,
                     exc_info: Any, traceback: Any = None) -> None:
        LOG.error("Periodic job %s failed; it runs again in %.1f s",
                  getattr(cb, "__name__", cb), spacing, exc_info=exc_info)

    @property
    def spacings(self) -> dict[str, float]:
        """Each job's spacing in seconds, by job name."""
        return {job.name: spacing for job, spacing in self._table}

    def start(self) -> None:
        self._loop = threading.Thread(
            target=self._worker.start, kwargs={"allow_empty": True},
            name="periodic-jobs", daemon=True)
        self._loop.start()

    def spawn(self, work: Callable[[], None]) -> None:
        """Run ``work`` on the pool (long work handed off by endpoints)."""
        try:
            self._executor.submit(work)
        except (futurist.RejectedSubmission, RuntimeError) as error:
            # RuntimeError: the executor was shut down (a stop).
            raise exception.TemporaryFailure(
                reason="the service is stopping") from error

    def stop(self, timeout: float | None = None) -> None:
        """No new rounds; wait for the running ones (an in-flight evidence
        batch, a Placement sync) and for spawned work to finish."""
        self._worker.stop()
        if self._loop is not None:
            self._worker.wait(timeout)
            self._loop.join(timeout)
            self._loop = None
        self._executor.shutdown(wait=True)


def stop_side_by_side(*stops: Callable[[], None]) -> None:
    """Run ``stops`` at once, each on its own thread, and return when all
    have returned; the first error any raised is raised then (after the
    others finished: one failing stop must not leave the rest running).
    Every error is logged with its traceback as it happens: only one can
    be raised, and a second failing stop must not go unseen.

    Why: every stop here waits on something that polls. oslo.messaging's
    rabbit listener notices a stop only between two waits on its
    connection (up to ``[oslo_messaging_rabbit] heartbeat_timeout_threshold
    / heartbeat_rate / 2`` seconds, at most 5), and an RPC server's
    ``wait()`` and a :class:`JobRunner`'s stop join futurist workers that
    look for work once a second. One after another, those add up."""
    errors: list[BaseException] = []

    def run(stop: Callable[[], None]) -> None:
        try:
            stop()
        except BaseException as error:  # noqa: BLE001 - raised below
            LOG.error("A stop failed (%s): %s: %s",
                      getattr(stop, "__qualname__", stop),
                      type(error).__name__, error, exc_info=True)
            errors.append(error)
    threads = [threading.Thread(target=run, args=(stop,), daemon=True)
               for stop in stops]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def stop_rpc_server(server: Any) -> Callable[[], None]:
    """An oslo.messaging server's stop: no new requests, then the ones in
    flight finish (``wait``), then its connection closes."""
    def stop() -> None:
        server.stop()
        server.wait()
    return stop


class ServiceBase(service_base.ServiceBase):
    """A trusted_pools service: oslo.service's life cycle around
    ``start()`` / ``stop()``; ``wait()`` returns once stopped.

    Subclasses implement :meth:`_start` and :meth:`_stop` and list their
    periodic jobs in :meth:`periodic_jobs`.
    """

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        self.conf = conf
        self.jobs: JobRunner | None = None
        self._stopped = threading.Event()

    def periodic_jobs(self) -> list[PeriodicJob]:
        return []

    def start(self) -> None:
        self._stopped.clear()
        self.jobs = JobRunner(self.periodic_jobs(), self.conf)
        self._start()
        self.jobs.start()

    def stop(self, graceful: bool = True) -> None:
        if self._stopped.is_set():
            return
        try:
            self._stop()
        finally:
            self._stopped.set()

    def wait(self) -> None:
        self._stopped.wait()

    def reset(self) -> None:
        """SIGHUP: configuration is re-read by oslo.service; nothing to
        reset here."""

    def _start(self) -> None:
        raise NotImplementedError

    def _stop(self) -> None:
        raise NotImplementedError

    def _stop_jobs(self) -> None:
        if self.jobs is not None:
            self.jobs.stop()


def launch(conf: cfg.ConfigOpts, service: ServiceBase) -> int:
    """Run ``service`` under oslo.service until SIGTERM (graceful: the
    service's ``stop`` runs) or SIGINT (immediate); returns the exit code."""
    select_threading_backend()
    from oslo_service import service as oslo_service
    launcher = oslo_service.launch(conf, service, restart_method="mutate")
    return launcher.wait() or 0
