"""A castellan key manager whose keys only attested hosts can open.

Set on each compute host, in nova.conf::

    [key_manager]
    backend = trusted_pools

    [trusted_pools_key_manager]
    api_endpoint = https://trusted-pools.example.net:9779
    host = compute-3           # as enrolled; default: this machine's name
    tcti = device:/dev/tpmrm0  # this host's TPM

Nova stores a vTPM's passphrase when it first needs one (``store``) and
gets it back each time libvirt defines the guest (``get``): boot, hard
reboot, start, rebuild, resize and cold migration onto the destination.
Each call goes to trusted-pools-api with the token of the Nova request.
A ``get`` names this host; the key service answers only if this host's
current verdict is trusted, fresh and at the secret's level, and then with
the secret encrypted to this host's binding key (decrypt-only, inside its
TPM). This module decrypts it with TPM2_RSA_Decrypt. A refusal is a
:class:`KeyWithheld` (castellan's :class:`KeyManagerError`), whose message
names the verdict and the reason; Nova records it as the instance fault.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import socket
from typing import Any, Protocol

from castellan.common import exception as castellan_exception
from castellan.common.objects import managed_object
from castellan.common.objects import opaque_data
from castellan.common.objects import passphrase
from castellan.common.objects import symmetric_key
from castellan.key_manager import key_manager
from oslo_config import cfg

from trusted_pools.protocol import key_release as release

LOG = logging.getLogger(__name__)

__all__ = ["KeyWithheld", "Transport", "TrustedPoolsKeyManager",
           "Unwrapper", "group", "http_transport", "list_opts", "opts",
           "tpm_unwrapper"]

group = cfg.OptGroup(
    "trusted_pools_key_manager", title="trusted_pools key manager",
    help="The castellan backend 'trusted_pools' ([key_manager] backend = "
         "trusted_pools in nova.conf): vTPM secrets released only to this "
         "host while it is attested, wrapped to its TPM.")

opts = [
    cfg.URIOpt("api_endpoint", schemes=["http", "https"],
               help="Base URL of trusted-pools-api (without /v1). "
                    "Required."),
    cfg.StrOpt("host", default=socket.gethostname(),
               sample_default="<hostname>",
               help="This compute host's name as it is enrolled in "
                    "trusted_pools (the agent's [agent] host). Secrets are "
                    "wrapped to the TPM of the host named here: a wrong "
                    "name gets blobs this TPM cannot open."),
    cfg.StrOpt("tcti", default="device:/dev/tpmrm0",
               help="TCTI of this host's TPM (the agent's [tpm] tcti)."),
    cfg.StrOpt("binding_key_handle", default="0x81008002",
               help="Persistent handle of this host's binding key (the "
                    "agent's [tpm] binding_key_handle)."),
    cfg.FloatOpt("timeout", default=30.0, min=1.0, max=600.0,
                 help="Seconds to wait for trusted-pools-api."),
    cfg.StrOpt("cafile",
               help="PEM bundle to verify trusted-pools-api's TLS "
                    "certificate (default: the system's)."),
]


def list_opts() -> list[tuple[cfg.OptGroup, list[cfg.Opt]]]:
    return [(group, list(opts))]


class KeyWithheld(castellan_exception.KeyManagerError):
    """The key service refused this host the secret: the message says
    the host's verdict and why (``"compute-3 is untrusted: ...; the vTPM
    key is withheld"``)."""

    message = "%(reason)s"


#: The castellan classes this backend keeps, by the key service's name.
_TYPES: dict[str, type[managed_object.ManagedObject]] = {
    "passphrase": passphrase.Passphrase,
    "symmetric": symmetric_key.SymmetricKey,
    "opaque": opaque_data.OpaqueData,
}


class Transport(Protocol):
    """``request(method, path, token, body) -> (status, json or None)``."""

    def __call__(self, method: str, path: str, token: str,
                 body: dict[str, Any] | None = None
                 ) -> tuple[int, Any]: ...


class Unwrapper(Protocol):
    """TPM2_RSA_Decrypt of ``ciphertext`` with ``label`` by this host's
    binding key."""

    def __call__(self, ciphertext: bytes, label: bytes) -> bytes: ...


def http_transport(endpoint: str, timeout: float,
                   cafile: str | None = None) -> Transport:
    """Requests to trusted-pools-api through a keystoneauth1 session (TLS
    verification, retries and request logging as every OpenStack client)."""
    from keystoneauth1 import session as ks_session

    session = ks_session.Session(verify=cafile or True, timeout=timeout)
    base = endpoint.rstrip("/")

    def request(method: str, path: str, token: str,
                body: dict[str, Any] | None = None) -> tuple[int, Any]:
        response = session.request(
            base + path, method, json=body, raise_exc=False,
            headers={"X-Auth-Token": token,
                     "Accept": "application/json"})
        try:
            data = response.json() if response.content else None
        except ValueError:
            data = None
        return response.status_code, data
    return request


def tpm_unwrapper(tcti: str, handle: int) -> Unwrapper:
    """Decrypt with this host's binding key through tpm2-pytss; a TPM
    connection per call (Nova asks once per guest definition)."""
    from trusted_pools.tpm import device as tpm_device

    def unwrap(ciphertext: bytes, label: bytes) -> bytes:
        with tpm_device.TPMDevice(tcti) as dev:
            return dev.rsa_decrypt(handle, ciphertext, label)
    return unwrap


def _unsupported(what: str) -> castellan_exception.KeyManagerError:
    return castellan_exception.KeyManagerError(
        reason="the trusted_pools key manager does not support %s: it keeps "
        "Nova vTPM secrets (passphrases, symmetric keys, opaque data) "
        "released to attested hosts only" % what)


def _detail(body: Any) -> tuple[str, str]:
    """(code, detail) of an API error body."""
    try:
        entry = body["errors"][0]
        return str(entry.get("code", "")), str(entry.get("detail", ""))
    except (TypeError, KeyError, IndexError):
        return "", json.dumps(body)[:300] if body is not None else ""


class TrustedPoolsKeyManager(key_manager.KeyManager):
    """castellan ``KeyManager`` backed by trusted_pools' key service."""

    def __init__(self, configuration: cfg.ConfigOpts | None,
                 transport: Transport | None = None,
                 unwrapper: Unwrapper | None = None) -> None:
        self.conf = configuration or cfg.CONF
        self.conf.register_group(group)
        self.conf.register_opts(opts, group=group)
        settings = self.conf.trusted_pools_key_manager
        self.host = settings.host
        self._transport = transport
        self._unwrapper = unwrapper
        self._settings = settings
        self._session: Any = None

    # --- plumbing ---------------------------------------------------------

    def _http(self) -> Transport:
        if self._transport is None:
            endpoint = self._settings.api_endpoint
            if not endpoint:
                raise castellan_exception.KeyManagerError(
                    reason="[trusted_pools_key_manager] api_endpoint is not "
                    "set in this service's configuration")
            self._transport = http_transport(endpoint,
                                             self._settings.timeout,
                                             self._settings.cafile)
        return self._transport

    def _unwrap(self, ciphertext: bytes, label: bytes) -> bytes:
        if self._unwrapper is None:
            handle = int(self._settings.binding_key_handle, 16)
            self._unwrapper = tpm_unwrapper(self._settings.tcti, handle)
        return self._unwrapper(ciphertext, label)

    def _token(self, context: Any) -> str:
        """The Keystone token to call trusted-pools-api with: the request's
        own (Nova's 'user' and 'host' modes pass the user's context), or
        one from the context's auth plugin (Nova's 'deployment' mode
        passes its service user's context, which carries a keystoneauth
        plugin built from ``[service_user]`` and no token)."""
        if context is None:
            raise castellan_exception.Forbidden(
                "the trusted_pools key manager needs a request context "
                "with a Keystone token")
        token = getattr(context, "auth_token", None)
        plugin = getattr(context, "user_auth_plugin", None)
        if not token and plugin is not None:
            try:
                token = plugin.get_token(self._auth_session())
            except Exception as error:  # noqa: BLE001 - keystoneauth's
                raise castellan_exception.Forbidden(
                    "the request context's auth plugin gave no Keystone "
                    "token: %s" % error) from error
        if not token:
            raise castellan_exception.Forbidden(
                "the request context carries no Keystone token")
        return token

    def _auth_session(self) -> Any:
        """A keystoneauth1 session for the auth plugin of a service
        context to authenticate with (same TLS settings as the API's)."""
        if self._session is None:
            from keystoneauth1 import session as ks_session
            self._session = ks_session.Session(
                verify=self._settings.cafile or True,
                timeout=self._settings.timeout)
        return self._session

    def _call(self, context: Any, method: str, path: str,
              body: dict[str, Any] | None = None,
              object_id: str | None = None) -> Any:
        token = self._token(context)
        try:
            status, data = self._http()(method, path, token, body)
        except castellan_exception.CastellanException:
            raise
        except Exception as error:  # noqa: BLE001 - any transport failure
            raise castellan_exception.KeyManagerError(
                reason="trusted-pools-api is unreachable: %s" % error
            ) from error
        if status < 300:
            return data
        code, detail = _detail(data)
        if status == 404 and object_id is not None:
            raise castellan_exception.ManagedObjectNotFoundError(
                uuid=object_id)
        if status == 403 and code.endswith("key_release_refused"):
            raise KeyWithheld(reason=detail)
        if status in (401, 403):
            raise castellan_exception.Forbidden(
                "Forbidden: %s" % (detail or "trusted-pools-api refused "
                                   "the request (HTTP %d)" % status))
        raise castellan_exception.KeyManagerError(
            reason="trusted-pools-api answered HTTP %d: %s"
            % (status, detail or "no detail"))

    # --- castellan API ------------------------------------------------------

    def create_key(self, context: Any, algorithm: str = "AES",
                   length: int = 256, expiration: Any = None,
                   name: str | None = None, **kwargs: Any) -> str:
        """A random symmetric key of ``length`` bits, made here and stored
        (only ever released wrapped to an attested host's TPM)."""
        if not isinstance(length, int) or length <= 0 or length % 8 \
                or length > 8 * release.MAX_SECRET_SIZE:
            raise castellan_exception.KeyManagerError(
                reason="key length %r: a multiple of 8 bits up to %d"
                % (length, 8 * release.MAX_SECRET_SIZE))
        key = symmetric_key.SymmetricKey(algorithm, length,
                                         os.urandom(length // 8), name=name)
        return self.store(context, key, expiration=expiration, **kwargs)

    def create_key_pair(self, context: Any, algorithm: str, length: int,
                        expiration: Any = None, name: str | None = None
                        ) -> tuple[str, str]:
        raise _unsupported("key pairs")

    def store(self, context: Any, managed_object: Any,
              expiration: Any = None, **kwargs: Any) -> str:
        if expiration is not None:
            raise _unsupported("secret expiration")
        kind = next((k for k, cls in _TYPES.items()
                     if type(managed_object) is cls), None)
        if kind is None:
            raise _unsupported("objects of type %s"
                               % type(managed_object).__name__)
        value = managed_object.get_encoded()
        if not isinstance(value, bytes) or \
                not 1 <= len(value) <= release.MAX_SECRET_SIZE:
            raise castellan_exception.KeyManagerError(
                reason="a secret must be 1 to %d bytes"
                % release.MAX_SECRET_SIZE)
        # The host stores what it just made: the key service refuses it
        # unless this host may be given it (fail closed at first boot).
        body: dict[str, Any] = {
            "payload": base64.b64encode(value).decode("ascii"),
            "secret_type": kind, "host": self.host}
        if managed_object.name:
            body["name"] = managed_object.name[:255]
            # Nova names vTPM secrets "vTPM secret for instance <uuid>".
            body["owner"] = managed_object.name.rsplit(" ", 1)[-1][:255]
        if kind == "symmetric":
            body["algorithm"] = managed_object.algorithm
            body["bit_length"] = managed_object.bit_length
        data = self._call(context, "POST", "/v1/secrets", body)
        return data["secret"]["id"]

    def get(self, context: Any, managed_object_id: str,
            metadata_only: bool = False, **kwargs: Any
            ) -> managed_object.ManagedObject:
        """The secret, released to this host and unwrapped by its TPM
        (with ``metadata_only``: its description, no value)."""
        if not isinstance(managed_object_id, str) or not managed_object_id:
            raise castellan_exception.KeyManagerError(
                reason="a secret id is required")
        path = "/v1/secrets/%s" % managed_object_id
        if metadata_only:
            secret = self._call(context, "GET", path,
                                object_id=managed_object_id)["secret"]
            return self._object(secret, None)
        secret = self._call(context, "GET", path + "?host=" + self.host,
                            object_id=managed_object_id)["secret"]
        label = release.release_label(managed_object_id, self.host)
        try:
            value = release.unseal(
                self._unwrap,
                base64.b64decode(secret["wrapped"], validate=True),
                base64.b64decode(secret["ciphertext"], validate=True),
                label)
        except castellan_exception.CastellanException:
            raise
        except Exception as error:  # noqa: BLE001 - TPM or format error
            raise castellan_exception.KeyManagerError(
                reason="the secret %s released to %s does not unwrap in "
                "this host's TPM (%s): is [trusted_pools_key_manager] host "
                "this host's enrolled name?" % (managed_object_id,
                                                self.host, error)
            ) from error
        return self._object(secret, value)

    @staticmethod
    def _object(secret: dict[str, Any], value: bytes | None
                ) -> managed_object.ManagedObject:
        kind = secret.get("secret_type")
        if kind == "symmetric":
            obj = symmetric_key.SymmetricKey(
                secret.get("algorithm") or "AES",
                secret.get("bit_length") or 8 * len(value or b""), value,
                name=secret.get("name"), id=secret["id"])
        elif kind in _TYPES:
            obj = _TYPES[kind](value, name=secret.get("name"),
                               id=secret["id"])
        else:
            raise castellan_exception.UnknownManagedObjectTypeError(
                "unknown secret type %r" % kind)
        return obj

    def delete(self, context: Any, managed_object_id: str,
               force: bool = False) -> None:
        self._call(context, "DELETE", "/v1/secrets/%s" % managed_object_id,
                   object_id=managed_object_id)

    def add_consumer(self, context: Any, managed_object_id: str,
                     consumer_data: dict[str, str]) -> None:
        raise _unsupported("consumers")

    def remove_consumer(self, context: Any, managed_object_id: str,
                        consumer_data: dict[str, str]) -> None:
        raise _unsupported("consumers")

    def list(self, context: Any, object_type: Any = None,
             metadata_only: bool = False) -> list[Any]:
        raise _unsupported("listing secrets")

