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
