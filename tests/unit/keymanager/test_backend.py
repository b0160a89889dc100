"""castellan's API contract for the trusted_pools key manager: the types
it returns, the errors it raises, what it sends. The key service is a
fake here (unit tests); tests/functional/conductor/test_key_release.py
runs the real one with swtpm TPMs."""

from __future__ import annotations

import base64
import configparser
import os
import pathlib
from typing import Any

import pytest
from castellan.common import exception as castellan_exception
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from castellan.common.objects import opaque_data
from castellan.common.objects import passphrase
from castellan.common.objects import private_key
from castellan.common.objects import symmetric_key
from castellan.key_manager import key_manager as castellan_km
from oslo_config import cfg
from oslo_context import context as oslo_context

from trusted_pools.keymanager import backend
from trusted_pools.protocol import key_release as release

ROOT = pathlib.Path(__file__).resolve().parents[3]
HOST = "compute-1"


class FakeService:
    """trusted-pools-api as the backend sees it; ``wrap`` stands for the
    TPM wrapping (XOR with a byte, reversed by the fake unwrapper)."""

    def __init__(self) -> None:
        self.secrets: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str, str, Any]] = []
        self.refuse: tuple[int, dict] | None = None

    def __call__(self, method: str, path: str, token: str,
                 body: dict | None = None) -> tuple[int, Any]:
        self.calls.append((method, path, token, body))
        if self.refuse is not None:
            return self.refuse
        if method == "POST" and path == "/v1/secrets":
            secret_id = "id-%d" % len(self.secrets)
            self.secrets[secret_id] = dict(body, id=secret_id)
            return 201, {"secret": {"id": secret_id}}
        secret_id, _, host = path.removeprefix("/v1/secrets/").partition(
            "?host=")
        if secret_id not in self.secrets:
            return 404, {"errors": [{"code": "trusted-pools.secret.not_found",
                                     "detail": "Secret not found"}]}
        stored = self.secrets[secret_id]
        if method == "DELETE":
            del self.secrets[secret_id]
            return 204, None
        view = {k: v for k, v in stored.items() if k != "payload"}
        if host:
            value = base64.b64decode(stored["payload"])
            label = release.release_label(secret_id, host)
            key, nonce = os.urandom(32), os.urandom(12)
            view["wrapped"] = base64.b64encode(
                bytes(b ^ label[-2] for b in key)).decode()
            view["ciphertext"] = base64.b64encode(
                nonce + AESGCM(key).encrypt(nonce, value, label)).decode()
        return 200, {"secret": view}


def unwrap(ciphertext: bytes, label: bytes) -> bytes:
    return bytes(b ^ label[-2] for b in ciphertext)


@pytest.fixture
def service() -> FakeService:
    return FakeService()


@pytest.fixture
def manager(service: FakeService) -> backend.TrustedPoolsKeyManager:
    conf = cfg.ConfigOpts()
    conf([], project="nova-test", default_config_files=[])
    km = backend.TrustedPoolsKeyManager(conf, transport=service,
                                        unwrapper=unwrap)
    km.host = HOST
    return km


CTX = oslo_context.RequestContext(auth_token="tok", project_id="p")


def test_is_a_castellan_key_manager_registered_by_entry_point():
    assert issubclass(backend.TrustedPoolsKeyManager,
                      castellan_km.KeyManager)
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    lines = parser["entry_points"]["castellan.drivers"].strip().splitlines()
    assert lines == ["trusted_pools = trusted_pools.keymanager.backend:"
                     "TrustedPoolsKeyManager"]


@pytest.mark.parametrize("obj", [
    passphrase.Passphrase(b"cGFzcw==", name="vTPM secret for instance u-1"),
    symmetric_key.SymmetricKey("AES", 256, b"k" * 32, name="k"),
    opaque_data.OpaqueData(b"\x00\x01opaque"),
])
def test_store_then_get_round_trips_type_and_value(manager, service, obj):
    secret_id = manager.store(CTX, obj)
    assert isinstance(secret_id, str)
    got = manager.get(CTX, secret_id)
    assert type(got) is type(obj)
    assert got.get_encoded() == obj.get_encoded()
    assert got.id == secret_id
    assert got.name == obj.name
    method, path, token, _ = service.calls[-1]
    assert (method, path, token) == (
        "GET", "/v1/secrets/%s?host=%s" % (secret_id, HOST), "tok")


def test_nova_vtpm_secret_names_its_instance_as_owner(manager, service):
    manager.store(CTX, passphrase.Passphrase(
        b"x" * 44, name="vTPM secret for instance 1f2e-uuid"))
    assert service.calls[0][3]["owner"] == "1f2e-uuid"
    # The storing host names itself: it must pass the release check.
    assert service.calls[0][3]["host"] == HOST


def test_symmetric_key_metadata_and_create_key(manager, service):
    key_id = manager.create_key(CTX, "AES", 128, name="n")
    key = manager.get(CTX, key_id)
    assert isinstance(key, symmetric_key.SymmetricKey)
    assert (key.algorithm, key.bit_length, len(key.get_encoded())) == (
        "AES", 128, 16)
    meta = manager.get(CTX, key_id, metadata_only=True)
    assert meta.get_encoded() is None and meta.id == key_id
    assert "?host=" not in service.calls[-1][1]


@pytest.mark.parametrize("length", [0, 7, 40000, "256"])
def test_create_key_refuses_lengths_one_tpm_block_cannot_hold(manager,
                                                              length):
    with pytest.raises(castellan_exception.KeyManagerError):
        manager.create_key(CTX, "AES", length)


def test_missing_secret_is_managed_object_not_found(manager):
    with pytest.raises(castellan_exception.ManagedObjectNotFoundError) as e:
        manager.get(CTX, "nope")
    assert "nope" in str(e.value)
    with pytest.raises(castellan_exception.ManagedObjectNotFoundError):
        manager.delete(CTX, "nope")


def test_refused_release_is_key_manager_error_with_the_reason(manager,
                                                              service):
    secret_id = manager.store(CTX, passphrase.Passphrase(b"x" * 44))
    detail = ("compute-1 is untrusted: OS boot: PCR 4 event 27 ...; the "
              "vTPM key is withheld")
    service.refuse = (403, {"errors": [{
        "code": "trusted-pools.key_release_refused", "detail": detail}]})
    with pytest.raises(castellan_exception.KeyManagerError) as refused:
        manager.get(CTX, secret_id)
    assert isinstance(refused.value, backend.KeyWithheld)
    assert str(refused.value) == detail
    # Not Nova's "Forbidden" path (that one means the token may not).
    assert "Forbidden" not in str(refused.value)


def test_policy_refusal_is_castellan_forbidden(manager, service):
    service.refuse = (403, {"errors": [{"code": "policy.forbidden",
                                        "detail": "Policy doesn't allow"}]})
    with pytest.raises(castellan_exception.Forbidden) as refused:
        manager.store(CTX, passphrase.Passphrase(b"x" * 44))
    assert "Forbidden" in str(refused.value)


def test_server_error_and_unreachable_are_key_manager_errors(manager,
                                                             service):
    service.refuse = (503, {"errors": [{"code": "x",
                                        "detail": "no conductor"}]})
    with pytest.raises(castellan_exception.KeyManagerError) as error:
        manager.store(CTX, passphrase.Passphrase(b"x" * 44))
    assert "503" in str(error.value) and "no conductor" in str(error.value)

    def down(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionRefusedError("refused")
    manager._transport = down
    with pytest.raises(castellan_exception.KeyManagerError) as error:
        manager.get(CTX, "id-0")
    assert "unreachable" in str(error.value)


def test_blob_this_tpm_cannot_open_is_a_clear_error(manager, service):
    secret_id = manager.store(CTX, passphrase.Passphrase(b"x" * 44))

    def foreign_tpm(ciphertext: bytes, label: bytes) -> bytes:
        raise RuntimeError("TPM_RC_VALUE")
    manager._unwrapper = foreign_tpm
    with pytest.raises(castellan_exception.KeyManagerError) as error:
        manager.get(CTX, secret_id)
    assert "does not unwrap in this host's TPM" in str(error.value)
    assert HOST in str(error.value)


def test_nova_sized_passphrase_round_trips(manager):
    # Nova's vTPM secret: base64 of 384 random bytes (512 bytes).
    value = base64.b64encode(os.urandom(384))
    secret_id = manager.store(CTX, passphrase.Passphrase(value))
    assert manager.get(CTX, secret_id).get_encoded() == value


@pytest.mark.parametrize("context", [
    None, oslo_context.RequestContext(auth_token=None)])
def test_no_token_is_forbidden_before_any_request(manager, service,
                                                  context):
    with pytest.raises(castellan_exception.Forbidden):
        manager.get(context, "id-0")
    assert service.calls == []


class ServicePlugin:
    """A keystoneauth plugin as Nova's service user context carries it
    ('deployment' mode): the token comes from the plugin, with a session."""

    def __init__(self, token: str | None = "svc-token",
                 error: Exception | None = None) -> None:
        self.token, self.error, self.sessions = token, error, []

    def get_token(self, session: Any) -> str | None:
        self.sessions.append(session)
        if self.error is not None:
            raise self.error
        return self.token


def test_service_context_token_comes_from_its_auth_plugin(manager,
                                                          service):
    plugin = ServicePlugin()
    context = oslo_context.RequestContext(auth_token=None)
    context.user_auth_plugin = plugin
    secret_id = manager.store(context, passphrase.Passphrase(b"p" * 44))
    assert service.calls[-1][2] == "svc-token"
    assert manager.get(context, secret_id).get_encoded() == b"p" * 44
    assert service.calls[-1][2] == "svc-token"
    from keystoneauth1 import session as ks_session
    assert isinstance(plugin.sessions[0], ks_session.Session)
    # The request's own token wins when there is one.
    context.auth_token = "user-token"
    manager.get(context, secret_id)
    assert service.calls[-1][2] == "user-token"


@pytest.mark.parametrize("plugin", [
    ServicePlugin(token=None), ServicePlugin(error=RuntimeError("401"))])
def test_service_plugin_without_a_token_is_forbidden(manager, service,
                                                     plugin):
    context = oslo_context.RequestContext(auth_token=None)
    context.user_auth_plugin = plugin
    with pytest.raises(castellan_exception.Forbidden):
        manager.get(context, "id-0")
    assert service.calls == []


def test_unsupported_calls_raise_castellan_errors_saying_so(manager,
                                                            service):
    calls = [
        lambda: manager.create_key_pair(CTX, "RSA", 2048),
        lambda: manager.add_consumer(CTX, "id", {"service": "nova"}),
        lambda: manager.remove_consumer(CTX, "id", {"service": "nova"}),
        lambda: manager.list(CTX),
        lambda: manager.store(CTX, private_key.PrivateKey(
            "RSA", 2048, b"der", "PKCS8")),
        lambda: manager.store(CTX, passphrase.Passphrase(b"x"),
                              expiration="2030-01-01"),
    ]
    for call in calls:
        with pytest.raises(castellan_exception.KeyManagerError) as error:
            call()
        assert "trusted_pools key manager does not support" in \
            str(error.value)
    assert service.calls == []


def test_secret_larger_than_the_service_keeps_is_refused(manager, service):
    with pytest.raises(castellan_exception.KeyManagerError):
        manager.store(CTX, opaque_data.OpaqueData(
            b"x" * (release.MAX_SECRET_SIZE + 1)))
    assert service.calls == []


def test_without_endpoint_the_error_names_the_option():
    conf = cfg.ConfigOpts()
    conf([], project="nova-test", default_config_files=[])
    km = backend.TrustedPoolsKeyManager(conf)
    with pytest.raises(castellan_exception.KeyManagerError) as error:
        km.get(CTX, "id")
    assert "api_endpoint" in str(error.value)


def test_release_label_binds_secret_and_host():
    labels = {release.release_label(s, h)
              for s in ("a", "b") for h in ("compute-1", "compute-2")}
    assert len(labels) == 4
    for label in labels:
        assert label.startswith(b"trusted-pools nova-vtpm-key.")
        assert label.endswith(b"\0") and len(label) <= 64
    with pytest.raises(ValueError):
        release.release_label("", "h")
