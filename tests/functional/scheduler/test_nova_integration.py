"""Inside a real Nova: TrustedHostFilter in nova-scheduler.

Nova's own functional harness (``ProviderUsageBaseTestCase``: nova-api,
conductor, scheduler, Placement fixture, fake virt driver computes) with the
filter enabled beside Nova's default filters. Verdicts come from the
project's conductor code: a ``ConductorManager`` signs them with its
``ResultSigner`` and publishes them through its own notification path over
the real RabbitMQ; the filter's listener, started by nova-scheduler itself
from ``[trusted_pools_scheduler]`` options, verifies and caches them.

Nova's harness monkey-patches the whole interpreter (eventlet) or, in native
threading mode, refuses to run once eventlet was imported. Either would leak
into the rest of a pytest session, so the pytest-facing test runs the Nova
test class in a child interpreter in native threading mode
(``OS_NOVA_DISABLE_EVENTLET_PATCHING=1``) and reports its result; run this
file with ``TRUSTED_POOLS_NOVA_CHILD=1`` to run the class directly.
"""

from __future__ import annotations

import os
import time
import uuid

import pytest

_CHILD = os.environ.get("TRUSTED_POOLS_NOVA_CHILD") == "1"


@pytest.mark.slow
@pytest.mark.rabbitmq
@pytest.mark.skipif(_CHILD, reason="parent side only")
def test_trusted_host_filter_inside_nova():
    from tests.nova_harness import run_nova_child
    run_nova_child(__file__, "TestTrustInNova")


if _CHILD:
    import oslo_messaging as messaging
    from oslo_config import cfg

    from tests import nova_harness
    from tests.rabbitmq import RABBIT_URL, require_broker

    nova_harness.ensure_api_paste()

    from nova.tests.functional import integrated_helpers  # noqa: E402

    from trusted_pools.protocol import keystore
    from trusted_pools.common import rpc as tp_rpc
    from trusted_pools.conductor.manager import ConductorManager
    from trusted_pools.nova.scheduler import listener as tp_listener
    from trusted_pools.nova.scheduler import opts as tp_opts

    CONF = cfg.CONF
    FILTER = "TrustedHostFilter"
    NO_VALID_HOST = "No valid host"

    class TestTrustInNova(integrated_helpers.ProviderUsageBaseTestCase):
        compute_driver = "fake.SmallFakeDriver"

        def setUp(self):
            require_broker()
            if tp_opts.group.name not in CONF:
                tp_opts.register_opts(CONF)
            self.exchange = "tp-nova-%s" % uuid.uuid4().hex
            self.key = keystore.generate_signing_key()
            key_path = os.path.join(self.useFixture(
                __import__("fixtures").TempDir()).path, "conductor.pem")
            with open(key_path, "w") as handle:
                handle.write(keystore.public_key_pem(self.key))
            self.flags(available_filters=[
                "nova.scheduler.filters.all_filters",
                "trusted_pools.nova.scheduler.filters.TrustedHostFilter"],
                group="filter_scheduler")
            enabled = list(CONF.filter_scheduler.enabled_filters)
            self.flags(enabled_filters=enabled + [FILTER],
                       group="filter_scheduler")
            self.flags(transport_url=RABBIT_URL,
                       control_exchange=self.exchange,
                       conductor_public_keys=[key_path], max_age=60,
                       grace=600, refresh_interval=60, rpc_timeout=1,
                       # Queues are named by pool, not by exchange: a pool
                       # of its own keeps earlier tests' listeners (still
                       # shutting down) off this test's notifications.
                       notification_pool="tp-nova-%s" % uuid.uuid4().hex,
                       group=tp_opts.group.name)
            super().setUp()
            # The listener was started by nova-scheduler loading the filter.
            self.addCleanup(tp_listener.stop_default, wait=False)
            self.cache = tp_listener.default_cache(CONF)
            for host in ("host1", "host2", "host3"):
                self._start_compute(host)
            self.conductor = self._start_conductor()
            self.trusted = self._create_flavor(
                name="trusted", memory_mb=512, vcpu=1, disk=1, ephemeral=0,
                extra_spec={"trust:trusted_host": "required"})
            self.plain = self._create_flavor(
                name="plain", memory_mb=512, vcpu=1, disk=1, ephemeral=0)

        def _clear_attrs(self):
            # Nova drops instance attributes after a test; pytest set the
            # test method as one and deletes it afterwards: keep it.
            method = self.__dict__.get(self._testMethodName)
            super()._clear_attrs()
            if method is not None:
                self.__dict__[self._testMethodName] = method

        def _start_conductor(self) -> ConductorManager:
            """The conductor's manager publishing over the real broker on
            this test's exchange (the transport takes the exchange from
            control_exchange when it is created)."""
            self.flags(control_exchange=self.exchange)
            transport = messaging.get_notification_transport(
                CONF, url=RABBIT_URL)
            self.addCleanup(transport.cleanup)
            notifier = messaging.Notifier(
                transport, publisher_id="trusted_pools.conductor.c1",
                driver="messagingv2", topics=tp_rpc.NOTIFICATION_TOPICS)
            return ConductorManager("c1", None, self.key, None, notifier,
                                    b"", interval=60)

        def _verdict(self, host, status="trusted", level=4):
            factory = nova_harness.VerdictFactory(key=self.key,
                                                  issuer="c1")
            verdict = factory.verdict(host, status, level)
            self._sequence = getattr(self, "_sequence", 0) + 1
            token = self.conductor.signer.sign(verdict,
                                               sequence=self._sequence)
            self.conductor._publish_if_changed(verdict, token)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                entry = self.cache.get(host)
                if entry is not None and entry.token == token:
                    return
                time.sleep(0.05)
            self.fail("verdict for %s never reached nova-scheduler" % host)

        def _boot(self, flavor, expected="ACTIVE"):
            return self._create_server(flavor_id=flavor, networks="none",
                                       expected_state=expected)

        def _host_of(self, server):
            return server["OS-EXT-SRV-ATTR:host"]

        def test_trusted_flavor_lands_only_on_trusted_host(self):
            self._verdict("host2")
            self._verdict("host3", status="untrusted")
            for _ in range(3):
                server = self._boot(self.trusted)
                self.assertEqual("host2", self._host_of(server))
            # A plain flavor is unaffected: Nova's weighers now spread it
            # to the hosts that are not trusted.
            placed = {self._host_of(self._boot(self.plain))
                      for _ in range(2)}
            self.assertTrue(placed & {"host1", "host3"}, placed)

        def test_no_trusted_host_is_no_valid_host(self):
            self._verdict("host1", status="untrusted")
            self._verdict("host2", status="unknown")
            server = self._boot(self.trusted, expected="ERROR")
            self.assertIn(NO_VALID_HOST, server["fault"]["message"])
            self.assertEqual("ACTIVE", self._boot(self.plain)["status"])
            # nova-api refuses a bad trust: extra spec at flavor update.
            nova_harness.load_validators()
            from nova.tests.functional.api import client
            for spec in ({"trust:min_level": "7"},
                         {"trust:trusted_host": "maybe"},
                         {"trust:typo": "1"}):
                with self.assertRaises(client.OpenStackApiException) as ctx:
                    self.admin_api.post_extra_spec(self.plain,
                                                   {"extra_specs": spec})
                self.assertEqual(400, ctx.exception.response.status_code)

        def test_host_turning_untrusted_stops_receiving(self):
            self._verdict("host1")
            self.assertEqual("host1", self._host_of(self._boot(self.trusted)))
            self._verdict("host1", status="untrusted")
            server = self._boot(self.trusted, expected="ERROR")
            self.assertIn(NO_VALID_HOST, server["fault"]["message"])

        def test_stale_verdict_is_untrusted(self):
            strict = self._create_flavor(
                name="strict", memory_mb=512, vcpu=1, disk=1, ephemeral=0,
                extra_spec={"trust:trusted_host": "required",
                            "trust:max_age": "1"})
            self._verdict("host3")
            time.sleep(1.5)
            server = self._boot(strict, expected="ERROR")
            self.assertIn(NO_VALID_HOST, server["fault"]["message"])
            # The same verdict is still fresh for the operator's max_age.
            self.assertEqual("host3", self._host_of(self._boot(self.trusted)))
