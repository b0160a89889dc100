"""A real Placement (``openstack-placement``) on 127.0.0.1, for tests and
the benchmark.

The Placement WSGI application (``placement.deploy.loadapp``: the whole
middleware pipeline, ``[api] auth_strategy = noauth2``) with a fresh SQLite
database file, schema created in-process the way ``placement-manage db
sync`` does (``sync_on_startup``), served by wsgiref in a child process.

A child process because Placement configures its database engine and
policy enforcer once per process (``run_once``): each server gets its own
database, and nothing of Placement's global state leaks into the test
process (Nova's harness, run elsewhere, configures Placement too).

With noauth2 the token is the user: ``admin`` gets the admin role.

Run ``python -m tests.placement_fixture DBFILE`` to serve by hand; it
prints ``PORT <n>`` once listening.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import tempfile
import time
from typing import Any

TOKEN = "admin"
_START_TIMEOUT = 60.0


class PlacementServer:
    """Start with :meth:`start`, stop with :meth:`stop`; ``endpoint`` is the
    base URL (no version prefix: Placement serves at its root)."""

    def __init__(self, workdir: str | None = None) -> None:
        self._tmp = None
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="placement-")
            workdir = self._tmp.name
        self.db_path = pathlib.Path(workdir) / "placement.sqlite"
        self.log_path = pathlib.Path(workdir) / "placement.log"
        self._proc: subprocess.Popen[str] | None = None
        self.port: int | None = None

    @property
    def endpoint(self) -> str:
        if self.port is None:
            raise RuntimeError("Placement server is not started")
        return "http://127.0.0.1:%d" % self.port

    def start(self) -> "PlacementServer":
        root = pathlib.Path(__file__).resolve().parent.parent
        log = open(self.log_path, "w")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tests.placement_fixture",
             str(self.db_path)], cwd=str(root), stdout=subprocess.PIPE,
            stderr=log, text=True, env=dict(os.environ, PYTHONWARNINGS=
                                             "ignore"))
        log.close()
        deadline = time.monotonic() + _START_TIMEOUT
        assert self._proc.stdout is not None
        while time.monotonic() < deadline:
            line = self._proc.stdout.readline()
            if not line:
                break
            if line.startswith("PORT "):
                self.port = int(line.split()[1])
                return self
        log_text = self.log_path.read_text()[-4000:]
        self.stop()
        raise RuntimeError("Placement did not start; its log:\n"
                           + log_text)

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
            if self._proc.stdout is not None:
                self._proc.stdout.close()
            self._proc = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> "PlacementServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


# --- the child process ---------------------------------------------------------

def _build_app(db_path: str) -> Any:
    from oslo_config import cfg
    from oslo_policy import opts as policy_opts

    from placement import conf as placement_conf
    from placement import db_api
    from placement import deploy

    conf = cfg.ConfigOpts()
    placement_conf.register_opts(conf)
    policy_opts.set_defaults(conf, enforce_new_defaults=False)
    conf.set_default("connection", "sqlite:///%s" % db_path,
                     group="placement_database")
    conf([], project="placement", default_config_files=[],
         default_config_dirs=[])
    conf.set_override("auth_strategy", "noauth2", group="api")
    conf.set_override("sync_on_startup", True, group="placement_database")
    db_api.configure(conf)
    return deploy.loadapp(conf)


def _serve(db_path: str) -> None:
    import logging
    from wsgiref import simple_server

    logging.basicConfig(level=logging.WARNING)

    class QuietHandler(simple_server.WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    app = _build_app(db_path)
    server = simple_server.make_server("127.0.0.1", 0, app,
                                       handler_class=QuietHandler)
    print("PORT %d" % server.server_port, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    _serve(sys.argv[1])
