"""The distrust reporter's configuration: the distrust group's user, the
catalog's trusted-pools endpoint (never the compute endpoint override),
and a service that starts without credentials says so and runs on."""

from __future__ import annotations

from oslo_config import cfg

from trusted_pools.conf import placement as placement_conf
from trusted_pools.nova.remediation import report
from trusted_pools.nova.remediation import service

def _conf(**distrust) -> cfg.ConfigOpts:
    conf = cfg.ConfigOpts()
    placement_conf.register_opts(conf)
    conf([], project="trusted-pools")
    for name, value in distrust.items():
        conf.set_override(name, value, group="trusted_pools_distrust")
    return conf

def test_reporter_uses_the_catalog_not_the_compute_override(monkeypatch):
    from keystoneauth1 import session as ks_session
    from trusted_pools.common import keystone
    asked = []

    def session_from_conf(conf, group):
        asked.append(group)
        return ks_session.Session(), None

    monkeypatch.setattr(keystone, "session_from_conf", session_from_conf)
    conf = _conf(endpoint_override="http://nova:8774")
    reporter = report.APIReporter.from_conf(conf, "trusted_pools_distrust")
    assert asked == ["trusted_pools_distrust"]
    assert reporter.adapter.service_type == "trusted-pools"
    assert reporter.adapter.endpoint_override is None
    assert reporter.adapter.default_microversion == "1.4"

def test_off_means_no_reporter():
    assert service.PlacementSyncService._reporter(
        _conf(report_actions=False)) is None
