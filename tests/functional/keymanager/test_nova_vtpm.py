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
             "TestVTPMWithTrustedPools"],
            env=dict(os.environ, TRUSTED_POOLS_NOVA_CHILD="1",
                     TRUSTED_POOLS_KEYPOOL_JSON=str(tmp_path / "pool.json")),
            capture_output=True, text=True, timeout=300, cwd=ROOT)
        output = child.stdout + child.stderr
        assert child.returncode == 0, output[-6000:]
        assert "Ran 4 tests" in output and "\nOK" in output, \
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
        tmp.write_text(json.dumps({
            "endpoint": "http://127.0.0.1:%d" % server.server_port,
            "db": str(tmp_path / "pool.sqlite"),
            "hosts": {h.name: h.tpm.tcti for h in pool.hosts}}))
        os.replace(tmp, out / "pool.json")
        deadline = time.monotonic() + 600
        while not (out / "stop").exists() and time.monotonic() < deadline:
            # Keep compute-00's verdict fresh while Nova works.
            time.sleep(0.5)
    finally:
        server.shutdown() if thread.is_alive() else None
        server.server_close()
        pool.close()


if _CHILD:
    from unittest import mock

    import fixtures

    from tests import nova_harness

    nova_harness.ensure_api_paste()

    from nova import context as nova_context  # noqa: E402
    from nova import crypto  # noqa: E402
    from nova import objects  # noqa: E402
    from nova import vtpm as nova_vtpm  # noqa: E402
    from nova.tests.fixtures import libvirt as fakelibvirt  # noqa: E402
    from nova.tests.functional.libvirt import test_vtpm  # noqa: E402

    from trusted_pools.db import api as tp_db  # noqa: E402
    from trusted_pools.keymanager import backend as tp_backend  # noqa

    POOL = json.loads(pathlib.Path(
        os.environ["TRUSTED_POOLS_KEYPOOL_JSON"]).read_text())

    @mock.patch.object(
        fakelibvirt.virConnect, "_domain_capability_tpm",
        new=fakelibvirt.virConnect._domain_capability_tpm_supported)
    class TestVTPMWithTrustedPools(test_vtpm.VTPMServersTest):
        """Nova's own vTPM test class (its set-up, flavors and fake
        libvirt), with the key manager switched to trusted_pools; one
        compute host per test, named as enrolled. The upstream cases
        assert the fake key manager's internals and are not run here."""

        for _name in dir(test_vtpm.VTPMServersTest):
            if _name.startswith("test"):
                locals()[_name] = None
        del _name

        def setUp(self):
            # A failed build is not rescheduled: its fault is the reason.
            self.flags(max_attempts=1, group="scheduler")
            super().setUp()
            self.flags(backend="trusted_pools", group="key_manager")
            self.useFixture(fixtures.MonkeyPatch("nova.crypto._KEYMGR",
                                                 None))
            self.key_mgr = None
            # Nova's harness stubs keystonemiddleware; give its request
            # contexts the Keystone token a real deployment would have.
            from nova.api import auth as nova_auth
            create = nova_auth.NovaKeystoneContext._create_context

            def with_token(env, **kwargs):
                kwargs["auth_token"] = TOKEN
                return create(env, **kwargs)
            self.useFixture(fixtures.MonkeyPatch(
                "nova.api.auth.NovaKeystoneContext._create_context",
                with_token))
            self.secrets = tp_db.Connection(tp_db.make_context_manager(
                "sqlite:///%s" % POOL["db"]))
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
            original = nova_vtpm.get_or_create_secret

            def as_instance_host(context, instance):
                manager = crypto._get_key_manager()
                manager.host = instance.host
                manager._unwrapper = tp_backend.tpm_unwrapper(
                    POOL["hosts"][instance.host],
                    int(manager._settings.binding_key_handle, 16))
                return original(context, instance)
            self.useFixture(fixtures.MonkeyPatch(
                "nova.vtpm.get_or_create_secret", as_instance_host))

        def _make_untrusted(self, name):
            """What a compromised boot does: PCR 4 moves past what the
            host's event log says; the operator attests it now."""
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

        def _as_host(self, name):
            self.flags(api_endpoint=POOL["endpoint"], host=name,
                       tcti=POOL["hosts"][name],
                       group="trusted_pools_key_manager")
            self.start_compute(hostname=name)

        def _allow_owner_to_migrate(self):
            # As Nova's own vTPM tests do: cold migration as the owner
            # (an admin's token would not own the secret).
            self.policy.set_rules({
                "os_compute_api:os-migrate-server:migrate":
                    "rule:admin_or_owner"}, overwrite=False)
            self.useFixture(fixtures.MockPatch(
                "nova.virt.libvirt.driver.LibvirtDriver."
                "migrate_disk_and_power_off", return_value="{}"))

        def test_cold_migration_to_trusted_host(self):
            self._allow_owner_to_migrate()
            self._as_host("compute-00")
            server = self._create_server_with_vtpm(expected_state="ACTIVE")
            self._as_host("compute-02")
            server = self._migrate_server(server)
            self.assertEqual("compute-02",
                             server["OS-EXT-SRV-ATTR:host"])
            self._confirm_resize(server)
            self._delete_server(server)

        def test_cold_migration_to_untrusted_host_fails(self):
            self._allow_owner_to_migrate()
            self._as_host("compute-00")
            server = self._create_server_with_vtpm(expected_state="ACTIVE")
            self._as_host("compute-01")
            self.api.post_server_action(server["id"], {"migrate": None})
            server = self._wait_for_state_change(server, "ERROR")
            fault = server["fault"]
            self.assertIn("KeyWithheld: compute-01 is untrusted: ",
                          fault["details"])

        def test_vtpm_server_on_trusted_host_gets_its_key(self):
            self._as_host("compute-00")
            server = self._create_server_with_vtpm(expected_state="ACTIVE")
            self.assertIsInstance(crypto._get_key_manager(),
                                  tp_backend.TrustedPoolsKeyManager)
            ctx = nova_context.get_admin_context()
            instance = objects.Instance.get_by_uuid(ctx, server["id"])
            secret_id = instance.system_metadata["vtpm_secret_uuid"]
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
            server = self._create_server_with_vtpm(expected_state="ERROR")
            # Nova keeps the first 255 characters of the reason.
            message = server["fault"]["message"]
            self.assertTrue(message.startswith(
                "compute-01 is untrusted: OS boot: PCR 4 event 27 "), message)
            self.assertIn("is not allowed by policy 'golden'", message)
            ctx = nova_context.get_admin_context()
            instance = objects.Instance.get_by_uuid(ctx, server["id"])
            self.assertNotIn("vtpm_secret_uuid", instance.system_metadata)
