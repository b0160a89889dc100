"""A private RabbitMQ node that a test may crash and restart.

The shared broker at 127.0.0.1:5672 serves every test session and helper
on the machine at once, so no test may restart it. A test that needs a
real broker restart starts a node of its own::

    with PrivateRabbitNode.started() as node:
        url = node.url              # rabbit://guest:guest@127.0.0.1:<port>/
        seconds = node.restart()    # the whole node dies and boots again

The node is RabbitMQ's own ``rabbitmq-server`` with everything private:
its node name, AMQP port and Erlang distribution port (free ports), its
Mnesia, log and pid files, its config, plugin list (none: the management
plugin would double the boot time) and its Erlang cookie, all in one
temporary directory that :meth:`close` removes. The node registers with
the machine's epmd (the shared broker's; Erlang starts one if none runs).

Why the scripts under ``/usr/lib/rabbitmq/bin``: Debian's ``/usr/sbin``
wrappers switch to the ``rabbitmq`` user and its home when run as root, so
they would read ``/var/lib/rabbitmq/.erlang.cookie`` and the shared
``/etc/rabbitmq`` files. The cookie trap: a node and the ``rabbitmqctl``
that talks to it must read the same cookie, so both run with ``HOME`` set
to the node's directory, where this module writes one.

How :meth:`stop` ends the node: by default SIGKILL to its whole process
group (the ``rabbitmq-server`` shell and the ``beam.smp`` under it), as a
crashed or power-cut broker ends: clients see their sockets reset at
once, and the next boot recovers Mnesia and the message store from disk.
Measured on a 2-core machine: the kill takes < 0.1 s and the boot
3.8-7 s (far more when the machine is overloaded), against 1.1 s (SIGTERM)
or 2.6 s (``rabbitmqctl stop``) for a clean shutdown before the same boot,
so the crash is both the harsher and the faster real restart.
``graceful=True`` does the clean shutdown. ``stop_app``/``start_app``
(about 3 s) was not used: the Erlang VM survives it, so nothing is
recovered from disk as after a broker crash, and it is barely faster.

An ``atexit`` hook stops whatever node a crashed test run left behind.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

APT_LINE = "apt-get install -y rabbitmq-server"
#: Debian and Ubuntu install the real scripts here (see the module doc).
SCRIPT_DIRS = ("/usr/lib/rabbitmq/bin",)

_BOOT_TIMEOUT = 60.0
_STOP_TIMEOUT = 30.0
_LIVE_NODES: set["PrivateRabbitNode"] = set()


class RabbitMQMissing(RuntimeError):
    """rabbitmq-server is not installed on this machine."""


class RabbitMQNodeFailed(RuntimeError):
    """The private node did not boot or stop; its log tail is attached."""


def find_script(name: str) -> str:
    """The RabbitMQ script ``name`` (``rabbitmq-server``, ``rabbitmqctl``)
    that runs as the calling user."""
    for directory in SCRIPT_DIRS:
        path = os.path.join(directory, name)
        if os.access(path, os.X_OK):
            return path
    found = shutil.which(name)
    if found is None:
        raise RabbitMQMissing("%s is not installed (no %s in %s or on PATH); "
                              "install it with: %s"
                              % (name, name, ", ".join(SCRIPT_DIRS),
                                 APT_LINE))
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


class PrivateRabbitNode:
    """One RabbitMQ node of this process's own (see the module doc)."""

    def __init__(self, base_dir: str | os.PathLike | None = None) -> None:
        self.server = find_script("rabbitmq-server")
        self.ctl = find_script("rabbitmqctl")
        self.dir = Path(tempfile.mkdtemp(prefix="tp-rabbit-", dir=base_dir))
        self.name = "tp-%s@localhost" % secrets.token_hex(6)
        self.port = _free_port()
        self.dist_port = _free_port()
        while self.dist_port == self.port:
            self.dist_port = _free_port()
        self._process: subprocess.Popen | None = None
        self._log = self.dir / "console.log"
        self._write_files()

    @classmethod
    @contextlib.contextmanager
    def started(cls, base_dir: str | os.PathLike | None = None
                ) -> Iterator["PrivateRabbitNode"]:
        """A booted node, stopped and its directory removed on exit, also
        when the body or the boot fails."""
        node = cls(base_dir)
        try:
            node.start()
            yield node
        finally:
            node.close()

    @property
    def url(self) -> str:
        return "rabbit://guest:guest@127.0.0.1:%d/" % self.port

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _write_files(self) -> None:
        cookie = self.dir / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(20).upper())
        cookie.chmod(0o400)
        # Empty: keeps /etc/rabbitmq/rabbitmq-env.conf (the shared node's
        # NODENAME) out.
        (self.dir / "rabbitmq-env.conf").write_text("")
        # Only this listener; /etc/rabbitmq/rabbitmq.conf binds 5672.
        (self.dir / "rabbitmq.conf").write_text(
            "listeners.tcp.1 = 127.0.0.1:%d\n" % self.port)
        (self.dir / "enabled_plugins").write_text("[].\n")

    def env(self) -> dict[str, str]:
        """The environment of this node's scripts (server and ctl)."""
        return dict(
            os.environ, HOME=str(self.dir),
            RABBITMQ_NODENAME=self.name,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_CONF_ENV_FILE=str(self.dir / "rabbitmq-env.conf"),
            RABBITMQ_CONFIG_FILE=str(self.dir / "rabbitmq.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.dir / "enabled_plugins"),
            RABBITMQ_MNESIA_BASE=str(self.dir / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.dir / "log"),
            RABBITMQ_PID_FILE=str(self.dir / "node.pid"),
            ERL_EPMD_ADDRESS="127.0.0.1",
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=(
                "-kernel inet_dist_use_interface {127,0,0,1}"))

    def log_tail(self, size: int = 3000) -> str:
        try:
            return self._log.read_text(errors="replace")[-size:]
        except OSError:
            return ""

    def start(self, timeout: float = _BOOT_TIMEOUT) -> float:
        """Boot the node; returns once its AMQP port answers (the listener
        opens last, after the virtual hosts are up). Returns the seconds
        the boot took."""
        if self.running:
            raise RabbitMQNodeFailed("node %s is already running" % self.name)
        if _answers(self.port):
            raise RabbitMQNodeFailed(
                "port %d answers before node %s started: another process "
                "took it" % (self.port, self.name))
        began = time.monotonic()
        with open(self._log, "ab") as log:
            # Its own session: one signal to the group reaches the shell
            # and the beam.smp under it.
            self._process = subprocess.Popen(
                [self.server], env=self.env(), cwd=self.dir, stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        _LIVE_NODES.add(self)
        deadline = began + timeout
        while not _answers(self.port):
            if self._process.poll() is not None:
                # What it started (in its group) goes with it.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._process.pid, signal.SIGKILL)
                self._process = None
                raise RabbitMQNodeFailed("node %s exited while booting:\n%s"
                                         % (self.name, self.log_tail()))
            if time.monotonic() > deadline:
                self.stop()
                raise RabbitMQNodeFailed(
                    "node %s did not open port %d in %.0f s:\n%s"
                    % (self.name, self.port, timeout, self.log_tail()))
            time.sleep(0.05)
        return time.monotonic() - began

    def stop(self, graceful: bool = False,
             timeout: float = _STOP_TIMEOUT) -> float:
        """End the node (SIGKILL to its process group, or with ``graceful``
        SIGTERM, which RabbitMQ handles as a clean shutdown) and wait until
        every process of it is gone and the port is closed. Returns the
        seconds it took."""
        process = self._process
        if process is None:
            return 0.0
        began = time.monotonic()
        sig = signal.SIGTERM if graceful else signal.SIGKILL
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout)
        # The shell may go before the beam: wait for the whole group.
        deadline = time.monotonic() + timeout
        while self._group_alive(process.pid) or _answers(self.port):
            if time.monotonic() > deadline:
                raise RabbitMQNodeFailed("node %s did not stop in %.0f s"
                                         % (self.name, timeout))
            if not graceful:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
            time.sleep(0.02)
        self._process = None
        return time.monotonic() - began

    @staticmethod
    def _group_alive(pgid: int) -> bool:
        """Whether a process of the group still runs. A killed beam.smp is
        an orphan (its shell went first) that only init reaps, late on
        this machine: its zombie answers ``killpg(pgid, 0)`` for a second
        or two, so /proc is read instead, zombies not counted."""
        try:
            entries = os.listdir("/proc")
        except OSError:
            entries = None
        if entries is None:
            try:
                os.killpg(pgid, 0)
                return True
            except ProcessLookupError:
                return False
            except PermissionError:
                return True
        for entry in entries:
            if not entry.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % entry) as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            # After the command: state, ppid, pgrp.
            if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
                return True
        return False

    def restart(self, graceful: bool = False) -> float:
        """Stop the whole node and boot it again; the seconds from the
        stop to the port answering again."""
        began = time.monotonic()
        self.stop(graceful=graceful)
        self.start()
        return time.monotonic() - began

    def rabbitmqctl(self, *args: str, timeout: float = 60.0) -> str:
        """Run ``rabbitmqctl -n <this node> args``; its output."""
        proc = subprocess.run([self.ctl, "-n", self.name, *args],
                              env=self.env(), cwd=self.dir,
                              capture_output=True, text=True,
                              timeout=timeout)
        if proc.returncode:
            raise RabbitMQNodeFailed("rabbitmqctl %s: %s%s" % (
                " ".join(args), proc.stdout, proc.stderr))
        return proc.stdout

    def close(self) -> None:
        """Stop the node (if it runs) and remove its directory."""
        try:
            self.stop()
        finally:
            _LIVE_NODES.discard(self)
            shutil.rmtree(self.dir, ignore_errors=True)


@atexit.register
def _stop_leftovers() -> None:
    for node in list(_LIVE_NODES):
        with contextlib.suppress(Exception):
            node.close()
