"""Fixtures of the vTPM migration tests (tests/migration_harness.py)."""

from __future__ import annotations

from typing import Iterator

import pytest

from tests.migration_harness import MigrationPool, build_pool


@pytest.fixture
def migration_pool(tmp_path, rabbit_conf, swtpm_pool, swtpm_ca
                   ) -> Iterator[MigrationPool]:
    """Three hosts: compute-00 and compute-01 trusted, compute-02 booted
    an unapproved kernel (untrusted)."""
    yield from build_pool(tmp_path, rabbit_conf, swtpm_pool, swtpm_ca, 3,
                          tamper=(2,))


class BusTap:
    """Every message published on the test's RabbitMQ virtual host, as
    the broker saw it: RabbitMQ's firehose tracer (``rabbitmqctl
    trace_on``) copies each publish, requests and replies alike, to
    ``amq.rabbitmq.trace``; a queue of ours bound there collects them."""

    def __init__(self, url: str) -> None:
        import urllib.parse

        import amqp
        from tests.rabbitmq import rabbitmqctl
        parts = urllib.parse.urlsplit(url)
        self.vhost = urllib.parse.unquote(parts.path.lstrip("/")) or "/"
        if not rabbitmqctl("trace_on", "-p", self.vhost):
            pytest.fail("cannot turn RabbitMQ's firehose tracer on with "
                        "rabbitmqctl (run the tests as a user that may)",
                        pytrace=False)
        self.bodies: list[bytes] = []
        self.connection = amqp.Connection(
            "%s:%d" % (parts.hostname or "127.0.0.1", parts.port or 5672),
            userid=urllib.parse.unquote(parts.username or "guest"),
            password=urllib.parse.unquote(parts.password or "guest"),
            virtual_host=self.vhost)
        self.connection.connect()
        self.channel = self.connection.channel()
        queue = self.channel.queue_declare(exclusive=True,
                                           auto_delete=True).queue
        self.channel.queue_bind(queue, "amq.rabbitmq.trace", "publish.#")
        self.channel.basic_consume(
            queue, no_ack=True,
            callback=lambda message: self.bodies.append(bytes(
                message.body if isinstance(message.body, bytes)
                else message.body.encode("utf-8"))))

    def drain(self, quiet: float = 1.0) -> bytes:
        """Everything captured so far (waits until ``quiet`` seconds pass
        without a message)."""
        import socket
        while True:
            try:
                self.connection.drain_events(timeout=quiet)
            except socket.timeout:
                break
        return b"\n".join(self.bodies)

    def close(self) -> None:
        from tests.rabbitmq import rabbitmqctl
        try:
            self.connection.close()
        finally:
            rabbitmqctl("trace_off", "-p", self.vhost)
