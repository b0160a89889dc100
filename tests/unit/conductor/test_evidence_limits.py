"""``[attestation] max_event_log_bytes`` / ``max_ima_log_bytes`` are the
conductor's limits: the service passes them to its manager, which applies
them on the wire and to what the verifier parses and replays. A compromised
host that sends more than the operator allows gets a typed refusal before
anything is decoded."""

from __future__ import annotations

import base64

import pytest
from oslo_config import cfg

from trusted_pools import conf as tp_conf
from trusted_pools import exception
from trusted_pools.protocol.evidence import Evidence, Limits
from trusted_pools.common import rpc
from trusted_pools.conductor import service as service_mod
from trusted_pools.conf import attestation as attestation_conf
from trusted_pools.tpm import eventlog, ima


def _wire(event_log: bytes = b"", ima_data: bytes = b"") -> dict:
    wire = {"version": 2, "host": "compute-1", "epoch_id": None,
            "quote": base64.b64encode(b"q").decode(),
            "signature": base64.b64encode(b"s").decode(),
            "pcrs": {"sha256": {"0": "00" * 32}}}
    if event_log:
        wire["event_log"] = base64.b64encode(event_log).decode()
    if ima_data:
        wire["ima"] = {"start": 0, "data": base64.b64encode(ima_data).decode(),
                       "format": "ascii"}
    return wire


def test_the_option_defaults_are_the_library_limits():
    defaults = {o.name: o.default for o in attestation_conf.opts}
    assert defaults["max_event_log_bytes"] == eventlog.DEFAULT_MAX_SIZE \
        == Limits().max_event_log
    assert defaults["max_ima_log_bytes"] == ima.DEFAULT_MAX_LOG_SIZE \
        == Limits().max_ima


@pytest.mark.parametrize("field", ["event_log", "ima_data"])
def test_a_host_over_the_configured_limit_is_refused_on_the_wire(field):
    limits = Limits(max_event_log=1024, max_ima=1024)
    wire = _wire(**{field: b"x" * 2048})
    with pytest.raises(exception.EvidenceTooLarge):
        Evidence.from_wire(wire, limits)
    Evidence.from_wire(wire)  # the library default would have let it in


@pytest.mark.parametrize("bad", [0, -1, True, "1024", None])
def test_limits_refuse_nonsense(bad):
    with pytest.raises(exception.InvalidParameterValue):
        Limits(max_event_log=bad)


def test_the_conductor_service_passes_the_options_to_its_manager(tmp_path):
    conf = cfg.ConfigOpts()
    for module in (tp_conf.attestation, tp_conf.conductor, tp_conf.agent,
                   tp_conf.rpc_pins, tp_conf.database, tp_conf.key_service,
                   tp_conf.vtpm_migration):
        module.register_opts(conf)
    conf([], project="trusted_pools", default_config_files=[])
    bundle = tmp_path / "ek-ca.pem"
    bundle.write_bytes(b"")
    # The option groups are module objects shared with cfg.CONF: every
    # override is cleared again.
    overrides = [
        ("ek_ca_bundle", str(bundle), "conductor"),
        ("signing_key_path", str(tmp_path / "key.pem"), "conductor"),
        ("max_event_log_bytes", 4096, "attestation"),
        ("max_ima_log_bytes", 8192, "attestation")]
    try:
        for name, value, group in overrides:
            conf.set_override(name, value, group=group)
        rpc.init(conf)
        service = service_mod.ConductorService(conf, db=object(),
                                               host="c1")
    finally:
        rpc.cleanup()
        for name, _, group in overrides:
            conf.clear_override(name, group=group)
    assert service.manager.limits == Limits(max_event_log=4096,
                                            max_ima=8192)
