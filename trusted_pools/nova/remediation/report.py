"""Reporting distrust actions to trusted-pools-api, so operators see them
on the dashboard and in ``GET /v1/distrust-actions``.

Why through the API: the actions run here, beside Nova, with Nova's
credentials; this service holds no database credentials and must not (a
Nova-side process with the verifier's database could rewrite verdicts and
policies). It reports with the Keystone user of ``[trusted_pools_distrust]`` (the
admin that may disable compute services), finding trusted-pools-api in
the service catalog: the API stores each record with the user that
reported it, under its own policy rule (admin; not the ``service`` role
that every compute host's Nova holds).

A report that cannot be delivered is logged and dropped: the actions
already happened and are in this service's log and in
:attr:`DistrustResponder.history`; reporting never holds them up.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

from keystoneauth1 import adapter as ks_adapter
from keystoneauth1 import exceptions as ks_exceptions
from oslo_config import cfg

from trusted_pools.common import keystone

__all__ = ["APIReporter", "MICROVERSION", "PATH"]

LOG = logging.getLogger(__name__)

PATH = "/v1/distrust-actions"
#: The API microversion that has ``POST /v1/distrust-actions``.
MICROVERSION = "1.4"
_SERVICE_TYPE = "trusted-pools"
_BATCH = 50


class APIReporter:
    """``reporter(event, records)``: POST the records to the API."""

    def __init__(self, adapter: ks_adapter.Adapter,
                 timeout: float = 10.0) -> None:
        self.adapter = adapter
        self.timeout = timeout

    @classmethod
    def from_conf(cls, conf: cfg.ConfigOpts, group: str
                  ) -> "APIReporter":
        """With ``[group]``'s session and auth (the distrust group's) and
        the catalog's trusted-pools endpoint (that group's
        ``endpoint_override`` is the compute API's, so it is not used)."""
        session, _ = keystone.session_from_conf(conf, group)
        section = conf[group]
        interfaces = list(section.valid_interfaces or [])
        return cls(ks_adapter.Adapter(
            session, service_type=_SERVICE_TYPE,
            interface=interfaces[0] if interfaces else None,
            region_name=section.region_name,
            default_microversion=MICROVERSION, raise_exc=False))

    def __call__(self, event: Any, records: Sequence[Any]) -> bool:
        """True when the API stored every record."""
        entries = [{"host": r.host, "action": r.action,
                    "outcome": r.outcome, "detail": r.detail[:2000],
                    "items": [[str(a)[:1000], str(b)[:1000]]
                              for a, b in r.items[:1000]],
                    "verdict": (event.jti or None) and event.jti[:64],
                    "status": event.status} for r in records]
        stored = True
        for start in range(0, len(entries), _BATCH):
            stored &= self._post(entries[start:start + _BATCH])
        return stored

    def _post(self, entries: list[dict[str, Any]]) -> bool:
        try:
            response = self.adapter.post(
                PATH, json={"actions": entries}, timeout=self.timeout,
                microversion=MICROVERSION)
        except ks_exceptions.ClientException as error:
            LOG.warning("Could not report %d distrust action(s) to "
                        "trusted-pools-api: %s: %s", len(entries),
                        type(error).__name__, error)
            return False
        if response.status_code != 201:
            LOG.warning("trusted-pools-api refused the report of %d "
                        "distrust action(s): HTTP %d %s", len(entries),
                        response.status_code, response.text[:300])
            return False
        return True
