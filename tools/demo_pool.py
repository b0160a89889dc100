"""The demo's pool (step 4 on): four swtpm hosts, one tampered, their
agents, a conductor on RabbitMQ, SQLite and trusted-pools-api; then VMs
placed through Nova's filter handler, vTPMs created for them by the
agents' vTPM driver, one deep-attested, a vTPM key released and refused,
a vTPM migrated and a migration refused; last, the table of it all.

Every verdict, quote, key release and migration here is the product's
own, over the real bus; the test-side harnesses (tests/pool_harness.py,
tests/migration_harness.py) only build the machines (swtpm TPMs booted
from real event logs) and wire the services in one process.
"""

from __future__ import annotations

import base64
import os
import pathlib
import secrets
import shutil
import subprocess
import tempfile
import time
import uuid as uuid_lib
from dataclasses import dataclass
from typing import Any, Callable

from demo_support import HttpServer, Progress, Story

POOL_CONF = """[DEFAULT]
transport_url = rabbit://guest:guest@127.0.0.1:5672/%(vhost)s
# The services' logs (the story is on the terminal).
log_file = %(workdir)s/services.log
[trusted_pools]
state_path = %(workdir)s
[database]
connection = sqlite:///%(workdir)s/trusted_pools.sqlite
[conductor]
attestation_interval = 2
[oslo_messaging_rabbit]
# An idle RPC listener notices a stop only between two waits on its
# connection, each up to heartbeat_timeout_threshold / heartbeat_rate / 2
# seconds (and at most 5 s): 60 / 3 / 2 by default. 60 / 60 / 2 = 0.5 s,
# so the pool stops in about a second (a heartbeat frame each second on
# an idle connection is nothing for a local broker).
heartbeat_rate = 60
"""

#: (VM, flavor extra specs). Those with hw:tpm_version get a vTPM, as
#: Nova gives one to such a flavor.
VMS = (
    ("vm-secure-1", {"trust:trusted_host": "required",
                     "hw:tpm_version": "2.0"}),
    ("vm-secure-2", {"trust:min_level": "4", "hw:tpm_version": "2.0"}),
    ("vm-plain", {}),
)

#: Options the migration harness also sets: a vTPM migration step that
#: waits on a stopped agent gives up in seconds, not minutes.
MIGRATION_OVERRIDES = {
    ("conductor", "agent_rpc_timeout"): 3,
    ("vtpm_migration", "resume_interval"): 1,
    ("vtpm_migration", "step_timeout"): 30,
}


@dataclass
class ApiAccess:
    """trusted-pools-api's pipeline, and the tokens the demo holds."""

    client: Any  # tests.api_fixtures.Client
    member_token: str
    dashboard: str
    url: str = ""
    reader_token: str = ""
    secret_id: str = ""
    secret_value: bytes = b""


def banner(text: str) -> None:
    print("\n=== %s" % text, flush=True)


def run_pool(workdir: pathlib.Path, story: Story, hold: bool = False
             ) -> None:
    """Build the pool, tell the story into ``story``, take it all down."""
    from tests import swtpm_pool
    from tests.rabbitmq import broker_reachable, rabbitmqctl
    from trusted_pools.common import config, rpc

    if not broker_reachable():
        story.expect(False, "RabbitMQ is not listening on 127.0.0.1:5672: "
                     "start it with 'rabbitmq-server -detached' (or run "
                     "tools/services.sh, which installs and starts it)")
        return

    # A virtual host of its own keeps the demo's queues apart from any
    # other deployment or test run on the same broker.
    vhost = "trusted-pools-demo-%s" % os.urandom(4).hex()
    with Progress("a RabbitMQ virtual host of the demo's own "
                  "(rabbitmqctl)"):
        if not (rabbitmqctl("add_vhost", vhost) and rabbitmqctl(
                "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")):
            print("rabbitmqctl could not make one (not root?): the demo "
                  "uses the default virtual host")
            vhost = ""
    conf_path = workdir / "trusted-pools.conf"
    conf_path.write_text(POOL_CONF % {"workdir": workdir, "vhost": vhost})
    conf = config.parse_args(["--config-file", str(conf_path)],
                             "trusted-pools-demo")
    rpc.init(conf)
    ca = swtpm_pool.LocalCA.create(workdir / "ek-ca")
    # vTPM sockets need a short directory (UNIX socket paths).
    run_dir = pathlib.Path(tempfile.mkdtemp(prefix="tpd", dir="/tmp"))
    stops: list[tuple[str, Callable[[], Any]]] = []
    phases: dict[str, float] = {}
    try:
        with swtpm_pool.SwtpmPool(ca, workdir / "tpms") as tpms:
            try:
                _story(workdir, conf, tpms.start, ca, run_dir, story, stops,
                       hold)
            except Exception as error:  # noqa: BLE001 - told, then failed
                story.expect(False, "the demo stopped: %s: %s"
                             % (type(error).__name__, error))
            finally:
                phases["started"] = time.monotonic()
                _stop_all(stops, phases, story)
                # Any outcome not as expected (a step that raised, or one
                # that answered wrongly, or a stop that failed): the
                # services' log goes with the work directory, so its end
                # is shown now.
                if story.unexpected:
                    _log_tail(workdir / "services.log")
                began = time.monotonic()
        phases["host TPMs"] = time.monotonic() - began
    finally:
        began = time.monotonic()
        rpc.cleanup()
        phases["bus connections"] = time.monotonic() - began
        if vhost:
            # rabbitmqctl starts an Erlang VM (0.5-1.7 s on a busy
            # machine): the virtual host is deleted by a detached
            # rabbitmqctl that outlives the demo, so the shutdown does not
            # wait for it. Every connection to it is closed by now.
            began = time.monotonic()
            _delete_vhost_detached(vhost)
            phases["virtual host (deleted in the background)"] = (
                time.monotonic() - began)
        shutil.rmtree(run_dir, ignore_errors=True)
        if "started" in phases:
            started = phases.pop("started")
            print("shut down in %.1f s (%s)" % (
                time.monotonic() - started, ", ".join(
                    "%s %.1f s" % kv for kv in phases.items())), flush=True)


def _delete_vhost_detached(vhost: str) -> None:
    """``rabbitmqctl delete_vhost`` in a session of its own, not waited
    for (nothing is left but the virtual host if it fails: the next run
    uses another name)."""
    try:
        subprocess.Popen(["rabbitmqctl", "delete_vhost", vhost],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    except OSError as error:
        print("could not delete the virtual host %s: %s" % (vhost, error))


def _stop_all(stops: list[tuple[str, Callable[[], Any]]],
              phases: dict[str, float], story: Story) -> None:
    """Last started, first stopped; each stop timed into ``phases`` (a
    stop that fails is an unexpected outcome, and the others still
    run)."""
    for what, stop in reversed(stops):
        began = time.monotonic()
        try:
            stop()
        except Exception as error:  # noqa: BLE001 - said, not hidden
            story.expect(False, "stopping %s failed: %s: %s"
                         % (what, type(error).__name__, error))
        phases[what] = time.monotonic() - began


def _log_tail(path: pathlib.Path, lines: int = 40) -> None:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return
    print("--- last lines of the services' log (%s)" % path)
    print("\n".join(text))


def _story(workdir: pathlib.Path, conf: Any, start_tpms: Any, ca: Any,
           run_dir: pathlib.Path, story: Story,
           stops: list[tuple[str, Callable[[], Any]]], hold: bool) -> None:
    from tests import pool_harness
    from tests.migration_harness import MigrationPool

    pool = pool_harness.TrustedPool(workdir, conf, start_tpms, ca,
                                    conf.database.connection, interval=2)
    pool.configure()
    for (group, name), value in MIGRATION_OVERRIDES.items():
        conf.set_override(name, value, group=group)
    stops.append(("agents and conductor", pool.close))
    with Progress("4 swtpm host TPMs manufactured (EK certificates from "
                  "the local CA) and booted from a real event log"):
        hosts = pool.add_hosts(4, tamper=[3])
    print("hosts: %s (%s booted a boot loader nobody approved)"
          % (", ".join(h.name for h in hosts), hosts[3].name))
    pool.start_agents()
    pool.start_conductor("conductor-1")

    api = _serve_api(conf, pool, stops)

    with Progress("enrolling 4 hosts over RabbitMQ (EK chain, AK bound "
                  "by credential activation, binding key certified)"):
        pool.enroll_all()
    print("enrolled: EK certificates chain to the local CA; each EK "
          "approved by its hash (the demo reads it from the swtpm it made, "
          "as an operator would from the inventory); AKs bound by "
          "credential activation")
    operator = pool.api()
    captured = operator.capture_policy({}, hosts[0].name)
    for kind, body in sorted(captured.items()):
        operator.create_policy({}, "golden-" + kind, kind, body)
        operator.assign_policy({}, "default", "golden-" + kind)
    print("golden measurements captured from %s: %s" % (
        hosts[0].name, ", ".join(sorted(captured))))
    names = [h.name for h in hosts]
    with Progress("the conductor's next attestation round under the "
                  "golden policies"):
        latest = pool.wait_for(lambda v: all(
            n in v and len(v[n].policy_versions) == len(captured)
            for n in names), timeout=60)
    _print_verdicts(names, latest, story)

    banner("5. Placing VMs through Nova's HostFilterHandler with "
           "TrustedHostFilter")
    trusted = set(names[:3])
    placed = place_vms(pool, names, trusted, story)

    mp = MigrationPool(pool, run_dir, str(ca.setup_conf), workdir)
    stops.append(("vTPMs", lambda: _stop_vtpms(mp)))
    banner("6. vTPMs for the VMs whose flavor asks for one "
           "(hw:tpm_version), by the agents' swtpm vTPM driver")
    for host in hosts:
        mp.attach_vtpm(host, provision=True)
    vtpms = create_vtpms(mp, placed, story)

    banner("7. Deep attestation of one instance")
    deep = deep_attest(mp, "vm-secure-1", vtpms["vm-secure-1"], story)

    banner("8. A vTPM key through Nova's castellan backend "
           "(trusted_pools), released only to trusted hosts")
    keys = release_keys(api, mp, vtpms["vm-secure-1"], hosts[3], story)

    banner("9. vTPM migrations")
    moved = migrate(mp, api, vtpms, names, story, keys)

    banner("10. The dashboard")
    check_dashboard(api, {n: ("untrusted" if n == names[3] else "trusted")
                          for n in names}, story)

    # The hosts as the pool judges them at the end of the story.
    final = pool.latest()
    for name in names:
        story.hosts.append((name, final[name].status, final[name].level,
                            "tampered boot loader" if name == names[3]
                            else "-"))

    for vm, (uuid, host) in vtpms.items():
        key = keys.get(vm, ("-", "-"))
        now_on = moved.get(vm, host)
        story.vtpms.append((vm, now_on, _vtpm_state(mp, now_on, uuid),
                            deep.get(vm, "-"), key[0], key[1]))
    if hold:
        print("\nThe pool stays up: dashboard at %s -- press Enter to stop"
              % api.dashboard, flush=True)
        try:
            input()
        except EOFError:
            pass


def _serve_api(conf: Any, pool: Any,
               stops: list[tuple[str, Callable[[], Any]]]) -> ApiAccess:
    """trusted-pools-api on this pool, over HTTP on 127.0.0.1, behind
    keystonemiddleware. There is no Keystone here: tokens come from
    keystonemiddleware's AuthTokenFixture (as in the API tests,
    tests/api_fixtures.py): the middleware still checks every request's
    token and roles; only the fetch from Keystone is replaced. The token
    ids are random, so only whoever sees this output can use them."""
    from keystonemiddleware import fixture as ksm_fixture

    from tests.api_fixtures import (Client, _project_token, _system_token,
                                    make_api_conf)
    from trusted_pools.api import app as api_app

    tokens = ksm_fixture.AuthTokenFixture()
    tokens.setUp()
    stops.append(("token fixture", tokens.cleanUp))
    reader = "reader-" + secrets.token_urlsafe(12)
    member = "member-" + secrets.token_urlsafe(12)
    tokens.add_token(_system_token("auditor", ["reader"]), token_id=reader)
    tokens.add_token(_project_token("alice", "tenant", ["member", "reader"]),
                     token_id=member)
    api_conf = make_api_conf()
    api_conf.set_override("heartbeat_timeout",
                          conf.conductor.heartbeat_timeout,
                          group="conductor")
    application = api_app.build(api_conf, db=pool.db)
    server = HttpServer(application).start()
    stops.append(("trusted-pools-api", server.stop))
    print("dashboard (while the demo runs): %s/dashboard/#token=%s"
          % (server.url, reader))
    print("  log in with token %s: a system-scoped reader, accepted by "
          "keystonemiddleware's AuthTokenFixture in place of a Keystone "
          "(none runs here; --hold keeps the pool up at the end)" % reader,
          flush=True)
    return ApiAccess(Client(application), member,
                     "%s/dashboard/#token=%s" % (server.url, reader),
                     url=server.url, reader_token=reader)


def check_dashboard(api: ApiAccess, expected: dict[str, str],
                    story: Story) -> None:
    """What the dashboard reads, over HTTP as a browser would: the page,
    the hosts with the printed token, and nothing without a token."""
    import json
    import urllib.error
    import urllib.request

    def get(path: str, token: str | None) -> tuple[int, bytes]:
        request = urllib.request.Request(api.url + path)
        if token:
            request.add_header("X-Auth-Token", token)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()
    page, _ = get("/dashboard/", None)
    listed, body = get("/v1/hosts", api.reader_token)
    anonymous, _ = get("/v1/hosts", None)
    hosts = ({h["name"]: h["status"] for h in json.loads(body)["hosts"]}
             if listed == 200 else {})
    print("dashboard over HTTP: page %d; /v1/hosts with the printed token "
          "%d (%s); without a token %d" % (
              page, listed, ", ".join("%s %s" % kv for kv in
                                      sorted(hosts.items())), anonymous))
    story.expect(page == 200 and hosts == expected and anonymous == 401,
                 "the dashboard's API showed %s (page %d, anonymous %d)"
                 % (hosts, page, anonymous))


def _print_verdicts(names: list[str], latest: dict, story: Story) -> None:
    print()
    print("%-12s %-10s %-5s %s" % ("HOST", "VERDICT", "LEVEL", "REASONS"))
    for name in names:
        verdict = latest[name]
        reasons = "; ".join(verdict.reasons) or "-"
        print("%-12s %-10s %-5d %s" % (name, verdict.status, verdict.level,
                                       reasons[:300]))
    for name in names:
        want = "untrusted" if name == names[3] else "trusted"
        story.expect(latest[name].status == want,
                     "%s is %s, expected %s" % (name, latest[name].status,
                                                want))


def place_vms(pool: Any, names: list[str], trusted: set[str],
              story: Story) -> dict[str, str]:
    """Feed the scheduler filter's cache the way nova-scheduler does (bulk
    refresh of signed verdicts from the conductors' verdict read API,
    checked with the conductor key pinned in configuration), then
    schedule. Returns VM -> host: the first host that passes and has no
    VM yet (Nova's weighers would choose; the demo spreads)."""
    from nova.scheduler import filters as nova_filters
    from nova.scheduler.filters import compute_capabilities_filter
    from nova.scheduler.filters import compute_filter
    from nova.scheduler.filters import image_props_filter

    from tests import nova_harness
    from trusted_pools.conductor import rpcapi as conductor_rpcapi
    from trusted_pools.nova.scheduler import listener
    from trusted_pools.nova.scheduler.cache import VerdictCache
    from trusted_pools.nova.scheduler.filters import TrustedHostFilter

    cache = VerdictCache(
        listener.load_public_keys([str(pool.conductor_keys_path)]),
        max_age=120, grace=60)
    refresher = listener.TrustListener(
        cache, conductor_rpcapi.VerdictsAPI(timeout=30),
        notification_transport=None, exchange="trusted_pools")
    print("verdicts admitted into the filter's cache (signatures checked "
          "once): %d" % refresher.refresh())
    chain = [compute_filter.ComputeFilter(),
             compute_capabilities_filter.ComputeCapabilitiesFilter(),
             image_props_filter.ImagePropertiesFilter(),
             TrustedHostFilter(cache=cache)]
    hosts = [nova_harness.host_state(name) for name in names]
    handler = nova_filters.HostFilterHandler()
    placed: dict[str, str] = {}
    print("%-12s %-50s %s" % ("VM", "FLAVOR EXTRA SPECS", "HOSTS THAT PASS"))
    for vm, specs in VMS:
        allowed = trusted if any(k.startswith("trust:") for k in specs) \
            else set(names)
        passed = {h.host for h in handler.get_filtered_objects(
            chain, hosts, nova_harness.request_spec(specs))}
        story.expect(passed == allowed, "%s may land on %s, expected %s"
                     % (vm, sorted(passed), sorted(allowed)))
        print("%-12s %-50s %s" % (
            vm, ", ".join("%s=%s" % kv for kv in specs.items()) or "-",
            ", ".join(sorted(passed)) or "none"))
        free = [h for h in sorted(passed) if h not in placed.values()]
        host = (free or sorted(passed) or ["-"])[0]
        placed[vm] = host
        story.vms.append((vm, host, "yes" if "hw:tpm_version" in specs
                          else "-", ", ".join("%s=%s" % kv for kv in
                                              specs.items()) or "-"))
    for name in sorted(set(names) - trusted):
        print("%s refused: %s" % (name, cache.explain(
            name, 1, 120, cache.monotonic())))
    print("placed: %s" % ", ".join("%s on %s" % kv for kv in placed.items()))
    return placed


def create_vtpms(mp: Any, placed: dict[str, str], story: Story
                 ) -> dict[str, tuple[str, str]]:
    """VM -> (instance uuid, host) for each VM whose flavor asks for a
    vTPM: swtpm_setup manufactures it (EK certificate), its state key is
    wrapped to the host TPM's binding key, and its AK is certified by the
    host's vTPM CA (a key in the host TPM)."""
    made: dict[str, tuple[str, str]] = {}
    wanted = [vm for vm, specs in VMS if "hw:tpm_version" in specs]
    with Progress("creating %d vTPMs (swtpm_setup, AK certified by the "
                  "host's vTPM CA)" % len(wanted)):
        for vm in wanted:
            host = mp.host(placed[vm])
            uuid = str(uuid_lib.uuid4())
            info = mp.driver(host).create(uuid)
            made[vm] = (uuid, host.name)
            story.expect(info.status.value == "stopped" and "vtpm_chain" in
                         info.metadata.get("provisioner", {}),
                         "the vTPM of %s is %s, without a certified AK"
                         % (vm, info.status.value))
    for vm, (uuid, host) in made.items():
        print("%s: vTPM %s on %s (state encrypted, key wrapped to %s's "
              "TPM)" % (vm, uuid, host, host))
    return made


def deep_attest(mp: Any, vm: str, vtpm: tuple[str, str], story: Story
                ) -> dict[str, str]:
    """Challenge, VM quote, host quote over the commitment, verdict."""
    from trusted_pools.tpm import device as tpm_device
    from trusted_pools.tpm.constants import TPM_ALG
    from trusted_pools.protocol.evidence import encode_b64
    from trusted_pools.vtpm import binding

    uuid, host_name = vtpm
    host = mp.host(host_name)
    driver = mp.driver(host)
    operator = mp.pool.api()
    print("NOTE: the VM quote is made by a host-side process on the vTPM's "
          "data channel, not by a guest: the demo boots no QEMU (too slow "
          "here; tests/functional/vtpm/test_guest_deep.py boots one). The "
          "vTPM's PCRs are those of a vTPM no firmware has measured into. "
          "The quotes, the certificate chain and the verification are "
          "real.")
    with Progress("deep attestation of %s (%s on %s)" % (vm, uuid,
                                                        host_name)):
        challenge = operator.start("challenge_instance", {}, host_name,
                                   instance=uuid)
        nonce = base64.b64decode(challenge["nonce"])
        selection = {TPM_ALG.SHA256: list(range(8))}
        driver.start(uuid, host_access=True)
        try:
            with tpm_device.TPMDevice(driver.tcti(uuid)) as dev:
                attest, signature = dev.quote(binding.VTPM_AK_HANDLE, nonce,
                                              selection)
                pcrs = dev.pcr_read(selection)
        finally:
            driver.stop(uuid)
        evidence = {
            "instance": uuid, "vm_quote": encode_b64(attest),
            "vm_signature": encode_b64(signature),
            "vm_pcrs": {"sha256": {str(p): v.hex() for p, v in
                                   pcrs[TPM_ALG.SHA256].items()}},
            "vtpm_certificate": driver.status(uuid).metadata[
                "provisioner"]["vtpm_chain"]}
        result = operator.wait(operator.start("deep_attest", {}, host_name,
                                              instances=[evidence]))
    (entry,) = result["instances"]
    verdict = entry.get("verdict") or {}
    status = verdict.get("status", "error: %s" % entry.get("error"))
    print("%s: %s at level %s (%s)" % (vm, status, verdict.get("level", "-"),
                                        verdict.get("appraisal", "-")))
    story.expect(status == "trusted", "deep attestation of %s: %s"
                 % (vm, status))
    if "signed_result" in entry:
        # As a relying party would: the signed instance verdict, checked
        # with the conductor key pinned in configuration.
        from trusted_pools.nova.scheduler import listener
        from trusted_pools.verifier import deep
        claims = deep.verify_instance_result(
            entry["signed_result"], listener.load_public_keys(
                [str(mp.pool.conductor_keys_path)]), int(time.time()))
        bound = claims["binding"]
        print("signed instance verdict checked with the pinned conductor "
              "key: instance %s on host %s; the host TPM quoted over the "
              "Merkle root %s... that commits to this VM quote (leaf %d "
              "of %d)" % (claims["sub"], claims["submods"]["host"]["name"],
                          bound["merkle_root"][:16], bound["leaf_index"],
                          bound["tree_size"]))
        story.expect(claims["sub"] == uuid and claims["submods"]["host"][
            "name"] == host_name, "the signed instance verdict names %s on "
            "%s" % (claims["sub"], claims["submods"]["host"]["name"]))
    return {vm: "%s (level %s)" % (status, verdict.get("level", "-"))}


def _key_manager(api: ApiAccess, host: Any) -> Any:
    """The castellan backend as nova-compute on ``host`` loads it: it
    calls trusted-pools-api (here into its WSGI pipeline, with a real
    token) and unwraps through that host's own TPM."""
    from oslo_config import cfg

    from trusted_pools.keymanager import backend
    from trusted_pools.tpm import device as tpm_device

    def request(method: str, path: str, token: str,
                body: dict | None = None) -> tuple[int, Any]:
        response = api.client.request(method, path, persona=token,
                                      body=body)
        return response.status_code, (response.json if response.body
                                      else None)
    conf = cfg.ConfigOpts()
    conf([], project="nova-demo", default_config_files=[])
    manager = backend.TrustedPoolsKeyManager(
        conf, transport=request, unwrapper=backend.tpm_unwrapper(
            host.tpm.tcti, tpm_device.DEFAULT_BINDING_KEY_HANDLE))
    conf.set_override("host", host.name, group="trusted_pools_key_manager")
    manager.host = host.name
    return manager


def release_keys(api: ApiAccess, mp: Any, vtpm: tuple[str, str], tampered: Any,
                 story: Story) -> dict[str, tuple[str, str]]:
    """Nova's vTPM secret for vm-secure-1: stored and read back on its
    host (wrapped to that host's TPM), refused to the tampered host."""
    from castellan.common.objects import passphrase
    from oslo_context import context as oslo_context

    from trusted_pools.keymanager import backend

    uuid, host_name = vtpm
    context = oslo_context.RequestContext(auth_token=api.member_token)
    nova_on_host = _key_manager(api, mp.host(host_name))
    value = base64.b64encode(secrets.token_bytes(384))
    secret_id = nova_on_host.store(context, passphrase.Passphrase(
        value, name="vTPM secret for instance %s" % uuid))
    got = nova_on_host.get(context, secret_id).get_encoded()
    released = story.expect(got == value, "the vTPM secret did not come "
                            "back on %s" % host_name)
    print("Nova on %s stored the vTPM secret %s and got it back, wrapped "
          "to %s's TPM and unwrapped there" % (host_name, secret_id,
                                               host_name))
    try:
        _key_manager(api, tampered).get(context, secret_id)
        refused = "RELEASED"
    except backend.KeyWithheld as error:
        refused = str(error)
    print("Nova on %s asked for it: %s" % (tampered.name, refused))
    story.expect(refused.startswith("%s is untrusted" % tampered.name),
                 "the key was not refused to %s" % tampered.name)
    api.secret_id = secret_id
    api.secret_value = value
    return {"vm-secure-1": (host_name if released else "-",
                            tampered.name if refused != "RELEASED" else "-")}


def migrate(mp: Any, api: ApiAccess, vtpms: dict[str, tuple[str, str]],
            names: list[str], story: Story,
            keys: dict[str, tuple[str, str]]) -> dict[str, str]:
    """vm-secure-1's vTPM, cold, to another trusted host; vm-secure-2's to
    the tampered host, refused. Returns VM -> host its vTPM is on now."""
    moved: dict[str, str] = {}
    uuid, source = vtpms["vm-secure-1"]
    # Another trusted host, one that holds no vTPM yet.
    holding = {host for _, host in vtpms.values()}
    destination = next(n for n in reversed(names[:3])
                       if n not in holding)
    with Progress("cold migration of %s's vTPM %s -> %s (transport key "
                  "certified by the destination's AK, sealed payload)"
                  % ("vm-secure-1", source, destination)):
        done = mp.migrate(uuid, mp.host(source), mp.host(destination))
    arrived = uuid in {i.instance_uuid for i in
                       mp.driver(mp.host(destination)).list()}
    left = uuid not in {i.instance_uuid for i in
                        mp.driver(mp.host(source)).list()}
    print("vm-secure-1: %s (epoch %s); on %s now: %s; erased on %s: %s"
          % (done["outcome"], done["epoch"], destination, arrived, source,
             left))
    story.expect(done["outcome"] == "completed" and arrived and left,
                 "the migration of vm-secure-1's vTPM: %s (%s)"
                 % (done["outcome"], done.get("reason")))
    story.migrations.append(("vm-secure-1", source, destination,
                             done["outcome"], done.get("reason") or "-"))
    moved["vm-secure-1"] = destination
    _key_after_move(mp, api, destination, story, keys)

    uuid, source = vtpms["vm-secure-2"]
    tampered = names[3]
    with Progress("migration of vm-secure-2's vTPM %s -> %s"
                  % (source, tampered)):
        refused = mp.migrate(uuid, mp.host(source), mp.host(tampered))
    still = mp.driver(mp.host(source)).status(uuid).status.value
    print("vm-secure-2: %s: %s; its vTPM stays on %s (%s)"
          % (refused["outcome"], refused.get("reason"), source, still))
    story.expect(refused["outcome"] == "aborted" and "host %s is untrusted"
                 % tampered in (refused.get("reason") or "")
                 and still == "stopped",
                 "the migration of vm-secure-2's vTPM to %s: %s (%s)"
                 % (tampered, refused["outcome"], refused.get("reason")))
    story.migrations.append(("vm-secure-2", source, tampered,
                             refused["outcome"],
                             refused.get("reason") or "-"))
    return moved


def _key_after_move(mp: Any, api: ApiAccess, destination: str,
                    story: Story,
                    keys: dict[str, tuple[str, str]]) -> None:
    """Nova on the destination needs the vTPM secret to define the guest
    there: released, wrapped to that host's TPM."""
    from oslo_context import context as oslo_context
    context = oslo_context.RequestContext(auth_token=api.member_token)
    got = _key_manager(api, mp.host(destination)).get(
        context, api.secret_id).get_encoded()
    ok = story.expect(got == api.secret_value, "the vTPM secret was not "
                      "released to %s" % destination)
    print("Nova on %s got the vTPM secret: %s" % (
        destination, "released, unwrapped by its TPM" if ok else "NO"))
    if ok:
        to, refused = keys["vm-secure-1"]
        keys["vm-secure-1"] = ("%s, %s" % (to, destination), refused)


def _vtpm_state(mp: Any, host: str, uuid: str) -> str:
    for info in mp.driver(mp.host(host)).list():
        if info.instance_uuid == uuid:
            return info.status.value
    return "absent"


def _stop_vtpms(mp: Any) -> None:
    for host in mp.hosts:
        driver = getattr(host.agent, "vtpm", None) if host.agent else None
        if driver is None:
            continue
        for info in driver.list():
            if info.status.value == "running":
                driver.stop(info.instance_uuid)
