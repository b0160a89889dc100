"""The agent fails closed on its pinned conductor keys: without one it does
not start, and it never opens the TPM."""

from __future__ import annotations

import pytest
from oslo_config import cfg

from trusted_pools import exception
from trusted_pools.agent import attester as attester_mod
from trusted_pools.agent.service import AgentService
from trusted_pools.conf import agent as agent_conf
from trusted_pools.conf import tpm as tpm_conf


@pytest.fixture
def conf():
    conf = cfg.ConfigOpts()
    agent_conf.register_opts(conf)
    tpm_conf.register_opts(conf)
    conf([], project="trusted-pools-test", default_config_files=[],
         default_config_dirs=[])
    return conf


@pytest.mark.parametrize("content,reason", [
    (None, "cannot be read"),
    ("", "holds no conductor public key"),
])
def test_without_pinned_keys_the_agent_does_not_start(
        conf, tmp_path, monkeypatch, content, reason):
    path = tmp_path / "conductor-keys.pem"
    if content is not None:
        path.write_text(content)
    conf.set_override("conductor_keys_file", str(path), group="agent")
    opened = []
    monkeypatch.setattr(attester_mod, "default_open_device",
                        lambda tcti: opened.append(tcti))
    with pytest.raises(exception.ConfigInvalid) as info:
        AgentService(conf, host="compute-1")
    assert reason in str(info.value) and str(path) in str(info.value)
    assert opened == [], "the TPM was opened"


@pytest.mark.parametrize("relay_topic, relay_url", [
    (None, None), (None, "rabbit://rack-7/"), ("rack-7-relay", None),
    ("rack-7-relay", "rabbit://rack-7/")])
def test_pushes_go_to_the_relay_only_when_one_is_named(
        conf, tmp_path, monkeypatch, relay_topic, relay_url):
    """[agent] relay_topic unset: pushes are cast to the conductor (the
    evidence API); set: to that relay topic (the relay's client), on
    [agent] relay_transport_url when that is set."""
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from trusted_pools.agent import service as agent_service
    from trusted_pools.conf import vtpm as vtpm_conf
    from trusted_pools.protocol import keystore
    vtpm_conf.register_opts(conf)
    path = tmp_path / "conductor-keys.pem"
    path.write_text(keystore.public_key_pem(
        ed25519.Ed25519PrivateKey.generate()))
    conf.set_override("conductor_keys_file", str(path), group="agent")
    conf.set_override("relay_topic", relay_topic, group="agent")
    conf.set_override("relay_transport_url", relay_url, group="agent")
    monkeypatch.setattr(attester_mod, "default_open_device",
                        lambda tcti: (lambda: None))
    made = []
    monkeypatch.setattr(agent_service.rpc, "get_transport",
                        lambda conf, url: ("transport", url))

    class Client:
        def __init__(self, *args, **kwargs) -> None:
            made.append((type(self).__name__, args,
                         kwargs.get("transport")))

        def submit_evidence(self, *args) -> None:
            raise AssertionError("not sent in this test")

    class EvidenceAPI(Client):
        pass

    class RelayAPI(Client):
        pass
    monkeypatch.setattr(agent_service.conductor_rpcapi, "EvidenceAPI",
                        EvidenceAPI)
    monkeypatch.setattr(agent_service.relay_rpcapi, "RelayAPI", RelayAPI)
    service = AgentService(conf, host="compute-1")
    send = service.manager._send_evidence
    if relay_topic is None:
        assert isinstance(send.__self__, EvidenceAPI)
        assert [m[0] for m in made] == ["EvidenceAPI"]
    else:
        assert isinstance(send.__self__, RelayAPI)
        expected = ("transport", relay_url) if relay_url else None
        assert ("RelayAPI", (relay_topic,), expected) in made
