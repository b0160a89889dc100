"""Each RPC client and its server agree on the API version."""

import pytest

from trusted_pools.agent import manager as agent_manager
from trusted_pools.agent import rpcapi as agent_rpcapi
from trusted_pools.conductor import manager as conductor_manager
from trusted_pools.conductor import rpcapi as conductor_rpcapi


@pytest.mark.parametrize("rpcapi,manager", [
    (agent_rpcapi, agent_manager.AgentManager),
    (conductor_rpcapi, conductor_manager.ConductorManager),
])
def test_client_and_server_versions_agree(rpcapi, manager):
    assert manager.target.version == rpcapi.RPC_API_VERSION


@pytest.mark.parametrize("rpcapi", [agent_rpcapi, conductor_rpcapi])
def test_docstring_history_names_current_version(rpcapi):
    assert "* %s - " % rpcapi.RPC_API_VERSION in rpcapi.__doc__
