"""Client side of the conductor RPC API.

Conductors listen on topic ``trusted_pools_conductor`` with their own name
as server. Operator requests for a host go to the conductor that owns it
(the caller's hash ring); agents push evidence to the conductor that
announced the epoch.

API version history:

* 1.0 - Initial version: enroll_host, attest_now, submit_evidence (cast),
  verdicts_since, get_public_keys, capture_policy, create_policy,
  assign_policy.
* 1.1 - enroll_host takes ek_sha256 (the operator's EK approval);
  reset_enrollment.
"""

from __future__ import annotations

from typing import Any

import oslo_messaging as messaging

from trusted_pools.common import rpc

TOPIC = "trusted_pools_conductor"
RPC_API_VERSION = "1.1"


class ConductorAPI:

    def __init__(self, timeout: float | None = None,
                 version_cap: str | None = None) -> None:
        target = messaging.Target(topic=TOPIC, version="1.0")
        self.client = rpc.get_client(target, version_cap=version_cap
                                     or RPC_API_VERSION, timeout=timeout)

    def _prepare(self, conductor: str | None, version: str = "1.0"):
        if conductor is None:
            return self.client.prepare(version=version)
        return self.client.prepare(server=conductor, version=version)

    def enroll_host(self, context: dict, host: str, group: str = "default",
                    conductor: str | None = None,
                    ek_sha256: str | None = None) -> dict[str, Any]:
        if ek_sha256 is None:
            return self._prepare(conductor).call(context, "enroll_host",
                                                 host=host, group=group)
        return self._prepare(conductor, "1.1").call(
            context, "enroll_host", host=host, group=group,
            ek_sha256=ek_sha256)

    def reset_enrollment(self, context: dict, host: str,
                         conductor: str | None = None) -> dict[str, Any]:
        return self._prepare(conductor, "1.1").call(
            context, "reset_enrollment", host=host)

    def attest_now(self, context: dict, host: str,
                   conductor: str | None = None) -> dict[str, Any]:
        return self._prepare(conductor).call(context, "attest_now",
                                             host=host)

    def capture_policy(self, context: dict, host: str,
                       conductor: str | None = None) -> dict[str, Any]:
        return self._prepare(conductor).call(context, "capture_policy",
                                             host=host)

    def submit_evidence(self, context: dict, conductor: str,
                        evidence: dict[str, Any]) -> None:
        self._prepare(conductor).cast(context, "submit_evidence",
                                      evidence=evidence)

    def verdicts_since(self, context: dict, since: float,
                       conductor: str | None = None) -> list[dict[str, Any]]:
        return self._prepare(conductor).call(context, "verdicts_since",
                                             since=since)

    def get_public_keys(self, context: dict, conductor: str | None = None
                        ) -> dict[str, str]:
        return self._prepare(conductor).call(context, "get_public_keys")

    def create_policy(self, context: dict, name: str, kind: str,
                      body: dict[str, Any], created_by: str = "operator",
                      conductor: str | None = None) -> dict[str, Any]:
        return self._prepare(conductor).call(
            context, "create_policy", name=name, kind=kind, body=body,
            created_by=created_by)

    def assign_policy(self, context: dict, group: str, name: str,
                      version: int | None = None,
                      conductor: str | None = None) -> None:
        self._prepare(conductor).call(context, "assign_policy", group=group,
                                      name=name, version=version)
