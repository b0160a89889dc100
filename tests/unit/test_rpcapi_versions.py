"""Each RPC client and its server agree on the API version."""

import pytest

from trusted_pools.agent import manager as agent_manager
from trusted_pools.agent import rpcapi as agent_rpcapi
from trusted_pools.conductor import endpoints
from trusted_pools.conductor import rpcapi as conductor_rpcapi
from trusted_pools.relay import manager as relay_manager
from trusted_pools.relay import rpcapi as relay_rpcapi


@pytest.mark.parametrize("version,endpoint", [
    (agent_rpcapi.RPC_API_VERSION, agent_manager.AgentManager),
    (conductor_rpcapi.RPC_API_VERSION, endpoints.ManagementEndpoint),
    (conductor_rpcapi.EVIDENCE_API_VERSION, endpoints.EvidenceEndpoint),
    (conductor_rpcapi.VERDICTS_API_VERSION, endpoints.VerdictsEndpoint),
    (relay_rpcapi.RELAY_API_VERSION, relay_manager.RelayManager),
])
def test_client_and_server_versions_agree(version, endpoint):
    assert endpoint.target.version == version


@pytest.mark.parametrize("rpcapi,versions", [
    (agent_rpcapi, ["RPC_API_VERSION"]),
    (conductor_rpcapi, ["RPC_API_VERSION", "EVIDENCE_API_VERSION",
                        "VERDICTS_API_VERSION"]),
    (relay_rpcapi, ["RELAY_API_VERSION"]),
])
def test_docstring_history_names_current_version(rpcapi, versions):
    for name in versions:
        assert "* %s - " % getattr(rpcapi, name) in rpcapi.__doc__


def test_management_calls_need_the_owner():
    """A host operation sent without naming the owning conductor is a
    programming error, raised before anything is sent."""
    api = conductor_rpcapi.ConductorAPI.__new__(conductor_rpcapi.ConductorAPI)
    api.client = None  # never reached
    for method in ("attest_now", "capture_policy", "reset_enrollment"):
        with pytest.raises(TypeError):
            getattr(api, method)({}, "compute-1")
        with pytest.raises(ValueError):
            getattr(api, method)({}, "compute-1", conductor="")
    with pytest.raises(TypeError):
        api.enroll_host({}, "compute-1")


@pytest.mark.parametrize("option,cls,kwargs", [
    ("conductor", conductor_rpcapi.ConductorAPI, {}),
    ("evidence", conductor_rpcapi.EvidenceAPI, {}),
    ("verdicts", conductor_rpcapi.VerdictsAPI, {}),
])
def test_upgrade_level_pins_cap_the_client(monkeypatch, option, cls, kwargs):
    """[rpc_pins] caps what the client sends (rolling upgrades)."""
    from trusted_pools.common import rpc
    from trusted_pools.conf import CONF
    seen = {}

    def fake_client(target, version_cap=None, timeout=None, bus=None,
                    transport=None):
        seen["cap"] = version_cap
        return None
    monkeypatch.setattr(rpc, "get_client", fake_client)
    cls(**kwargs)
    assert seen["cap"] is not None and seen["cap"] != "0.9"
    CONF.set_override(option, "0.9", group="rpc_pins")
    try:
        cls(**kwargs)
    finally:
        CONF.clear_override(option, group="rpc_pins")
    assert seen["cap"] == "0.9"


class _RecordingClient:
    """Stands in for oslo.messaging's client: records each prepare."""

    def __init__(self) -> None:
        self.prepared: list[dict] = []

    def prepare(self, **kwargs):
        self.prepared.append(kwargs)
        return self

    def can_send_version(self, version: str) -> bool:
        return True

    def call(self, context, method, **kwargs):
        return {}

    def cast(self, context, method, **kwargs):
        return None


@pytest.mark.parametrize("cls,endpoint,calls", [
    (conductor_rpcapi.ConductorAPI, endpoints.ManagementEndpoint, [
        ("enroll_host", ({}, "h"), {"conductor": "c"}),
        ("reset_enrollment", ({}, "h"), {"conductor": "c"}),
        ("attest_now", ({}, "h"), {"conductor": "c"}),
        ("capture_policy", ({}, "h"), {"conductor": "c"}),
        ("certify_binding_key", ({}, "h"), {"conductor": "c"}),
        ("store_secret", ({}, "p", "eA==", "opaque"), {"conductor": "c"}),
        ("release_secret", ({}, "h", "id"), {"conductor": "c"}),
        ("delete_secret", ({}, "id"), {"conductor": "c"}),
        ("challenge_instance", ({}, "h", "i"), {"conductor": "c"}),
        ("deep_attest", ({}, "h", []), {"conductor": "c"}),
        ("list_vtpms", ({}, "h"), {"conductor": "c"})]),
    (conductor_rpcapi.EvidenceAPI, endpoints.EvidenceEndpoint, [
        ("submit_evidence", ({}, "c", {}), {}),
        ("submit_evidence_batch", ({}, "c", [{}]), {})]),
    (conductor_rpcapi.VerdictsAPI, endpoints.VerdictsEndpoint, [
        ("verdicts_since", ({}, 0.0), {})]),
])
def test_every_client_method_sends_a_version_its_server_takes(
        cls, endpoint, calls):
    """Each method prepares a version the endpoint's target accepts (same
    major, not newer): a client left at the old major after a bump would
    be refused by every server."""
    from oslo_messaging import _utils as messaging_utils
    api = cls.__new__(cls)
    api.client = _RecordingClient()
    for method, args, kwargs in calls:
        getattr(api, method)(*args, **kwargs)
        sent = api.client.prepared[-1]["version"]
        assert messaging_utils.version_is_compatible(
            endpoint.target.version, sent), (method, sent)


def test_a_pin_below_3_0_refuses_management_calls_before_sending():
    """[rpc_pins] conductor = 2.0 against 3.0 conductors: a clear refusal
    from the client, nothing on the bus (fake transport: nothing runs)."""
    import oslo_messaging as messaging
    from oslo_config import cfg
    transport = messaging.get_rpc_transport(cfg.CONF, url="fake://")
    try:
        api = conductor_rpcapi.ConductorAPI.__new__(
            conductor_rpcapi.ConductorAPI)
        api.client = messaging.get_rpc_client(
            transport, messaging.Target(topic=conductor_rpcapi.TOPIC,
                                        version="3.0"),
            version_cap="2.0")
        with pytest.raises(messaging.RPCVersionCapError):
            api.attest_now({}, "h", conductor="c")
    finally:
        transport.cleanup()


def test_management_and_verdict_buses_carry_a_request_context(
        monkeypatch):
    """The management bus's clients serialize a RequestContext; the
    agent bus's clients and servers get no serializer (a plain dict)."""
    from trusted_pools.common import context as context_mod
    from trusted_pools.common import rpc
    assert isinstance(rpc._serializer(rpc.MANAGEMENT_BUS),
                      context_mod.RequestContextSerializer)
    assert rpc._serializer(rpc.AGENT_BUS) is None
    serializer = context_mod.RequestContextSerializer()
    ctx = context_mod.RequestContext(request_id="req-1", user_id="u",
                                     project_id="p", roles=["admin"],
                                     overwrite=False)
    sent = serializer.serialize_context(ctx)
    back = serializer.deserialize_context(sent)
    assert isinstance(back, context_mod.RequestContext)
    assert (back.request_id, back.user_id, back.project_id, back.roles) == (
        "req-1", "u", "p", ["admin"])
    # A dict (consumers pass {}) or garbage becomes a context too.
    assert serializer.deserialize_context("x").roles == []
    assert context_mod.agent_context(ctx) == {"request_id": "req-1"}
class _PinnedClient:
    """An RPC client capped below the key service's versions: records
    what would be sent (nothing must be)."""

    def __init__(self, cap: str) -> None:
        self.cap = cap
        self.prepared = []

    def can_send_version(self, version: str) -> bool:
        return tuple(map(int, version.split("."))) <= tuple(
            map(int, self.cap.split(".")))

    def prepare(self, **kwargs):
        self.prepared.append(kwargs)
        raise AssertionError("nothing may be sent above the pin")


def test_key_service_calls_refused_below_their_version():
    """Pinned to 3.0 (a conductor not yet upgraded), the key service
    calls fail with a TemporaryFailure naming the pin; nothing is sent."""
    from trusted_pools import exception
    api = conductor_rpcapi.ConductorAPI.__new__(conductor_rpcapi.ConductorAPI)
    api.client = _PinnedClient("3.0")
    calls = [
        lambda: api.release_secret({}, "compute-1", "id", conductor="c"),
        lambda: api.store_secret({}, "p", "eA==", "opaque", conductor="c"),
        lambda: api.delete_secret({}, "id", conductor="c"),
        lambda: api.certify_binding_key({}, "compute-1", conductor="c"),
    ]
    for call in calls:
        with pytest.raises(exception.TemporaryFailure) as error:
            call()
        assert "rpc_pins" in str(error.value)
    assert api.client.prepared == []


def test_binding_key_request_refused_to_agents_below_1_2():
    from trusted_pools import exception
    api = agent_rpcapi.AgentAPI.__new__(agent_rpcapi.AgentAPI)
    api.client = _PinnedClient("1.1")
    api.signer = None
    with pytest.raises(exception.TemporaryFailure):
        api.get_binding_key({}, "compute-1", "bm9uY2U=")
    assert api.client.prepared == []


class _CappedRecorder(_PinnedClient):
    """Capped like _PinnedClient, but records and answers what is sent
    within the cap."""

    def prepare(self, **kwargs):
        self.prepared.append(kwargs)
        return _RecordingClient()


def test_deep_attestation_calls_refused_below_3_3():
    """Pinned to 3.1 (a conductor without deep attestation): the 3.3
    calls fail with a TemporaryFailure naming the pin; nothing is sent;
    certify_binding_key still goes out at 3.1 (its synchronous form)."""
    from trusted_pools import exception
    api = conductor_rpcapi.ConductorAPI.__new__(conductor_rpcapi.ConductorAPI)
    api.client = _CappedRecorder("3.1")
    for call in (
            lambda: api.challenge_instance({}, "h", "i", conductor="c"),
            lambda: api.deep_attest({}, "h", [{}], conductor="c")):
        with pytest.raises(exception.TemporaryFailure) as error:
            call()
        assert "rpc_pins" in str(error.value)
    assert api.client.prepared == []
    api.certify_binding_key({}, "h", conductor="c")
    assert api.client.prepared[-1]["version"] == "3.1"
    api.client = _CappedRecorder("3.3")
    api.certify_binding_key({}, "h", conductor="c")
    api.deep_attest({}, "h", [{}], conductor="c")
    assert [p["version"] for p in api.client.prepared] == ["3.3", "3.3"]


def test_challenge_names_the_image_only_from_3_4():
    """The image (instance policies) goes out at 3.4 only; a client
    pinned to 3.3 refuses to drop it silently (the instance would be
    judged without its image's policy), and a challenge without an image
    still goes out at 3.3."""
    from trusted_pools import exception
    api = conductor_rpcapi.ConductorAPI.__new__(conductor_rpcapi.ConductorAPI)
    api.client = _CappedRecorder("3.3")
    with pytest.raises(exception.TemporaryFailure) as error:
        api.challenge_instance({}, "h", "i", conductor="c", image="m")
    assert "rpc_pins" in str(error.value)
    assert api.client.prepared == []
    api.challenge_instance({}, "h", "i", conductor="c")
    assert api.client.prepared[-1]["version"] == "3.3"
    api.client = _CappedRecorder("3.4")
    api.challenge_instance({}, "h", "i", conductor="c", image="m")
    assert api.client.prepared[-1]["version"] == "3.4"
