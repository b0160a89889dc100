"""``trusted-pools-api``: the management REST API on a small threaded
server (devstack, the demo, tests). Production runs the same application
under uwsgi or mod_wsgi (:mod:`trusted_pools.wsgi.api`)."""

from __future__ import annotations

import logging
import signal
import socketserver
import sys
import threading
from typing import Any
from wsgiref import simple_server

from trusted_pools.api import app
from trusted_pools.common import config
from trusted_pools.common import rpc

LOG = logging.getLogger(__name__)


class _ThreadingServer(socketserver.ThreadingMixIn,
                       simple_server.WSGIServer):
    daemon_threads = True


class _QuietHandler(simple_server.WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        LOG.info("%s %s", self.address_string(), format % args)


def make_server(host: str, port: int, application: app.WSGIApp
                ) -> simple_server.WSGIServer:
    return simple_server.make_server(host, port, application,
                                     server_class=_ThreadingServer,
                                     handler_class=_QuietHandler)


def main(argv: list[str] | None = None) -> int:
    conf = config.parse_args(sys.argv[1:] if argv is None else argv,
                             "trusted-pools-api")
    rpc.init(conf)
    try:
        server = make_server(conf.trusted_pools_api.host, conf.trusted_pools_api.port, app.build(conf))
        # SIGTERM stops serving as Ctrl-C does.
        signal.signal(signal.SIGTERM, lambda *_: threading.Thread(
            target=server.shutdown, daemon=True).start())
        LOG.info("trusted-pools-api listening on %s:%d", conf.trusted_pools_api.host,
                 conf.trusted_pools_api.port)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        server.server_close()
        return 0
    finally:
        rpc.cleanup()


if __name__ == "__main__":
    sys.exit(main())
