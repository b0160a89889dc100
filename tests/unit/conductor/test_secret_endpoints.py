"""The key service's endpoints declare the answers that are decisions: a
refused release (the host is not trusted enough) and an unknown secret
reach the caller as themselves, and the RPC server does not log them as
errors with a traceback (oslo.messaging logs only undeclared
exceptions). A fault of the key service itself stays undeclared."""

from __future__ import annotations

import oslo_messaging as messaging
import pytest

from trusted_pools import exception
from trusted_pools.conductor.endpoints import ManagementEndpoint


class RaisingManager:
    def __init__(self, error: Exception) -> None:
        self.error = error

    def release_secret(self, context, secret_id, host):
        raise self.error

    def store_secret(self, context, project_id, payload, secret_type,
                     **kwargs):
        raise self.error

    def delete_secret(self, context, secret_id):
        raise self.error


def _calls(endpoint):
    return [lambda: endpoint.release_secret({}, "s-1", "compute-03"),
            lambda: endpoint.store_secret({}, "p", "AAAA", "passphrase",
                                          host="compute-03"),
            lambda: endpoint.delete_secret({}, "s-1")]


@pytest.mark.parametrize("error", [
    exception.KeyReleaseRefused(host="compute-03", status="untrusted",
                                reason="PCR 4 not allowed"),
    exception.SecretNotFound(secret="s-1"),
])
def test_decisions_are_declared(error):
    for call in _calls(ManagementEndpoint(RaisingManager(error))):
        with pytest.raises(messaging.ExpectedException) as raised:
            call()
        assert raised.value.exc_info[1] is error


def test_a_key_service_fault_is_not_declared():
    fault = exception.SecretUndecryptable(secret="s-1", reason="bad tag")
    for call in _calls(ManagementEndpoint(RaisingManager(fault))):
        with pytest.raises(exception.SecretUndecryptable):
            call()
