"""What the demo needs beyond the product: a progress display for slow
steps, the record of expected outcomes, the final table, and the API
served over HTTP for the dashboard.

Demo-side only: the product never imports this module.
"""

from __future__ import annotations

import socketserver
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, TextIO
from wsgiref import simple_server

_SPINNER = "|/-\\"


class Progress:
    """``with Progress("enrolling 4 hosts"):`` says what the demo waits
    for: on a terminal a spinner with the seconds waited, elsewhere (a
    log, a test) one line when it starts and one when it ends."""

    def __init__(self, what: str, stream: TextIO | None = None) -> None:
        self.what = what
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self.started = 0.0

    def __enter__(self) -> "Progress":
        self.started = time.monotonic()
        if self.live:
            self._thread = threading.Thread(target=self._spin, daemon=True)
            self._thread.start()
        else:
            self.stream.write("... %s\n" % self.what)
            self.stream.flush()
        return self

    def _spin(self) -> None:
        turn = 0
        while not self._done.wait(0.1):
            self.stream.write("\r%s waiting: %s (%.0f s)" % (
                _SPINNER[turn % len(_SPINNER)], self.what,
                time.monotonic() - self.started))
            self.stream.flush()
            turn += 1

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()
            # Clear the spinner's line before the result is printed.
            self.stream.write("\r\033[K")
        self.stream.write("%s %s in %.1f s\n" % (
            "done:" if exc_type is None else "FAILED:", self.what,
            time.monotonic() - self.started))
        self.stream.flush()


@dataclass
class Story:
    """What happened, for the final table, and which expected outcomes
    did not happen (the demo's exit status)."""

    hosts: list[tuple[str, ...]] = field(default_factory=list)
    vms: list[tuple[str, ...]] = field(default_factory=list)
    vtpms: list[tuple[str, ...]] = field(default_factory=list)
    migrations: list[tuple[str, ...]] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    def expect(self, ok: bool, what: str) -> bool:
        """Record ``what`` as not happening unless ``ok``; print it."""
        if not ok:
            self.unexpected.append(what)
            print("UNEXPECTED: %s" % what, flush=True)
        return ok


#: The final table's sections and their columns (tests parse them: two
#: or more spaces separate the columns, the last one may hold spaces).
SECTIONS = (
    ("HOSTS", "hosts", ("HOST", "VERDICT", "LEVEL", "ROLE")),
    ("VMS", "vms", ("VM", "PLACED ON", "VTPM", "FLAVOR")),
    ("VTPMS", "vtpms", ("VM", "HOST", "STATE", "DEEP VERDICT",
                        "KEY RELEASED TO", "KEY REFUSED TO")),
    ("MIGRATIONS", "migrations", ("VM", "FROM", "TO", "OUTCOME",
                                  "REASON")),
)


def table_lines(story: Story, reason_width: int = 110) -> Iterator[str]:
    """The final table, section by section."""
    for title, attribute, columns in SECTIONS:
        # One space at most inside a cell: two or more separate columns.
        rows = [tuple(" ".join(str(c).split()) for c in row)
                for row in getattr(story, attribute)]
        rows = [row[:-1] + (_clip(row[-1], reason_width),) for row in rows]
        widths = [max([len(columns[i])] + [len(r[i]) for r in rows])
                  for i in range(len(columns))]
        yield ""
        yield "[%s]" % title
        for row in [columns] + rows:
            yield "  ".join(cell.ljust(widths[i]) for i, cell in
                            enumerate(row)).rstrip()


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 3] + "..."


class _QuietHandler(simple_server.WSGIRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


class _ThreadingServer(socketserver.ThreadingMixIn,
                       simple_server.WSGIServer):
    daemon_threads = True


class HttpServer:
    """A WSGI application on 127.0.0.1 on a free port, in a thread."""

    def __init__(self, application: Any) -> None:
        self.server = simple_server.make_server(
            "127.0.0.1", 0, application, server_class=_ThreadingServer,
            handler_class=_QuietHandler)
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.1},
                                       daemon=True)

    def start(self) -> "HttpServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
