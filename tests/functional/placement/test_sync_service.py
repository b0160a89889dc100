"""``PlacementSyncService`` in-process on the oslo.service base: its job
table (verdict refresh, trait sweep, full resync) on the configured
spacings, against a real Placement and RabbitMQ, and a stop that returns
once the rounds in flight are done."""

from __future__ import annotations

import time

import pytest
from keystoneauth1 import loading as ks_loading

from tests.nova_harness import VerdictFactory
from tests.placement_fixture import PlacementServer
from trusted_pools.conf import placement as placement_conf
from trusted_pools.nova.remediation.service import PlacementSyncService
from trusted_pools.nova.scheduler import opts as scheduler_conf

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow]


def test_service_runs_its_job_table_and_stops(rabbit_conf, rabbit_url,
                                              tmp_path):
    conf = rabbit_conf
    key_file = tmp_path / "conductor-key.pem"
    key_file.write_text(VerdictFactory().public_pem)
    for register, group in ((placement_conf.register_opts,
                             placement_conf.group.name),
                            (scheduler_conf.register_opts,
                             scheduler_conf.group.name)):
        if group not in conf:
            register(conf)
    place = placement_conf.group.name
    sched = scheduler_conf.group.name
    conf.register_opts(ks_loading.get_auth_plugin_conf_options(
        "admin_token"), group=place)
    overrides = {
        (sched, "conductor_public_keys"): [str(key_file)],
        (sched, "transport_url"): rabbit_url,
        (sched, "control_exchange"): conf.control_exchange,
        (sched, "refresh_interval"): 2, (sched, "rpc_timeout"): 1,
        (place, "sweep_interval"): 1, (place, "resync_interval"): 3,
        (place, "auth_type"): "admin_token", (place, "token"): "admin",
    }
    with PlacementServer() as placement:
        overrides[(place, "endpoint")] = placement.endpoint
        overrides[(place, "endpoint_override")] = placement.endpoint
        for (group, name), value in overrides.items():
            conf.set_override(name, value, group=group)
        try:
            service = PlacementSyncService(conf)
            service.start()
            try:
                assert service.jobs.spacings == {
                    "verdict-refresh": 2.0, "trait-sweep": 1.0,
                    "trait-resync": 3.0}
                resyncs = []
                real = service.keeper.resync
                service.keeper.resync = lambda: resyncs.append(real())
                deadline = time.monotonic() + 15
                while not resyncs and time.monotonic() < deadline:
                    time.sleep(0.1)
                # The periodic resync reached the real Placement.
                assert resyncs and resyncs[0].failed == ()
            finally:
                began = time.monotonic()
                service.stop()
                assert time.monotonic() - began < 15
                service.wait()     # returns: oslo.service sees it stopped
        finally:
            for group, name in overrides:
                conf.clear_override(name, group=group)
