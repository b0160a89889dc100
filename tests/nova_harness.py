"""Real Nova pieces for the scheduler tests and the filter benchmark.

Test-side only. Builds real ``HostState`` and ``RequestSpec`` objects
(after ``nova.objects.register_all()``), real conductor-signed verdicts
(``ResultSigner`` + ``make_verdict``: the conductor's own signing code),
and fixes the one set-up need of Nova's functional harness on a pip-installed
Nova: ``etc/nova/api-paste.ini`` where the harness looks for it.
"""

from __future__ import annotations

import datetime
import os
import pathlib
import shutil
import sys
import sysconfig
from typing import Any, Iterable, Mapping

from trusted_pools.protocol import keystore
from trusted_pools.protocol import results
from trusted_pools.protocol import verdict as verdict_mod
from trusted_pools.protocol.levels import AssuranceLevel, Outcome, Rung

DIGEST = "ab" * 32


def ensure_api_paste() -> pathlib.Path:
    """Copy the wheel's ``etc/nova/api-paste.ini`` (under the venv) to
    ``site-packages/etc/nova/``, where Nova's test harness looks."""
    purelib = pathlib.Path(sysconfig.get_paths()["purelib"])
    target = purelib / "etc" / "nova" / "api-paste.ini"
    if target.exists():
        return target
    candidates = [pathlib.Path(sys.prefix) / "etc" / "nova" / "api-paste.ini",
                  pathlib.Path(sysconfig.get_paths()["data"]) / "etc"
                  / "nova" / "api-paste.ini"]
    for source in candidates:
        if source.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(".tmp%d" % os.getpid())
            shutil.copyfile(source, tmp)
            os.replace(tmp, target)
            return target
    raise RuntimeError("nova's api-paste.ini is in none of %s; reinstall "
                       "nova" % [str(c) for c in candidates])


# --- signed verdicts ------------------------------------------------------------

class VerdictFactory:
    """Signs verdicts the way the conductor does."""

    def __init__(self, issuer: str = "conductor-1", key: Any = None) -> None:
        self.key = key or keystore.generate_signing_key()
        self.signer = results.ResultSigner(self.key, issuer)
        self.public_keys = keystore.key_set([self.key])
        self.public_pem = keystore.public_key_pem(self.key)

    def verdict(self, host: str, status: str = "trusted", level: int = 4,
                issued_at: int | None = None, validity: int = 300
                ) -> verdict_mod.Verdict:
        import time
        issued = int(time.time()) if issued_at is None else issued_at
        if status == "unknown":
            return verdict_mod.unknown_verdict(
                host=host, reason="agent unreachable", issued_at=issued,
                validity=validity)
        outcomes = {rung: Outcome.PASSED for rung in Rung
                    if rung <= max(level, 1)}
        reasons: list[str] = []
        if status == "untrusted":
            outcomes[Rung.OS_BOOT] = Outcome.CONTRAINDICATED
            reasons = ["PCR 4: kernel digest denied by policy"]
        return verdict_mod.make_verdict(
            host=host, outcomes=outcomes,
            required_level=AssuranceLevel(max(min(level, 4), 1))
            if status == "trusted" else AssuranceLevel.IDENTITY,
            policy_versions={"golden": 1}, evidence_digest=DIGEST,
            issued_at=issued, validity=validity, reasons=reasons)

    def token(self, host: str, status: str = "trusted", level: int = 4,
              issued_at: int | None = None, validity: int = 300,
              sequence: int | None = None) -> str:
        """A signed result. ``sequence`` (the database's order) defaults
        to the issue time, so that tests about other things can say
        "later" with ``issued_at`` alone; tests about order set it."""
        v = self.verdict(host, status, level, issued_at, validity)
        return self.signer.sign(v, sequence=v.issued_at if sequence is None
                                else sequence)

    def payload(self, host: str, status: str = "trusted", level: int = 4,
                issued_at: int | None = None, validity: int = 300,
                sequence: int | None = None) -> dict[str, Any]:
        v = self.verdict(host, status, level, issued_at, validity)
        return {"host": host, "status": v.status.value, "level": int(v.level),
                "signed_result": self.signer.sign(
                    v, sequence=v.issued_at if sequence is None
                    else sequence)}


# --- Nova objects --------------------------------------------------------------

_REGISTERED = False


def register_nova_objects() -> None:
    global _REGISTERED
    if not _REGISTERED:
        from nova import objects
        objects.register_all()
        _REGISTERED = True


def host_state(host: str, node: str | None = None) -> Any:
    """A real ``nova.scheduler.host_manager.HostState`` of an up, enabled
    x86_64 KVM compute node, enough for Nova's default filters."""
    register_nova_objects()
    from nova import objects
    from nova.scheduler import host_manager
    state = host_manager.HostState(host, node or host, "cell1")
    now = datetime.datetime.now(datetime.timezone.utc)
    state.service = objects.Service(
        host=host, binary="nova-compute", disabled=False, forced_down=False,
        disabled_reason=None,
        created_at=now, updated_at=now, last_seen_up=now)
    state.supported_instances = [("x86_64", "kvm", "hvm")]
    state.hypervisor_type = "QEMU"
    state.hypervisor_version = 8002000
    state.free_ram_mb = state.total_usable_ram_mb = 65536
    state.vcpus_total = 32
    state.aggregates = []
    state.instances = {}
    state.limits = {}
    return state


def host_states(count: int, prefix: str = "compute") -> list[Any]:
    return [host_state("%s-%06d" % (prefix, i)) for i in range(count)]


def heartbeat(states: list[Any]) -> None:
    """Mark every host's compute service as seen now: Nova's ComputeFilter
    takes a host whose service was last seen more than service_down_time
    (60 s) ago for dead, and building 100,000 hosts on a busy machine can
    take longer than that."""
    now = datetime.datetime.now(datetime.timezone.utc)
    for state in states:
        state.service.updated_at = state.service.last_seen_up = now


def request_spec(extra_specs: Mapping[str, str] | None = None,
                 image_properties: Mapping[str, Any] | None = None,
                 instance_uuid: str = "6b1f1d2a-5a48-4c59-9d0c-6a3fbd2c1a11"
                 ) -> Any:
    """A real ``RequestSpec`` with a flavor and an image."""
    register_nova_objects()
    from nova import objects
    flavor = objects.Flavor(
        name="m1.test", flavorid="42", memory_mb=512, vcpus=1, root_gb=1,
        ephemeral_gb=0, swap=0, extra_specs=dict(extra_specs or {}))
    image = objects.ImageMeta.from_dict({
        "id": "155d900f-4e14-4e4c-a73d-069cbf4541e6", "name": "cirros",
        "properties": dict(image_properties or {})})
    return objects.RequestSpec(
        flavor=flavor, image=image, instance_uuid=instance_uuid,
        num_instances=1, ignore_hosts=None, force_hosts=None,
        force_nodes=None, scheduler_hints={}, instance_group=None)


def load_validators() -> None:
    """Make nova-api know the ``trust:`` validators.

    Uses the installed ``nova.api.extra_spec_validators`` entry point when
    the package metadata has it (after setup.cfg gains it); otherwise
    registers :func:`trusted_pools.nova.scheduler.extra_specs.register` the way
    ``nova.api.validation.extra_specs.validators.load_validators`` does.
    """
    from nova.api.validation.extra_specs import validators
    from trusted_pools.nova.scheduler import extra_specs
    if "trust:trusted_host" in validators.VALIDATORS:
        return
    for validator in extra_specs.register():
        validators.VALIDATORS[validator.name] = validator
        if ":" in validator.name_regex:
            validators.NAMESPACES.add(validator.name_regex.split(":", 1)[0])


def names(hosts: Iterable[Any]) -> list[str]:
    return sorted(h.host for h in hosts)


def run_nova_child(test_file: str, test_class: str) -> None:
    """Run ``test_file::test_class`` (a Nova functional test class) in a
    child interpreter and fail with its output if it fails.

    Nova's harness either monkey-patches the whole pytest session with
    eventlet or refuses to start once eventlet is imported (oslo.messaging
    does), so its classes run in their own process, in native threading
    mode, with Nova's harness loaded before anything else.
    """
    import subprocess
    from tests.rabbitmq import require_broker
    require_broker()
    env = dict(os.environ, TRUSTED_POOLS_NOVA_CHILD="1",
               OS_NOVA_DISABLE_EVENTLET_PATCHING="1")
    root = pathlib.Path(__file__).resolve().parent.parent
    child = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "-p", "nova.tests.functional", "-W", "ignore::DeprecationWarning",
         "%s::%s" % (test_file, test_class)],
        env=env, capture_output=True, text=True, timeout=300, cwd=root)
    tail = (child.stdout + child.stderr)[-6000:]
    assert child.returncode == 0, "Nova functional tests failed:\n" + tail
    assert " passed" in child.stdout and "failed" not in child.stdout, tail
