"""DistrustResponder: only verified trusted -> not trusted transitions,
once each; actions load by name and report their outcome."""

from __future__ import annotations

import time

import pytest

from tests.nova_harness import VerdictFactory
from trusted_pools import exception
from trusted_pools.nova.remediation import distrust
from trusted_pools.nova.remediation.traits import ObservedVerdictCache


class Recording(distrust.DistrustAction):
    name = "recording"

    def __init__(self) -> None:
        self.events: list[distrust.DistrustEvent] = []

    def __call__(self, event):
        self.events.append(event)
        return distrust.ActionRecord(self.name, event.host, "done", "ok")


class Crashing(distrust.DistrustAction):
    name = "crashing"

    def __call__(self, event):
        raise RuntimeError("bug")


@pytest.fixture
def setup():
    factory = VerdictFactory()
    cache = ObservedVerdictCache(factory.public_keys)
    cache.mark_contact()
    action = Recording()
    responder = distrust.DistrustResponder(cache, [action])
    cache.add_observer(responder.observe)
    base = int(time.time()) - 600
    clock = iter(range(base, base + 500))

    def send(host, status="trusted", level=3):
        return cache.admit(factory.token(host, status=status, level=level,
                                         issued_at=next(clock),
                                         validity=3600))
    return factory, cache, action, responder, send


@pytest.mark.parametrize("sequence,acts", [
    (["trusted", "untrusted"], 1),
    (["trusted", "unknown"], 1),
    (["untrusted"], 0),                               # no "before"
    (["unknown", "untrusted"], 0),
    (["trusted", "trusted"], 0),
    (["trusted", "untrusted", "untrusted", "unknown"], 1),  # idempotent
    (["trusted", "untrusted", "trusted", "untrusted"], 2),  # re-armed
])
def test_only_transitions_act(setup, sequence, acts):
    factory, cache, action, responder, send = setup
    for status in sequence:
        send("h1", status)
    assert len(action.events) == acts
    assert len(responder.history) == acts
    for event in action.events:
        assert event.previous_level == 3 and event.status != "trusted"


def test_older_verdict_arriving_late_does_not_act(setup):
    factory, cache, action, responder, send = setup
    send("h1", "trusted")
    late = factory.token("h1", status="untrusted",
                         issued_at=int(time.time()) - 3000,
                         validity=3600)
    cache.admit(late)                           # kept: the newer trusted one
    assert action.events == []


def test_unverified_results_never_act(setup):
    factory, cache, action, responder, send = setup
    send("h1", "trusted")
    forged = VerdictFactory().token("h1", status="untrusted",
                                    issued_at=int(time.time()), validity=3600)
    with pytest.raises(exception.ResultKeyUnknown):
        cache.admit(forged)
    assert action.events == []


def test_crashing_action_is_a_failed_record(setup):
    factory, cache, action, responder, send = setup
    responder.actions.insert(0, Crashing())
    send("h1", "trusted")
    send("h1", "untrusted")
    assert [(r.action, r.outcome) for r in responder.history] == [
        ("crashing", "failed"), ("recording", "done")]


def test_background_worker(setup):
    factory, cache, action, _, send = setup
    responder = distrust.DistrustResponder(cache, [action], background=True)
    cache.add_observer(responder.observe)
    send("h2", "trusted")
    send("h2", "untrusted")
    responder.wait_idle()
    responder.stop()
    assert [e.host for e in action.events] == ["h2", "h2"]  # both responders


def test_load_actions():
    (notify,) = distrust.load_actions(["notify"])
    assert isinstance(notify, distrust.NotifyAction)
    with pytest.raises(exception.ConfigInvalid, match="no action named"):
        distrust.load_actions(["reboot"])
    with pytest.raises(exception.ConfigInvalid, match="disable_compute"):
        distrust.load_actions(["disable_compute"])      # no compute API


@pytest.mark.parametrize("specs,moves", [
    ({"trust:trusted_host": "required"}, True),
    ({"trust:min_level": "9"}, True),               # invalid still asks
    ({"trait:CUSTOM_TRUSTED_POOLS_TRUSTED": "required"}, True),
    ({"hw:cpu_policy": "dedicated"}, False),
    ({}, False),
    (None, True),                                   # unreadable: move it
])
def test_requires_trust(specs, moves):
    server = {"flavor": {"extra_specs": specs}} if specs is not None \
        else {"flavor": {"original_name": "x"}}
    assert distrust.requires_trust(server) is moves


def test_notify_with_a_notifier():
    class Notifier:
        def __init__(self):
            self.sent = []

        def warn(self, ctxt, event_type, payload):
            self.sent.append((event_type, payload))

    notifier = Notifier()
    event = distrust.DistrustEvent("h1", "untrusted", 1, 3, ("PCR 4",), 10,
                                   "jti-1")
    record = distrust.NotifyAction(notifier=notifier)(event)
    assert record.outcome == "done"
    assert notifier.sent == [(distrust.DISTRUST_EVENT, {
        "host": "h1", "status": "untrusted", "level": 1,
        "previous_level": 3, "reasons": ["PCR 4"], "verdict": "jti-1"})]


class FailingOnce(distrust.DistrustAction):
    """A compute API that is away the first time."""

    name = "failing-once"

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, event):
        self.calls += 1
        outcome = "failed" if self.calls == 1 else "done"
        return distrust.ActionRecord(self.name, event.host, outcome, "")


def test_a_failed_action_runs_again_on_the_next_distrust_verdict(setup):
    factory, cache, action, responder, send = setup
    flaky = FailingOnce()
    responder.actions.insert(0, flaky)
    send("h1", "trusted")
    send("h1", "untrusted")
    assert (flaky.calls, len(action.events)) == (1, 1)
    send("h1", "untrusted")      # only the failed action runs again
    assert (flaky.calls, len(action.events)) == (2, 1)
    assert responder.history[-1].outcome == "done"
    assert action.events[0].previous_level == 3
    send("h1", "unknown")        # it succeeded: nothing pending any more
    assert flaky.calls == 2


def test_a_host_trusted_again_drops_what_was_pending(setup):
    factory, cache, action, responder, send = setup
    flaky = FailingOnce()
    responder.actions.insert(0, flaky)
    send("h1", "trusted")
    send("h1", "untrusted")
    send("h1", "trusted")
    assert flaky.calls == 1
    send("h1", "untrusted")      # a new distrust: everything runs
    assert (flaky.calls, len(action.events)) == (2, 2)


def test_compute_api_from_conf_uses_the_distrust_group():
    """openstacksdk's connection is built on [trusted_pools_distrust]'s
    keystoneauth options: its endpoint and microversion, no catalog."""
    from oslo_config import cfg
    from trusted_pools.conf import placement as placement_conf

    conf = cfg.ConfigOpts()
    placement_conf.register_opts(conf)
    conf([], project="trusted-pools-test")
    group = placement_conf.distrust_group.name
    conf.set_override("auth_type", "admin_token", group=group)
    conf.set_override("endpoint_override", "http://nova.example:8774/v2.1",
                      group=group)
    conf.set_override("compute_microversion", "2.60", group=group)
    # admin_token's own options exist once the plugin is chosen.
    from keystoneauth1 import loading as ks_loading
    conf.register_opts(ks_loading.get_auth_plugin_conf_options(
        "admin_token"), group=group)
    conf.set_override("endpoint", "http://nova.example:8774/v2.1",
                      group=group)
    conf.set_override("token", "secret", group=group)
    api = distrust.ComputeAPI.from_conf(conf)
    # The region's settings (creating the compute proxy would already
    # fetch Nova's version document).
    region = api.connection.config
    assert region.get_endpoint("compute") == "http://nova.example:8774/v2.1"
    assert region.get_default_microversion("compute") == "2.60"
    assert api.session.auth.get_token(api.session) == "secret"
