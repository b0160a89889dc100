"""A minimal QMP client for the live-migration tests and bench.

Hand-written on purpose: QMP is line-delimited JSON on a UNIX socket and
the tests need five commands (``qmp_capabilities``,
``migrate-set-capabilities``, ``migrate-incoming``, ``migrate``,
``query-migrate``/``query-status``); a library (qemu.qmp) would be one
more dependency for that. Asynchronous events are kept in
:attr:`QMP.events`, never mistaken for a command's answer.
"""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Any


class QMPError(RuntimeError):
    """QEMU answered a command with an error."""


class QMP:
    """One QMP connection (``-qmp unix:PATH,server=on,wait=off``)."""

    def __init__(self, path: str | os.PathLike, timeout: float = 30.0
                 ) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._sock = socket.socket(socket.AF_UNIX,
                                           socket.SOCK_STREAM)
                self._sock.settimeout(timeout)
                self._sock.connect(os.fspath(path))
                break
            except (FileNotFoundError, ConnectionRefusedError):
                self._sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        self._file = self._sock.makefile("rb")
        self.events: list[dict] = []
        self.greeting = self._read()
        self.command("qmp_capabilities")

    def _read(self) -> dict:
        line = self._file.readline()
        if not line:
            raise ConnectionError("QEMU closed the QMP socket")
        return json.loads(line)

    def command(self, name: str, **arguments: Any) -> Any:
        message: dict[str, Any] = {"execute": name}
        if arguments:
            message["arguments"] = arguments
        self._sock.sendall(json.dumps(message).encode() + b"\n")
        while True:
            answer = self._read()
            if "event" in answer:
                self.events.append(answer)
                continue
            if "error" in answer:
                raise QMPError("%s: %s" % (name, answer["error"]))
            return answer.get("return")

    def wait_migration(self, timeout: float = 120.0) -> dict:
        """Poll ``query-migrate`` until completed, failed or cancelled;
        the last answer."""
        deadline = time.monotonic() + timeout
        while True:
            info = self.command("query-migrate")
            if info.get("status") in ("completed", "failed", "cancelled"):
                return info
            if time.monotonic() > deadline:
                raise TimeoutError("migration still %s after %.0f s"
                                   % (info.get("status"), timeout))
            time.sleep(0.05)

    def close(self) -> None:
        try:
            self._file.close()
        finally:
            self._sock.close()
