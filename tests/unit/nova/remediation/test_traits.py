"""Trait keeper decisions and the Placement client's conflict loop, with
an in-memory stand-in for Placement (the real one is in the functional
tests)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tests.nova_harness import VerdictFactory
from trusted_pools import exception
from trusted_pools.nova.remediation import traits as sync
from trusted_pools.nova.remediation.placement import (PlacementClient,
                                                      ProviderTraits,
                                                      ResourceProvider)
from trusted_pools.nova.scheduler.extra_specs import requirement_from_specs

T0 = 1_750_000_000


class MemoryPlacement(PlacementClient):
    """PlacementClient whose HTTP layer is a dict, with generations."""

    def __init__(self, **kw) -> None:
        super().__init__(adapter=None, **kw)
        self.rps: dict[str, list] = {}      # uuid -> [name, gen, traits]
        self.puts = 0

    def providers(self, required_any=None, name=None):
        return [ResourceProvider(u, n, g) for u, (n, g, t) in
                self.rps.items() if (name is None or n == name)
                and (required_any is None or t & set(required_any))]

    def ensure_traits(self, names):
        pass

    def get_traits(self, provider):
        _, gen, traits = self.rps[provider]
        return ProviderTraits(frozenset(traits), gen)

    def put_traits(self, provider, traits, generation):
        rp = self.rps[provider]
        if rp[1] != generation:
            return None
        self.puts += 1
        rp[1] += 1
        rp[2] = set(traits)
        return ProviderTraits(frozenset(traits), rp[1])


class Clock:
    wall, mono = float(T0), 100.0


@pytest.fixture
def world():
    factory = VerdictFactory()
    clock = Clock()
    cache = sync.ObservedVerdictCache(
        factory.public_keys, max_age=60, grace=600,
        wall=lambda: clock.wall, monotonic=lambda: clock.mono)
    cache.mark_contact()
    placement = MemoryPlacement()
    placement.rps["u1"] = ["h1", 0, {"HW_CPU_X86_SSE"}]
    keeper = sync.TraitKeeper(cache, placement)
    return factory, clock, cache, placement, keeper


@pytest.mark.parametrize("level", [0, 1, 2, 3, 4])
def test_traits_are_cumulative_so_a_level_trait_means_at_least(level):
    traits = sync.traits_for_level(level)
    assert len(traits) == (level + 1 if level else 0)
    # Whatever level a flavor asks for by trait, Placement's set
    # membership matches exactly the hosts at that level or above.
    for asked in range(1, 5):
        spec = {"trait:CUSTOM_TRUSTED_POOLS_LOA_%d" % asked: "required"}
        wanted = requirement_from_specs(spec).min_level
        assert ("CUSTOM_TRUSTED_POOLS_LOA_%d" % asked in traits) == (
            level >= wanted)


@pytest.mark.parametrize("bad", [-1, 5, True, "3", 2.0])
def test_traits_for_bad_level(bad):
    with pytest.raises(exception.InvalidParameterValue):
        sync.traits_for_level(bad)


def test_desired_follows_the_cache(world):
    factory, clock, cache, placement, keeper = world
    assert keeper.desired("h1") == frozenset()
    cache.admit(factory.token("h1", level=2, issued_at=T0))
    assert keeper.desired("h1") == sync.traits_for_level(2)
    clock.mono += 61                          # stale by local receive time
    assert keeper.desired("h1") == frozenset()


def test_sync_keeps_foreign_traits_and_is_idempotent(world):
    factory, clock, cache, placement, keeper = world
    cache.admit(factory.token("h1", level=3, issued_at=T0))
    record = keeper.sync_host("h1")
    assert record.outcome == "updated"
    assert placement.rps["u1"][2] == {"HW_CPU_X86_SSE"} | set(
        sync.traits_for_level(3))
    assert keeper.sync_host("h1").outcome == "unchanged"
    assert placement.puts == 1


def test_observer_sees_only_verified_verdicts(world):
    factory, clock, cache, placement, keeper = world
    seen = []
    cache.add_observer(seen.append)
    with pytest.raises(exception.SignedResultError):
        cache.admit(VerdictFactory().token("h1", issued_at=T0))
    assert seen == []
    cache.admit(factory.token("h1", issued_at=T0))
    assert [v.host for v in seen] == ["h1"]


def test_observer_failure_does_not_break_admission(world):
    factory, clock, cache, placement, keeper = world

    def broken(_verdict):
        raise RuntimeError("boom")

    cache.add_observer(broken)
    cache.admit(factory.token("h1", issued_at=T0))
    assert cache.get("h1") is not None


def test_sweep_removes_stale_traits_only_where_needed(world):
    factory, clock, cache, placement, keeper = world
    placement.rps["u2"] = ["h2", 0, set()]
    cache.admit(factory.token("h1", level=1, issued_at=T0))
    keeper.sync_host("h1")
    assert keeper.sweep() == []
    clock.mono += 61
    (record,) = keeper.sweep()
    assert record.host == "h1" and "stale" in record.reason
    assert placement.rps["u1"][2] == {"HW_CPU_X86_SSE"}


def test_update_traits_conflict_bound():
    placement = MemoryPlacement(conflict_retries=1)
    placement.rps["u"] = ["h", 0, set()]
    real_get = placement.get_traits

    def racing(provider):
        read = real_get(provider)
        placement.rps[provider][1] += 1       # someone else wrote
        return read

    placement.get_traits = racing
    with pytest.raises(exception.ConcurrentUpdate):
        placement.update_traits("u", add={"CUSTOM_X"})
    with pytest.raises(exception.InvalidParameterValue):
        placement.update_traits("u", add={"CUSTOM_X"}, remove={"CUSTOM_X"})


def test_conf_options_register_and_validate():
    """In a child interpreter: importing ``trusted_pools.conf`` registers
    every project option on the global CONF, which collides with Nova's
    options in the scheduler tests of the same session."""
    code = textwrap.dedent("""
        from oslo_config import cfg
        from trusted_pools.conf import placement as placement_conf
        conf = cfg.ConfigOpts()
        placement_conf.register_opts(conf)
        conf([])
        assert conf.trusted_pools_placement.microversion == "1.39"
        assert conf.trusted_pools_distrust.actions == ["notify"]
        for group, name, value in (("trusted_pools_distrust", "actions", ["reboot"]),
                                   ("trusted_pools_distrust", "compute_microversion",
                                    "2.1"),
                                   ("trusted_pools_placement", "microversion", "1.20")):
            try:
                conf.set_override(name, value, group=group)
            except ValueError:
                continue
            raise SystemExit("accepted %s=%r" % (name, value))
        groups = {g.name for g, _ in placement_conf.list_opts()}
        assert groups == {"trusted_pools_placement", "trusted_pools_distrust"}, groups
        print("OK")
    """)
    child = subprocess.run([sys.executable, "-W", "ignore", "-c", code],
                           capture_output=True, text=True, timeout=60)
    assert child.returncode == 0 and child.stdout.strip() == "OK", (
        child.stdout + child.stderr)[-2000:]
