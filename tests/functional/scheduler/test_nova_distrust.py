"""Inside a real Nova: the response to distrust.

The set-up of ``test_nova_integration`` (Nova's ``ProviderUsageBaseTestCase``
with three ``SmallFakeDriver`` computes, the TrustedHostFilter in
nova-scheduler, verdicts signed and published by the conductor's own
``ConductorManager`` over the real RabbitMQ) plus the consumer the
``trusted-pools-placement-sync`` service runs: an ``ObservedVerdictCache``
fed by its own ``TrustListener`` (a notification pool of its own) and a
``DistrustResponder`` in background mode with the shipped actions
``notify``, ``disable_compute`` and ``migrate_trusted_instances``.

The actions reach Nova's API through openstacksdk over a keystoneauth1
session, the way they do in production, at the URL where Nova's harness
serves it: the harness's ``OSAPIFixture`` installs wsgi-intercept for
``requests`` on that URL, so the SDK's HTTP requests (version discovery
included) reach Nova's real WSGI API in-process, no socket. Nova's harness
replaces keystonemiddleware with a stub that builds the request context
from ``X-Auth-User``/``X-Auth-Project-Id``/``X-Roles``; the test's session
sends those headers besides the token (``additional_headers``, test code
only).

Like ``test_nova_integration``, the pytest-facing test runs the Nova test
class in a child interpreter in native threading mode; run this file with
``TRUSTED_POOLS_NOVA_CHILD=1`` to run the class directly.
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
def test_distrust_response_inside_nova():
    from tests.nova_harness import run_nova_child
    run_nova_child(__file__, "TestDistrustInNova")


if _CHILD:
    import logging

    import oslo_messaging as messaging
    from keystoneauth1 import session as ks_session
    from keystoneauth1 import token_endpoint
    from oslo_config import cfg

    from tests.functional.scheduler import test_nova_integration as base
    from tests.rabbitmq import RABBIT_URL

    from trusted_pools.nova.remediation import distrust
    from trusted_pools.nova.remediation.traits import ObservedVerdictCache
    from trusted_pools.nova.scheduler import listener as tp_listener
    from trusted_pools.nova.scheduler import opts as tp_opts

    CONF = cfg.CONF
    ACTIONS = ["notify", "disable_compute", "migrate_trusted_instances"]
    FINAL_MIGRATION_STATES = {"completed", "error", "failed", "cancelled",
                              "done"}
    #: Where the actions' records are logged.
    DISTRUST_LOGGER = distrust.__name__

    def compute_api_for_harness(base_url: str, project_id: str
                                ) -> distrust.ComputeAPI:
        """The actions' ComputeAPI (openstacksdk) at the harness's endpoint.

        A token session with a fixed endpoint, like ``for_endpoint``, that
        also sends the identity headers that stand in for keystonemiddleware
        in Nova's harness, as an admin of the project.
        """
        session = ks_session.Session(
            auth=token_endpoint.Token(base_url, "admin"),
            additional_headers={"X-Auth-User": "admin",
                                "X-User-Id": "admin",
                                "X-Auth-Project-Id": project_id,
                                "X-Roles": "reader,member,admin"})
        return distrust.ComputeAPI.for_session(
            session, "2.53", compute_endpoint_override=base_url)

    class TestDistrustInNova(base.TestTrustInNova):
        """The base class's set-up (computes, filter, conductor, flavors,
        ``_verdict``) reused; its tests are not run again here: unittest
        and pytest collect only callable ``test*`` attributes."""

        test_trusted_flavor_lands_only_on_trusted_host = None
        test_no_trusted_host_is_no_valid_host = None
        test_host_turning_untrusted_stops_receiving = None
        test_stale_verdict_is_untrusted = None

        def setUp(self):
            super().setUp()
            group = CONF[tp_opts.group.name]
            self.observed = ObservedVerdictCache(
                tp_listener.load_public_keys(
                    list(group.conductor_public_keys)),
                max_age=group.max_age, grace=group.grace)
            self.compute = compute_api_for_harness(
                self.api_fixture.base_url, self.api_fixture.project_id)
            self.responder = distrust.DistrustResponder(
                self.observed, distrust.load_actions(
                    ACTIONS, compute=self.compute), background=True)
            self.addCleanup(self.responder.stop)
            self.observed.add_observer(self.responder.observe)
            transport = messaging.get_notification_transport(
                CONF, url=RABBIT_URL)
            self.addCleanup(transport.cleanup)
            listener = tp_listener.TrustListener(
                self.observed, None, notification_transport=transport,
                exchange=group.control_exchange,
                pool="tp-distrust-%s" % uuid.uuid4().hex,
                refresh_interval=group.refresh_interval)
            listener.start(initial_refresh=False)
            self.addCleanup(listener.stop)

        def _verdict(self, host, status="trusted", level=4):
            """Publish through the conductor; wait until nova-scheduler and
            the responder's listener both hold the same token."""
            super()._verdict(host, status, level)
            token = self.cache.get(host).token
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                entry = self.observed.get(host)
                if entry is not None and entry.token == token:
                    return
                time.sleep(0.05)
            self.fail("verdict for %s never reached the responder" % host)

        def _records(self, host, count):
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                records = self.responder.records_for(host)
                if len(records) >= count:
                    return records
                time.sleep(0.1)
            self.fail("the responder recorded %r for %s"
                      % (self.responder.records_for(host), host))

        def _settle_migrations(self):
            """Cleanup: let live migrations in flight finish before Nova's
            services stop (a conductor waiting on a stopped compute would
            hold the teardown for minutes when an assertion failed)."""
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                migrations = self.admin_api.api_get(
                    "/os-migrations").body["migrations"]
                if all(m["status"] in FINAL_MIGRATION_STATES
                       for m in migrations):
                    return
                time.sleep(0.2)

        def _service(self, host):
            (service,) = self.admin_api.get_services(
                binary="nova-compute", host=host)
            return service

        def test_untrusted_host_is_disabled_and_emptied(self):
            self._verdict("host1")
            self._verdict("host3", status="untrusted")
            # host2 has no verdict yet: trust can only land on host1.
            trusted = [self._boot(self.trusted) for _ in range(2)]
            self.assertEqual({"host1"}, {self._host_of(s) for s in trusted})
            plain = self._create_server(flavor_id=self.plain, host="host1",
                                        networks="none")
            self.assertEqual("host1", self._host_of(plain))
            self._verdict("host2")
            self.assertEqual([], self.responder.records_for("host1"))
            self.addCleanup(self._settle_migrations)

            with self.assertLogs(DISTRUST_LOGGER, logging.INFO) as logs:
                self._verdict("host1", status="untrusted")
                records = self._records("host1", len(ACTIONS))
            self.assertEqual(ACTIONS, [r.action for r in records])
            self.assertEqual(["done"] * len(ACTIONS),
                             [r.outcome for r in records], records)
            for record in records:
                self.assertTrue(any(
                    "Distrust action %s on host host1: done" % record.action
                    in line for line in logs.output), logs.output)
            jti = self.observed.get("host1").jti

            # (a) Nova's API shows nova-compute on host1 disabled, with a
            # reason that names the verdict.
            service = self._service("host1")
            self.assertEqual("disabled", service["status"])
            self.assertIn(jti, service["disabled_reason"])
            self.assertIn("untrusted", service["disabled_reason"])
            self.assertIn("PCR 4", service["disabled_reason"])
            self.assertEqual(((service["id"], "disabled"),),
                             records[1].items)
            self.assertEqual("enabled", self._service("host2")["status"])

            # (b) the servers that need trust moved to host2, the trusted
            # host, in Nova and in Placement; the plain one stayed.
            self.assertEqual(
                sorted((s["id"], "live migration requested")
                       for s in trusted), sorted(records[2].items))
            host2 = self._get_provider_uuid_by_host("host2")
            for server in trusted:
                self._wait_for_migration_status(server, ["completed"])
                moved = self._wait_for_server_parameter(
                    server, {"OS-EXT-SRV-ATTR:host": "host2",
                             "status": "ACTIVE"}, max_retries=40)
                self.assertEqual("host2", self._host_of(moved))
                self.assertEqual(
                    [host2], list(self._get_allocations_by_server_uuid(
                        server["id"])))
            self.assertEqual("host1", self._host_of(
                self.api.get_server(plain["id"])))

            # New servers that need trust go to host2; even a plain server
            # asked for host1 finds no host there now (disabled service,
            # which the trust filter alone would not refuse).
            self.assertEqual("host2", self._host_of(self._boot(self.trusted)))
            refused = self._create_server(flavor_id=self.plain, host="host1",
                                          networks="none",
                                          expected_state="ERROR")
            self.assertIn(base.NO_VALID_HOST, refused["fault"]["message"])

            # The same distrust again does nothing more.
            self._verdict("host1", status="unknown")
            time.sleep(0.5)
            self.assertEqual(len(ACTIONS), len(self.responder.history))
