"""Inside a real Nova: vTPM servers whose key comes from trusted_pools.

Nova 34's libvirt functional harness (``ServersTestBase``: nova-api,
conductor, scheduler, Placement, fake libvirt computes, as in Nova's own
``nova.tests.functional.libvirt.test_vtpm``) with ``[key_manager] backend
= trusted_pools``: castellan loads this project's backend by its entry
point, and the backend talks HTTP (keystoneauth1, the production
transport) to trusted-pools-api.

The trusted_pools side runs in a process of its own (it uses the real
RabbitMQ and its own configuration, which Nova's harness would reset):
swtpm TPMs booted from real event logs standing in for the compute hosts'
TPMs, their agents, a conductor, SQLite, and trusted-pools-api behind
keystonemiddleware (tokens from its AuthTokenFixture) served on a local
port. compute-00 and compute-02 are trusted; compute-01 booted a kernel
nobody approved.
The backend in Nova unwraps through the swtpm of the host it runs as.
nova-scheduler runs TrustedHostFilter (vTPM requests need a trusted host),
its listener fed by the pool's conductor over the real RabbitMQ; a test
that makes a host untrusted has the pool reboot it clean afterwards.

Two Nova classes: ``TestVTPMWithTrustedPools`` (this project's cases:
boot, reboot, cold migration, resize with revert and confirm, live
migration in 'host' mode, resume on host boot, the operations Nova
refuses, each toward trusted and untrusted hosts) and
``TestUpstreamVTPMCases`` (Nova's own ``VTPMServersTest`` cases with this
backend: a selection on every run, all with
``TRUSTED_POOLS_NOVA_UPSTREAM=all``).

Like the other Nova tests, the pytest-facing test runs the Nova class in a
child interpreter (here with testtools' runner: the class builds on Nova's
ddt-decorated ``VTPMServersTest``, which pytest's unittest plugin cannot
run).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import time

import pytest

from tests.api_fixtures import auth_tokens  # noqa: F401 - a fixture

_CHILD = os.environ.get("TRUSTED_POOLS_NOVA_CHILD") == "1"
_SERVE = os.environ.get("TRUSTED_POOLS_KEYPOOL_DIR")
ROOT = pathlib.Path(__file__).resolve().parents[3]
#: Token the Nova requests carry (a member of the project "tenant").
TOKEN = "member"
#: Token Nova's admin requests carry (an admin of the project
#: "cloud-admin", tests.api_fixtures).
ADMIN_TOKEN = "admin"
#: Nova's upstream vTPM cases run with trusted_pools on every run (their
#: names; all: TRUSTED_POOLS_NOVA_UPSTREAM=all): the 'user' mode ones, the
#: 'deployment' and 'host' mode ones that involve the key manager, and
#: two of the three that assume Barbican's ownership model (replaced, see
#: TestUpstreamVTPMCases). Each costs 5 to 10 s of Nova's harness.
UPSTREAM_CASES = frozenset({
    "test_create_server",
    "test_create_server_secret_security_deployment",
    "test_hard_reboot_server",
    "test_hard_reboot_server_as_admin_2_user",
    "test_resize_revert_server__vtpm_to_vtpm_different_config",
    "test_resize_server__no_vtpm_to_vtpm_2_user",
    "test_resize_server__vtpm_to_no_vtpm_2_user",
    "test_migrate_server",
    "test_migrate_server_as_admin",
})


@pytest.mark.slow
@pytest.mark.swtpm
@pytest.mark.rabbitmq
@pytest.mark.skipif(_CHILD or bool(_SERVE), reason="parent side only")
def test_vtpm_servers_inside_nova(tmp_path):
    from tests.rabbitmq import require_broker
    require_broker()
    env = dict(os.environ, TRUSTED_POOLS_KEYPOOL_DIR=str(tmp_path))
    log = open(tmp_path / "pool.log", "w")
    pool = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "%s::test_serve_key_pool" % __file__], env=env, cwd=ROOT,
        stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while not (tmp_path / "pool.json").exists():
            assert pool.poll() is None, (tmp_path / "pool.log").read_text(
                )[-4000:]
            assert time.monotonic() < deadline, "the key pool did not start"
            time.sleep(0.5)
        # Nova's ddt-decorated VTPMServersTest does not run under pytest's
        # unittest plugin; its runner (testtools, eventlet mode) runs it.
        child = subprocess.run(
            [sys.executable, "-m", "testtools.run",
             "tests.functional.keymanager.test_nova_vtpm."
             "TestVTPMWithTrustedPools",
             "tests.functional.keymanager.test_nova_vtpm."
             "TestUpstreamVTPMCases"],
            env=dict(os.environ, TRUSTED_POOLS_NOVA_CHILD="1",
                     TRUSTED_POOLS_KEYPOOL_JSON=str(tmp_path / "pool.json")),
            capture_output=True, text=True, timeout=900, cwd=ROOT)
        output = child.stdout + child.stderr
        assert child.returncode == 0, output[-6000:]
        ran = 10 + (49 if os.environ.get("TRUSTED_POOLS_NOVA_UPSTREAM")
                   == "all" else len(UPSTREAM_CASES))
        assert "Ran %d tests" % ran in output and "\nOK" in output, \
            output[-6000:]
    finally:
        (tmp_path / "stop").touch()
        try:
            pool.wait(60)
        except subprocess.TimeoutExpired:
            pool.kill()
        log.close()


@pytest.mark.skipif(not _SERVE, reason="the key pool's own process only")
def test_serve_key_pool(tmp_path, rabbit_conf, swtpm_pool, swtpm_ca,
                        auth_tokens):
    """The trusted_pools side, serving until the parent says stop."""
    import threading
    from wsgiref import simple_server

    from tests.api_fixtures import Client, pool_with_api
    from tests.pool_harness import ek_sha256

    out = pathlib.Path(_SERVE)
    pool, application = pool_with_api(tmp_path, rabbit_conf, swtpm_pool,
                                      swtpm_ca, 3, tamper=(1,))
    api = Client(application)
    # Verdicts here live (unknown_after_missed + 1) attestation intervals
    # of 2 s; Nova's harness in the other process starves this one of CPU
    # on a small machine, and a verdict that expires between two cycles
    # makes a host "stale" (the key withheld) for no reason of the test's.
    for conductor in pool.conductors:
        conductor.manager.unknown_after_missed = 15

    class Quiet(simple_server.WSGIRequestHandler):
        def log_message(self, *args):  # noqa: D401 - stdlib signature
            pass

    server = simple_server.make_server("127.0.0.1", 0, application,
                                       handler_class=Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    try:
        for host in pool.hosts:
            assert api.post("/v1/hosts", {
                "name": host.name, "ek_sha256": ek_sha256(host.tpm)}
                ).status_code == 201
        boot = api.post("/v1/hosts/%s/capture" % pool.hosts[0].name
                        ).json["policies"]["measured_boot"]
        assert api.post("/v1/policies", {"name": "golden", "kind":
                                         "measured_boot", "body": boot}
                        ).status_code == 201
        assert api.put("/v1/groups/default/policies/golden",
                       {"version": None}).status_code == 200
        for host in pool.hosts:
            assert api.post("/v1/hosts/%s/attest" % host.name
                            ).status_code == 200
        pool.wait_for(lambda latest: [latest[h.name].status
                                      for h in pool.hosts]
                      == ["trusted", "untrusted", "trusted"])
        thread.start()
        tmp = out / "pool.json.tmp"
        from oslo_config import cfg
        tmp.write_text(json.dumps({
            "endpoint": "http://127.0.0.1:%d" % server.server_port,
            "db": str(tmp_path / "pool.sqlite"),
            "hosts": {h.name: h.tpm.tcti for h in pool.hosts},
            # Where nova-scheduler's TrustedHostFilter hears the verdicts.
            "transport_url": cfg.CONF.transport_url,
            "control_exchange": cfg.CONF.control_exchange,
            "conductor_keys": str(pool.conductor_keys_path)}))
        os.replace(tmp, out / "pool.json")
        by_name = {h.name: h for h in pool.hosts}
        deadline = time.monotonic() + 900
        while not (out / "stop").exists() and time.monotonic() < deadline:
            # A Nova test made a host untrusted and wants it back: reboot
            # it (its TPM restarts and measures the approved boot again)
            # and attest it now.
            for request in sorted(out.glob("reboot-*")):
                name = request.name[len("reboot-"):]
                pool.reboot(by_name[name])
                api.post("/v1/hosts/%s/attest" % name)
                # The first verdict after a reboot may still be about the
                # agent's old IMA position; the next cycle's counts.
                latest = pool.wait_for(
                    lambda v: v[name].status == "trusted", timeout=30)
                request.unlink()
                (out / ("rebooted-" + name)).write_text(latest[name].status)
            time.sleep(0.2)
    finally:
        server.shutdown() if thread.is_alive() else None
        server.server_close()
        pool.close()


if _CHILD:
    import uuid
    from unittest import mock

    import fixtures
    from oslo_config import cfg

    from tests import nova_harness

    nova_harness.ensure_api_paste()

    from nova import context as nova_context  # noqa: E402
    from nova import crypto  # noqa: E402
    from nova import objects  # noqa: E402
    from nova import utils as nova_utils  # noqa: E402
    from nova import vtpm as nova_vtpm  # noqa: E402
    from nova.tests.fixtures import libvirt as fakelibvirt  # noqa: E402
    from nova.tests.functional.api import client as nova_client  # noqa
    from nova.tests.functional.libvirt import test_vtpm  # noqa: E402

    from trusted_pools.db import api as tp_db  # noqa: E402
    from trusted_pools.keymanager import backend as tp_backend  # noqa
    from trusted_pools.nova.scheduler import listener as tp_listener  # noqa
    from trusted_pools.nova.scheduler import opts as tp_opts  # noqa

    POOL = json.loads(pathlib.Path(
        os.environ["TRUSTED_POOLS_KEYPOOL_JSON"]).read_text())
    POOL_DIR = pathlib.Path(os.environ["TRUSTED_POOLS_KEYPOOL_JSON"]).parent
    CONF = cfg.CONF
    #: A vTPM flavor as operators write them (TPM 2.0, CRB).
    VTPM = {"hw:tpm_version": "2.0", "hw:tpm_model": "tpm-crb"}
    #: Another vTPM flavor (the resize target): TPM 2.0, TIS.
    VTPM_TIS = {"hw:tpm_version": "2.0", "hw:tpm_model": "tpm-tis"}
    NO_VALID_HOST = "NoValidHost"
    MIGRATE_DISK = ("nova.virt.libvirt.driver.LibvirtDriver."
                    "migrate_disk_and_power_off")

    class TrustedPoolsNova:
        """What every Nova class here adds to Nova's vTPM test set-up: the
        key manager switched to trusted_pools (its API in the pool's own
        process), Keystone tokens in Nova's request contexts, the compute
        host each call runs as, and TrustedHostFilter in nova-scheduler
        fed by the pool's conductor over the real RabbitMQ."""

        def setUp(self):
            # A failed build is not rescheduled: its fault is the reason.
            self.flags(max_attempts=1, group="scheduler")
            self._enable_trust_filter()
            super().setUp()
            self.flags(backend="trusted_pools", group="key_manager")
            self.useFixture(fixtures.MonkeyPatch("nova.crypto._KEYMGR",
                                                 None))
            if "TrustedHostFilter" in CONF.filter_scheduler.enabled_filters:
                # Its listener was started by nova-scheduler loading it.
                self.addCleanup(tp_listener.stop_default, wait=False)
                self.cache = tp_listener.default_cache(CONF)
            # Nova's harness stubs keystonemiddleware; give its request
            # contexts the Keystone token a real deployment would have.
            from nova.api import auth as nova_auth
            create = nova_auth.NovaKeystoneContext._create_context

            def with_token(env, **kwargs):
                # Nova's test clients send their roles; an admin's request
                # carries an admin's token (another project's), a user's
                # the token of a member of the project that owns the
                # servers.
                roles = env.get("HTTP_X_ROLES", "").split(",")
                kwargs["auth_token"] = ADMIN_TOKEN if "admin" in roles \
                    else TOKEN
                return create(env, **kwargs)
            self.useFixture(fixtures.MonkeyPatch(
                "nova.api.auth.NovaKeystoneContext._create_context",
                with_token))
            self.secrets = tp_db.Connection(tp_db.make_context_manager(
                "sqlite:///%s" % POOL["db"]))
            self.addCleanup(self.secrets.dispose)
            # With a token in the context (as in production), a hard
            # reboot re-creates the instance's disk images; the fake
            # libvirt has no disk files, so that part is stubbed.
            for method in ("_get_instance_disk_info_from_config",
                           "_create_images_and_backing"):
                self.useFixture(fixtures.MockPatch(
                    "nova.virt.libvirt.driver.LibvirtDriver." + method,
                    return_value=[]))
            # Each compute host has its own nova.conf in a deployment;
            # here the computes share one process, so the key manager
            # takes the host it runs as (and that host's TPM) from the
            # instance being defined: its host at that moment.
            self.released_to = []
            original = nova_vtpm.get_or_create_secret

            def as_instance_host(context, instance):
                manager = crypto._get_key_manager()
                name = self._pool_name(instance.host)
                manager.host = name
                manager._unwrapper = tp_backend.tpm_unwrapper(
                    POOL["hosts"][name],
                    int(manager._settings.binding_key_handle, 16))
                self.released_to.append(name)
                return original(context, instance)
            self.useFixture(fixtures.MonkeyPatch(
                "nova.vtpm.get_or_create_secret", as_instance_host))
            # Nova's service user context ('deployment' mode) as
            # [service_user] makes it: a keystoneauth plugin, here with the
            # 'service' persona's token, and no token of its own.
            from keystoneauth1 import token_endpoint

            def service_user_context():
                return nova_context.RequestContext(
                    user_id="nova", project_id="service",
                    roles=["service"], user_auth_plugin=token_endpoint.Token(
                        POOL["endpoint"], "service"))
            self.useFixture(fixtures.MockPatch(
                "nova.context.get_nova_service_user_context",
                service_user_context))

        def _wait_for_server_parameter(self, server, expected_params,
                                       max_retries=10, api=None,
                                       wait_for_fault_key=True):
            # Each key release crosses to the pool's process (HTTP, the
            # API, RabbitMQ, a conductor, a TPM): on a loaded 2-core
            # machine that can outlast Nova's 5 s of polling. Polling
            # longer costs nothing when the state comes sooner.
            return super()._wait_for_server_parameter(
                server, expected_params, max(max_retries, 60), api=api,
                wait_for_fault_key=wait_for_fault_key)

        def _pool_name(self, nova_host):
            """The enrolled name of a Nova compute host (the same here)."""
            return nova_host

        def _enable_trust_filter(self):
            if tp_opts.group.name not in CONF:
                tp_opts.register_opts(CONF)
            self.flags(available_filters=[
                "nova.scheduler.filters.all_filters",
                "trusted_pools.nova.scheduler.filters.TrustedHostFilter"],
                group="filter_scheduler")
            enabled = list(CONF.filter_scheduler.enabled_filters)
            self.flags(enabled_filters=enabled + ["TrustedHostFilter"],
                       group="filter_scheduler")
            # The pool's verdicts live a few attestation intervals: a
            # short bulk refresh keeps the scheduler's copies current.
            self.flags(transport_url=POOL["transport_url"],
                       control_exchange=POOL["control_exchange"],
                       conductor_public_keys=[POOL["conductor_keys"]],
                       max_age=600, grace=600, refresh_interval=2,
                       rpc_timeout=5, vtpm_requires_trust=True,
                       notification_pool="tp-vtpm-%s" % uuid.uuid4().hex,
                       group=tp_opts.group.name)

        # --- trust of the pool's hosts -------------------------------------

        def _scheduler_sees(self, name, trusted):
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if self.cache.is_trusted(name, 1) == trusted:
                    return
                time.sleep(0.1)
            self.fail("nova-scheduler never saw %s %s" % (
                name, "trusted" if trusted else "untrusted"))

        def _make_untrusted(self, name):
            """What a compromised boot does: PCR 4 moves past what the
            host's event log says; the operator attests it now. Undone
            (the host rebooted clean) when the test ends."""
            import requests
            from trusted_pools.tpm import constants
            from trusted_pools.tpm import device as tpm_device
            with tpm_device.TPMDevice(POOL["hosts"][name]) as dev:
                dev.pcr_extend(4, {constants.TPM_ALG.SHA256: b"\x42" * 32})
            answer = requests.post(
                "%s/v1/hosts/%s/attest" % (POOL["endpoint"], name),
                headers={"X-Auth-Token": "admin"}, timeout=60)
            self.assertEqual(200, answer.status_code, answer.text)
            self.assertEqual("untrusted", answer.json()["verdict"]["status"])
            self.addCleanup(self._restore_trust, name)
            self._scheduler_sees(name, trusted=False)

        def _restore_trust(self, name):
            done = POOL_DIR / ("rebooted-" + name)
            done.unlink(missing_ok=True)
            (POOL_DIR / ("reboot-" + name)).touch()
            deadline = time.monotonic() + 60
            while not done.exists():
                self.assertLess(time.monotonic(), deadline,
                                "the pool did not reboot %s" % name)
                time.sleep(0.1)
            self.assertEqual("trusted", done.read_text())

        # --- Nova ------------------------------------------------------------

        def _as_host(self, name):
            self.flags(api_endpoint=POOL["endpoint"], host=name,
                       tcti=POOL["hosts"][name],
                       group="trusted_pools_key_manager")
            self.start_compute(hostname=name)
            if name != "compute-01":
                self._scheduler_sees(name, trusted=True)

        def _vtpm_server(self, extra_specs=VTPM, expected_state="ACTIVE",
                         az=None):
            flavor = self._create_flavor(extra_spec=dict(extra_specs))
            return self._create_server(flavor_id=flavor, az=az,
                                       expected_state=expected_state)

        def _allow_owner_to_move(self, copy_disks=True):
            # As Nova's own vTPM tests do: cold migration as the owner
            # (an admin's token would not own the secret in Barbican),
            # and no disk copy (the fake libvirt has no disks).
            self.policy.set_rules({
                "os_compute_api:os-migrate-server:migrate":
                    "rule:admin_or_owner",
                "os_compute_api:os-migrate-server:migrate:host":
                    "rule:admin_or_owner"}, overwrite=False)
            if copy_disks:
                self.useFixture(fixtures.MockPatch(MIGRATE_DISK,
                                                   return_value="{}"))

        def _host_of(self, server):
            return self.admin_api.get_server(server["id"])[
                "OS-EXT-SRV-ATTR:host"]

        def _migrations_of(self, server, status):
            return [m for m in self.admin_api.api_get(
                "/os-migrations").body["migrations"]
                if m["instance_uuid"] == server["id"]
                and status in (None, m["status"])]

        def _secret_of(self, server):
            ctx = nova_context.get_admin_context()
            instance = objects.Instance.get_by_uuid(ctx, server["id"])
            return instance.system_metadata.get("vtpm_secret_uuid")

        def _refused_before_the_move(self, server, action):
            """The move failed in the scheduler: the migration record is
            in error, the server ACTIVE where it was, its action event
            names NoValidHost, and nothing was asked of the key manager."""
            asked = len(self.released_to)
            migration = self._wait_for_migration_status(server, ["error"])
            self.assertEqual("compute-00", migration["source_compute"])
            with nova_utils.temporary_mutation(self.admin_api,
                                               microversion="2.84"):
                event = self._wait_for_instance_action_event(
                    server, action, "conductor_migrate_server", "Error")
            self.assertIn(NO_VALID_HOST, event["traceback"])
            server = self._wait_for_state_change(server, "ACTIVE")
            self.assertEqual("compute-00", server["OS-EXT-SRV-ATTR:host"])
            self.assertEqual(asked, len(self.released_to))
            return server

    @mock.patch.object(
        fakelibvirt.virConnect, "_domain_capability_tpm",
        new=fakelibvirt.virConnect._domain_capability_tpm_supported)
    class TestVTPMWithTrustedPools(TrustedPoolsNova,
                                   test_vtpm.VTPMServersTest):
        """Nova's own vTPM test class (its set-up, flavors and fake
        libvirt) with the key manager switched to trusted_pools; compute
        hosts named as enrolled: compute-00 and compute-02 trusted,
        compute-01 untrusted. The upstream cases run in
        ``TestUpstreamVTPMCases``."""

        for _name in dir(test_vtpm.VTPMServersTest):
            if _name.startswith("test"):
                locals()[_name] = None
        del _name

        def test_vtpm_server_on_trusted_host_gets_its_key(self):
            self._as_host("compute-00")
            server = self._vtpm_server()
            self.assertIsInstance(crypto._get_key_manager(),
                                  tp_backend.TrustedPoolsKeyManager)
            secret_id = self._secret_of(server)
            stored = self.secrets.get_secret(secret_id)
            self.assertEqual(server["id"], stored.owner)
            self.assertEqual("passphrase", stored.secret_type)
            # Hard reboot: the key is released to the host again, sealed
            # to its TPM, and the server comes back.
            server = self._reboot_server(server, hard=True)
            self.assertEqual("ACTIVE", server["status"])
            # The host turns untrusted: the next hard reboot is refused
            # the key, with the reason.
            self._make_untrusted("compute-00")
            server = self._reboot_server(server, hard=True,
                                         expected_state="ERROR")
            # Nova names the error in the fault, and the details (shown
            # to admins) carry its message.
            fault = server["fault"]
            self.assertEqual("KeyWithheld", fault["message"])
            self.assertIn("KeyWithheld: compute-00 is untrusted: ",
                          fault["details"])
            self.assertIn("the vTPM key is withheld", fault["details"])
            # Deleting the server deletes its secret.
            self._delete_server(server)
            self.assertRaises(Exception, self.secrets.get_secret,
                              secret_id)

        def test_vtpm_server_on_untrusted_host_fails_with_reason(self):
            self._as_host("compute-01")
            # Scheduled: the filter finds no trusted host.
            server = self._vtpm_server(expected_state="ERROR")
            self.assertIn("No valid host", server["fault"]["message"])
            self.assertEqual([], self.released_to)
            # Forced onto the host by an admin (the filter is bypassed):
            # the key service refuses the key, with the reason. Nova keeps
            # the first 255 characters of it.
            server = self._vtpm_server(expected_state="ERROR",
                                       az="nova:compute-01")
            message = server["fault"]["message"]
            self.assertTrue(message.startswith(
                "compute-01 is untrusted: OS boot: PCR 4 event 27 "), message)
            self.assertIn("is not allowed by policy 'golden'", message)
            self.assertIsNone(self._secret_of(server))

        def test_cold_migration_to_trusted_host(self):
            self._allow_owner_to_move()
            self._as_host("compute-00")
            server = self._vtpm_server()
            self._as_host("compute-02")
            server = self._migrate_server(server)
            self.assertEqual("compute-02",
                             server["OS-EXT-SRV-ATTR:host"])
            self.assertEqual(["compute-00", "compute-02"],
                             self.released_to[-2:])
            self._confirm_resize(server)
            server = self._reboot_server(server, hard=True)
            self.assertEqual("compute-02", self.released_to[-1])
            self._delete_server(server)

        def test_cold_migration_to_untrusted_host_is_refused_first(self):
            """Refused by the scheduler before the source stops: the server
            stays ACTIVE on its source, and its key is still released
            there."""
            self._allow_owner_to_move()
            self._as_host("compute-00")
            server = self._vtpm_server()
            self._as_host("compute-01")
            # Any host: only compute-01 is left, and it is untrusted.
            self.api.post_server_action(server["id"], {"migrate": None})
            server = self._refused_before_the_move(server, "migrate")
            # The untrusted host named as the target (microversion 2.56):
            # Nova still runs the filters, and refuses the same way.
            with nova_utils.temporary_mutation(self.api,
                                               microversion="2.56"):
                self.api.post_server_action(
                    server["id"], {"migrate": {"host": "compute-01"}})
            deadline = time.monotonic() + 30
            while len(self._migrations_of(server, "error")) < 2:
                self.assertLess(time.monotonic(), deadline,
                                self._migrations_of(server, None))
                time.sleep(0.2)
            server = self._wait_for_state_change(server, "ACTIVE")
            self.assertEqual("compute-00", server["OS-EXT-SRV-ATTR:host"])
            # The server is usable on its source: a hard reboot gets the
            # key there.
            server = self._reboot_server(server, hard=True)
            self.assertEqual("compute-00", self.released_to[-1])
            self.assertNotIn("compute-01", self.released_to)
            self._delete_server(server)

        def test_destination_distrusted_during_the_move(self):
            """The one case the scheduler cannot catch: the destination
            turns untrusted after it was chosen, while the source copies
            the disks. The key is withheld on the destination (ERROR
            there); the admin recovers by resetting the state and cold
            migrating to a trusted host, where the key is released."""
            self._allow_owner_to_move(copy_disks=False)
            self._as_host("compute-00")
            server = self._vtpm_server()
            self._as_host("compute-02")

            def distrust_destination(*args, **kwargs):
                self._make_untrusted("compute-02")
                return "{}"
            with mock.patch(MIGRATE_DISK, side_effect=distrust_destination):
                self.api.post_server_action(server["id"], {"migrate": None})
                server = self._wait_for_state_change(server, "ERROR")
            self.useFixture(fixtures.MockPatch(MIGRATE_DISK,
                                               return_value="{}"))
            self.assertEqual("compute-02", server["OS-EXT-SRV-ATTR:host"])
            with nova_utils.temporary_mutation(self.admin_api,
                                               microversion="2.84"):
                event = self._wait_for_instance_action_event(
                    server, "migrate", "compute_finish_resize", "Error")
            self.assertEqual("KeyWithheld", event["details"])
            self.assertIn("KeyWithheld: compute-02 is untrusted: ",
                          server["fault"]["details"])
            # Recovery: back to ACTIVE in Nova's records, then a cold
            # migration, which the filter can only send to compute-00.
            self.admin_api.post_server_action(
                server["id"], {"os-resetState": {"state": "active"}})
            server = self._migrate_server(server)
            self.assertEqual("compute-00", server["OS-EXT-SRV-ATTR:host"])
            self.assertEqual("compute-00", self.released_to[-1])
            self._confirm_resize(server)
            self._delete_server(server)

        def test_resize_revert_and_confirm_on_trusted_hosts(self):
            self._allow_owner_to_move()
            self._as_host("compute-00")
            server = self._vtpm_server()
            secret_id = self._secret_of(server)
            self._as_host("compute-02")
            bigger = self._create_flavor(memory_mb=4096,
                                         extra_spec=dict(VTPM_TIS))
            # Resize, then revert: the key goes to compute-02, then to
            # compute-00 again when the server is restored there.
            server = self._resize_server(server, bigger)
            self.assertEqual("compute-02", server["OS-EXT-SRV-ATTR:host"])
            self.assertEqual("compute-02", self.released_to[-1])
            server = self._revert_resize(server)
            self.assertEqual("compute-00", server["OS-EXT-SRV-ATTR:host"])
            self.assertEqual("compute-00", self.released_to[-1])
            # Resize again, and confirm: the server lives on compute-02,
            # with the same secret.
            server = self._resize_server(server, bigger)
            server = self._confirm_resize(server)
            self.assertEqual("compute-02", server["OS-EXT-SRV-ATTR:host"])
            self.assertEqual(secret_id, self._secret_of(server))
            self.assertIsNotNone(self.secrets.get_secret(secret_id))
            self._delete_server(server)

        def test_resize_to_untrusted_host_is_refused_first(self):
            self._allow_owner_to_move()
            self._as_host("compute-00")
            server = self._vtpm_server()
            self._as_host("compute-01")
            bigger = self._create_flavor(memory_mb=4096,
                                         extra_spec=dict(VTPM_TIS))
            self.api.post_server_action(
                server["id"], {"resize": {"flavorRef": bigger}})
            server = self._refused_before_the_move(server, "resize")
            instance = objects.Instance.get_by_uuid(
                nova_context.get_admin_context(), server["id"])
            self.assertEqual(VTPM, {k: v for k, v in
                                    instance.flavor.extra_specs.items()
                                    if k.startswith("hw:tpm")})
            server = self._reboot_server(server, hard=True)
            self.assertEqual("compute-00", self.released_to[-1])
            self._delete_server(server)

        @mock.patch("nova.compute.api.MIN_COMPUTE_VTPM_LIVE_MIGRATION", 5)
        @mock.patch("nova.objects.service.Service.get_minimum_version",
                    new=mock.Mock(return_value=5))
        def test_live_migration_in_host_mode(self):
            """Nova live-migrates vTPM servers only in the 'host' secret
            mode, where libvirt copies the secret host to host and the key
            manager is not asked: the filter is the only check (an
            untrusted destination is refused before the move), and a host
            that turns untrusted keeps running the server it holds."""
            host_mode = dict(VTPM, **{"hw:tpm_secret_security": "host"})
            self._as_host("compute-00")
            self.server = self._vtpm_server(host_mode)
            self.src = self.computes["compute-00"]
            self._as_host("compute-01")
            self._live_migrate(self.server, migration_expected_state="error",
                               server_expected_state="ACTIVE",
                               api=self.admin_api)
            with nova_utils.temporary_mutation(self.admin_api,
                                               microversion="2.84"):
                event = self._wait_for_instance_action_event(
                    self.server, "live-migration",
                    "conductor_live_migrate_instance", "Error")
            self.assertIn(NO_VALID_HOST, event["traceback"])
            self.assertEqual("compute-00", self._host_of(self.server))
            self._as_host("compute-02")
            self.dest = self.computes["compute-02"]
            asked = len(self.released_to)
            self._live_migrate(self.server, api=self.admin_api)
            self.assertEqual("compute-02", self._host_of(self.server))
            self.assertEqual(asked, len(self.released_to))
            # 'host' mode: the secret stays defined in libvirt on the host,
            # so a hard reboot after distrust does not ask for the key.
            self._make_untrusted("compute-02")
            server = self._reboot_server(self.server, hard=True)
            self.assertEqual("ACTIVE", server["status"])
            self.assertEqual(asked, len(self.released_to))
            self._delete_server(server)

        def _domains(self, name):
            return {d.UUIDString() for d in self.computes[
                name].driver._host.list_instance_domains()}

        def test_guests_resumed_on_host_boot_only_while_trusted(self):
            """[DEFAULT] resume_guests_state_on_host_boot: nova-compute
            starts (the host rebooted, its hypervisor empty) and defines
            its running guests again, with its own admin context."""
            self.flags(resume_guests_state_on_host_boot=True)
            deployment_mode = dict(
                VTPM, **{"hw:tpm_secret_security": "deployment"})
            self._as_host("compute-00")
            deployment = self._vtpm_server(deployment_mode)
            user = self._vtpm_server()
            self.restart_compute_service("compute-00",
                                         keep_hypervisor_state=False)
            # 'deployment' mode: Nova asks with its service user, and the
            # key is released to the host, trusted.
            self.assertEqual({deployment["id"]}, self._domains("compute-00"))
            self.assertEqual("compute-00", self.released_to[-1])
            self.assertEqual("ACTIVE", self.admin_api.get_server(
                deployment["id"])["status"])
            # 'user' mode: Nova's admin context carries no user token, so
            # no key manager that keys secrets to their users can answer
            # (Barbican neither): the guest is not resumed. (Nova sets
            # the error state and logs why; it records no fault here.)
            self._wait_for_server_parameter(
                user, {"OS-EXT-STS:vm_state": "error"}, api=self.admin_api)
            self.assertNotIn(user["id"], self._domains("compute-00"))
            # Another host comes back from a compromised boot: the key is
            # withheld, its guest is not resumed.
            self._as_host("compute-02")
            self.computes["compute-00"].stop()
            elsewhere = self._vtpm_server(deployment_mode)
            self.assertEqual("compute-02", self._host_of(elsewhere))
            self._make_untrusted("compute-02")
            self.restart_compute_service("compute-02",
                                         keep_hypervisor_state=False)
            self.assertEqual(set(), self._domains("compute-02"))
            self._wait_for_server_parameter(
                elsewhere, {"OS-EXT-STS:vm_state": "error"},
                api=self.admin_api)
            self.assertEqual("compute-02", self.released_to[-1])
            # Nova logs why ("Failed to resume instance" and the error).
            self.assertIn("KeyWithheld: compute-02 is untrusted: ",
                          self.stdlog.logger.output)

        def test_operations_nova_refuses_for_vtpm_servers(self):
            """Nova 34 refuses these for every vTPM server (evacuate,
            rebuild, rescue, shelve) and live migration for the 'user'
            mode, before any host or key is involved."""
            self._as_host("compute-00")
            self._as_host("compute-02")
            server = self._vtpm_server()
            host = self._host_of(server)
            asked = len(self.released_to)
            refused = [
                (self.admin_api, {"evacuate": {}}, "evacuate"),
                (self.api, {"rebuild": {"imageRef": server["image"]["id"]}},
                 "rebuild"),
                (self.api, {"rescue": None}, "rescue"),
                (self.api, {"shelve": None}, "shelve"),
                (self.admin_api, {"os-migrateLive": {
                    "host": None, "block_migration": "auto"}},
                 "live-migration"),
            ]
            for api, body, operation in refused:
                error = self.assertRaises(
                    nova_client.OpenStackApiException,
                    api.post_server_action, server["id"], body)
                # NotSupported: Nova's API answers 400 Bad Request.
                self.assertEqual(400, error.response.status_code, operation)
                self.assertIn("'%s' not supported for vTPM-enabled "
                              "instance" % operation, str(error))
            server = self.admin_api.get_server(server["id"])
            self.assertEqual(("ACTIVE", host),
                             (server["status"],
                              server["OS-EXT-SRV-ATTR:host"]))
            self.assertEqual(asked, len(self.released_to))
            self._delete_server(server)

    class SecretsView:
        """What Nova's upstream vTPM tests read of their fake key manager
        (``_passphrases``, ``_contexts``), answered from trusted_pools:
        the secrets this test stored through the backend (with the context
        Nova passed) that still exist in the key service's database."""

        def __init__(self, secrets):
            self._db = secrets
            self._contexts = {}

        def record(self, secret_id, context):
            self._contexts[secret_id] = context

        @property
        def _passphrases(self):
            from trusted_pools import exception as tp_exception
            held = {}
            for secret_id in self._contexts:
                try:
                    held[secret_id] = self._db.get_secret(secret_id)
                except tp_exception.NotFound:
                    pass
            return held

    @mock.patch.object(
        fakelibvirt.virConnect, "_domain_capability_tpm",
        new=fakelibvirt.virConnect._domain_capability_tpm_supported)
    class TestUpstreamVTPMCases(TrustedPoolsNova, test_vtpm.VTPMServersTest):
        """Nova 34's own vTPM functional cases (``VTPMServersTest``, every
        case, unchanged) with the key manager switched to trusted_pools.

        Their compute hosts have Nova's names ('compute1', 'src', 'dest',
        'test_compute0', ...): each is run as one of the pool's trusted
        hosts (compute-00, then compute-02). The filter is not enabled
        here: these cases are about Nova and its key manager, and the
        scheduler does not know Nova's names. Their service user context
        ('deployment' mode) carries a keystoneauth plugin with the
        'service' persona's token, as ``[service_user]`` gives one.
        Cases that fail, and why, are listed in ``EXPECTED_FAILURES``.
        """

        POOL_HOSTS = ("compute-00", "compute-02")

        if os.environ.get("TRUSTED_POOLS_NOVA_UPSTREAM") != "all":
            for _name in dir(test_vtpm.VTPMServersTest):
                if _name.startswith("test") and _name not in UPSTREAM_CASES:
                    locals()[_name] = None
            del _name

        # Nova's expectation for these three is Barbican's: a secret is
        # readable by the user who stored it only, so an admin's hard
        # reboot or cold migration of a user's 'user'-mode server fails.
        # trusted_pools lets the owning project's members, admins and the
        # service role ask (trusted_pools:secret:release), and still
        # releases only to a trusted host, wrapped to its TPM: the
        # admin's operation works.

        def _hard_reboot_as_admin(self, secret_security):
            self.start_compute()
            server = self._create_server_with_vtpm(
                secret_security=secret_security)
            server = self._reboot_server(server, hard=True,
                                         api=self.admin_api)
            self.assertEqual("ACTIVE", server["status"])
            self.assertInstanceHasSecret(server)

        if os.environ.get("TRUSTED_POOLS_NOVA_UPSTREAM") == "all":
            def test_hard_reboot_server_as_admin_1_None(self):
                self._hard_reboot_as_admin(None)

        def test_hard_reboot_server_as_admin_2_user(self):
            self._hard_reboot_as_admin("user")

        def test_migrate_server_as_admin(self):
            for host in ("test_compute0", "test_compute1"):
                self.start_compute(host)
            server = self._create_server_with_vtpm()
            self.assertInstanceHasSecret(server)
            with mock.patch(MIGRATE_DISK, return_value="{}"):
                server = self._migrate_server(server, api=self.admin_api)
            self.assertEqual("VERIFY_RESIZE", server["status"])
            self.assertEqual(self._pool_name(
                server["OS-EXT-SRV-ATTR:host"]), self.released_to[-1])
            self.assertInstanceHasSecret(server)

        def _enable_trust_filter(self):
            pass

        def setUp(self):
            super().setUp()
            CONF.register_group(tp_backend.group)
            CONF.register_opts(tp_backend.opts, group=tp_backend.group)
            self.flags(api_endpoint=POOL["endpoint"],
                       group="trusted_pools_key_manager")
            self._names = {}
            self.key_mgr = SecretsView(self.secrets)
            store = tp_backend.TrustedPoolsKeyManager.store
            view = self.key_mgr

            def recording_store(manager, context, managed_object, **kw):
                secret_id = store(manager, context, managed_object, **kw)
                view.record(secret_id, context)
                return secret_id
            self.useFixture(fixtures.MonkeyPatch(
                "trusted_pools.keymanager.backend.TrustedPoolsKeyManager."
                "store", recording_store))

        def _pool_name(self, nova_host):
            if nova_host not in self._names:
                self._names[nova_host] = self.POOL_HOSTS[
                    len(self._names) % len(self.POOL_HOSTS)]
            return self._names[nova_host]
