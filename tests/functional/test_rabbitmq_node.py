"""The private RabbitMQ node of tests/rabbitmq_node.py: a restart is a real
one (the same node, another process, its durable state kept, every
connection cut), close() leaves nothing behind, and a machine without
rabbitmq-server gets the install line."""

from __future__ import annotations

import os
import socket

import amqp
import pytest

from tests import rabbitmq_node
from tests.rabbitmq_node import PrivateRabbitNode, RabbitMQMissing

pytestmark = [pytest.mark.rabbitmq]


def _connect(node: PrivateRabbitNode) -> amqp.Connection:
    connection = amqp.Connection("127.0.0.1:%d" % node.port,
                                 userid="guest", password="guest")
    connection.connect()
    return connection


def _beam_pid(node: PrivateRabbitNode) -> int:
    return int((node.dir / "node.pid").read_text().strip())


def test_restart_is_real_and_close_leaves_nothing():
    with PrivateRabbitNode.started() as node:
        assert node.port != 5672 and node.name.startswith("tp-")
        connection = _connect(node)
        channel = connection.channel()
        channel.queue_declare("kept", durable=True, auto_delete=False)
        channel.basic_publish(amqp.Message(b"marker", delivery_mode=2),
                              routing_key="kept")
        # A clean stop writes all of it to disk (a crash right after the
        # publish may lose what is not synced yet, as a real one would).
        node.restart(graceful=True)
        connection = _connect(node)
        channel = connection.channel()
        channel.queue_declare("lost", durable=False, auto_delete=False)
        before = _beam_pid(node)

        seconds = node.restart()  # the crash: SIGKILL to the node

        assert seconds > 0 and node.running
        assert _beam_pid(node) != before and not _runs(before)
        # The old connection was cut with the node.
        with pytest.raises((OSError, amqp.exceptions.AMQPError)):
            connection.channel().queue_declare("kept", passive=True)
        connection.collect()
        again = _connect(node)
        channel = again.channel()
        message = channel.basic_get("kept", no_ack=True)
        assert message is not None and message.body == b"marker"
        with pytest.raises(amqp.exceptions.NotFound):
            channel.queue_declare("lost", passive=True)
        again.close()
        assert "kept" in node.rabbitmqctl("list_queues", "name")
        directory, port, beam = node.dir, node.port, _beam_pid(node)
    assert not directory.exists()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    assert not _runs(beam)


def _runs(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for init does not)."""
    try:
        with open("/proc/%d/stat" % pid) as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] not in "ZX"
    except OSError:
        return False


def test_missing_rabbitmq_server_is_named(monkeypatch):
    monkeypatch.setattr(rabbitmq_node, "SCRIPT_DIRS", ())
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(RabbitMQMissing) as info:
        PrivateRabbitNode()
    assert "rabbitmq-server" in str(info.value)
    assert rabbitmq_node.APT_LINE in str(info.value)


def test_failed_boot_leaves_nothing(monkeypatch):
    """A node that cannot boot (its config is broken) raises with its log
    tail; started() leaves no process of it and no directory."""
    made = []
    real_write = PrivateRabbitNode._write_files

    def broken(self):
        real_write(self)
        (self.dir / "rabbitmq.conf").write_text("listeners.tcp = nonsense\n")
        made.append(self)
    monkeypatch.setattr(PrivateRabbitNode, "_write_files", broken)
    with pytest.raises(rabbitmq_node.RabbitMQNodeFailed, match="booting"):
        with PrivateRabbitNode.started():
            pytest.fail("a broken node booted")
    (node,) = made
    assert not node.dir.exists() and not node.running
    assert node not in rabbitmq_node._LIVE_NODES
    assert _group_members(node) == []


def _group_members(node: PrivateRabbitNode) -> list[int]:
    """Processes still running with the node's name in their command."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as cmd:
                if node.name.encode() in cmd.read() and _runs(int(entry)):
                    found.append(int(entry))
        except OSError:
            continue
    return found
