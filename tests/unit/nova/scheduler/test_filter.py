"""TrustedHostFilter on real Nova HostState and RequestSpec objects, alone
and through Nova's HostFilterHandler beside Nova's default filters."""

from __future__ import annotations

import logging
import time

import pytest

from tests import nova_harness as nh
from trusted_pools.nova.scheduler.cache import VerdictCache
from trusted_pools.nova.scheduler.filters import TrustedHostFilter

TRUST = {"trust:trusted_host": "required"}


@pytest.fixture
def factory() -> nh.VerdictFactory:
    return nh.VerdictFactory()


@pytest.fixture
def cache(factory) -> VerdictCache:
    cache = VerdictCache(factory.public_keys, max_age=120, grace=60)
    cache.mark_contact()
    now = int(time.time())
    cache.admit(factory.token("good-4", level=4, issued_at=now))
    cache.admit(factory.token("good-2", level=2, issued_at=now))
    cache.admit(factory.token("bad", status="untrusted", issued_at=now))
    cache.admit(factory.token("gone", status="unknown", issued_at=now))
    return cache


@pytest.fixture
def hosts():
    return [nh.host_state(name) for name in
            ("good-4", "good-2", "bad", "gone", "never-seen")]


@pytest.fixture
def trust_filter(cache) -> TrustedHostFilter:
    return TrustedHostFilter(cache=cache)


def passing(flt, hosts, spec):
    return nh.names(h for h in hosts if flt.host_passes(h, spec))


def test_plain_request_is_never_affected(trust_filter, hosts):
    spec = nh.request_spec({"hw:cpu_policy": "shared"})
    assert passing(trust_filter, hosts, spec) == nh.names(hosts)
    assert list(trust_filter.filter_all(hosts, spec)) == hosts


def test_required_passes_trusted_hosts_only(trust_filter, hosts):
    spec = nh.request_spec(TRUST)
    assert passing(trust_filter, hosts, spec) == ["good-2", "good-4"]
    assert nh.names(trust_filter.filter_all(hosts, spec)) == [
        "good-2", "good-4"]


def test_min_level(trust_filter, hosts):
    spec = nh.request_spec({"trust:min_level": "3"})
    assert passing(trust_filter, hosts, spec) == ["good-4"]


def test_image_trait(trust_filter, hosts):
    spec = nh.request_spec({}, {
        "trait:CUSTOM_TRUSTED_POOLS_LOA_4": "required"})
    assert passing(trust_filter, hosts, spec) == ["good-4"]


def test_invalid_spec_refuses_every_host(trust_filter, hosts, caplog):
    spec = nh.request_spec({"trust:min_level": "9"})
    with caplog.at_level(logging.ERROR):
        assert passing(trust_filter, hosts, spec) == []
    assert "invalid" in caplog.text


def test_request_max_age(factory, hosts):
    cache = VerdictCache(factory.public_keys, max_age=120)
    cache.mark_contact()
    cache.admit(factory.token("good-4", issued_at=int(time.time())))
    flt = TrustedHostFilter(cache=cache)
    time.sleep(1.1)
    cache.mark_contact()
    assert passing(flt, hosts, nh.request_spec(TRUST)) == ["good-4"]
    assert passing(flt, hosts, nh.request_spec(
        {"trust:max_age": "1"})) == []


def test_nodename_key(factory, cache, hosts):
    from oslo_config import cfg
    conf = cfg.ConfigOpts()
    conf([], project="test")
    from trusted_pools.nova.scheduler import opts
    opts.register_opts(conf)
    conf.set_override("host_key", "nodename", group=opts.group.name)
    flt = TrustedHostFilter(cache=cache, conf=conf)
    state = nh.host_state("service-host", node="good-4")
    assert flt.host_passes(state, nh.request_spec(TRUST))
    default = TrustedHostFilter(cache=cache)
    assert not default.host_passes(state, nh.request_spec(TRUST))


def test_refusals_are_logged_with_reasons(trust_filter, hosts, caplog):
    with caplog.at_level(logging.INFO,
                         logger="trusted_pools.nova.scheduler.filters"):
        list(trust_filter.filter_all(hosts, nh.request_spec(
            {"trust:min_level": "3"})))
    text = caplog.text
    assert "refused 4 host(s)" in text
    assert "good-2: level 2 is below the required 3" in text
    assert "bad: verdict is untrusted (PCR 4: kernel digest" in text
    assert "gone: verdict is unknown" in text
    assert "never-seen: no verdict received" in text


def test_lost_contact_refuses_every_host(factory, hosts, caplog):
    cache = VerdictCache(factory.public_keys, grace=1)
    cache.admit(factory.token("good-4", issued_at=int(time.time())))
    flt = TrustedHostFilter(cache=cache)
    with caplog.at_level(logging.WARNING):
        assert passing(flt, hosts, nh.request_spec(TRUST)) == []
    assert "no contact with the conductor yet" in caplog.text


def test_filter_properties():
    assert TrustedHostFilter.RUN_ON_REBUILD is True
    assert TrustedHostFilter(cache=VerdictCache({})).run_filter_for_index(3)


def test_among_nova_default_filters(trust_filter, hosts):
    """Through Nova's own HostFilterHandler with its default filters."""
    from nova.scheduler import filters
    from nova.scheduler.filters import compute_capabilities_filter as ccf
    from nova.scheduler.filters import compute_filter as cf
    from nova.scheduler.filters import image_props_filter as ipf
    chain = [cf.ComputeFilter(), ccf.ComputeCapabilitiesFilter(),
             ipf.ImagePropertiesFilter(), trust_filter]
    handler = filters.HostFilterHandler()
    trusted = handler.get_filtered_objects(
        chain, hosts, nh.request_spec(TRUST))
    assert nh.names(trusted) == ["good-2", "good-4"]
    plain = handler.get_filtered_objects(chain, hosts, nh.request_spec())
    assert nh.names(plain) == nh.names(hosts)
    # A host Nova's own filter refuses stays refused.
    hosts[0].service.disabled = True
    assert nh.names(handler.get_filtered_objects(
        chain, hosts, nh.request_spec(TRUST))) == ["good-2"]


VTPM = {"hw:tpm_version": "2.0", "hw:tpm_model": "tpm-crb"}


def test_vtpm_request_needs_a_trusted_host_by_default(cache, hosts):
    """A vTPM flavor without trust specs: only trusted hosts pass (the
    trusted_pools key manager releases the vTPM's key to no other)."""
    flt = TrustedHostFilter(cache=cache)
    spec = nh.request_spec(VTPM)
    assert passing(flt, hosts, spec) == ["good-2", "good-4"]
    assert nh.names(flt.filter_all(hosts, spec)) == ["good-2", "good-4"]
    # The same from the image's properties.
    spec = nh.request_spec(image_properties={"hw_tpm_version": "2.0",
                                             "hw_tpm_model": "tpm-tis"})
    assert passing(flt, hosts, spec) == ["good-2", "good-4"]
    # A flavor's own trust:min_level still decides the level.
    spec = nh.request_spec(dict(VTPM, **{"trust:min_level": "4"}))
    assert passing(flt, hosts, spec) == ["good-4"]


def test_contradictory_vtpm_request_fails_closed(cache, hosts):
    """Nova finds the vTPM settings invalid (CRB with TPM 1.2): counted
    as a vTPM request, so only trusted hosts pass. A model without a
    version is no vTPM for Nova, and none here."""
    flt = TrustedHostFilter(cache=cache)
    spec = nh.request_spec({"hw:tpm_version": "1.2",
                            "hw:tpm_model": "tpm-crb"})
    assert passing(flt, hosts, spec) == ["good-2", "good-4"]
    spec = nh.request_spec({"hw:tpm_model": "tpm-crb"})
    assert passing(flt, hosts, spec) == nh.names(hosts)


def test_vtpm_requires_trust_off_leaves_vtpm_requests_alone(cache, hosts):
    from oslo_config import cfg
    from trusted_pools.nova.scheduler import opts as scheduler_conf
    conf = cfg.ConfigOpts()
    scheduler_conf.register_opts(conf)
    conf([], default_config_files=[])
    conf.set_override("vtpm_requires_trust", False,
                      group=scheduler_conf.group.name)
    flt = TrustedHostFilter(cache=cache, conf=conf)
    assert passing(flt, hosts, nh.request_spec(VTPM)) == nh.names(hosts)
    assert passing(flt, hosts, nh.request_spec(TRUST)) == ["good-2",
                                                           "good-4"]
