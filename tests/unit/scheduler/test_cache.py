"""VerdictCache: verify once at arrival, decide by local receive time,
fail closed."""

from __future__ import annotations

import logging
import threading

import pytest

from tests.nova_harness import VerdictFactory
from trusted_pools import exception
from trusted_pools.scheduler.cache import VerdictCache
from trusted_pools.scheduler.listener import TrustNotificationEndpoint

T0 = 1_750_000_000


class Clocks:
    def __init__(self) -> None:
        self.wall = float(T0)
        self.mono = 1000.0

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


@pytest.fixture
def factory() -> VerdictFactory:
    return VerdictFactory()


@pytest.fixture
def clocks() -> Clocks:
    return Clocks()


def make_cache(factory: VerdictFactory, clocks: Clocks, **kw) -> VerdictCache:
    cache = VerdictCache(factory.public_keys, wall=lambda: clocks.wall,
                         monotonic=lambda: clocks.mono, **kw)
    cache.mark_contact()
    return cache


def test_trusted_verdict_passes(factory, clocks):
    cache = make_cache(factory, clocks)
    cache.admit(factory.token("h1", level=3, issued_at=T0))
    assert cache.is_trusted("h1", 3)
    assert not cache.is_trusted("h1", 4)            # level too low
    assert not cache.is_trusted("h2", 1)            # unknown host


@pytest.mark.parametrize("status", ["untrusted", "unknown"])
def test_not_trusted_statuses_fail(factory, clocks, status):
    cache = make_cache(factory, clocks)
    cache.admit(factory.token("h1", status=status, issued_at=T0))
    assert not cache.is_trusted("h1", 1)
    assert status in cache.explain("h1", 1, 100, clocks.mono)


def test_freshness_is_local_receive_time(factory, clocks):
    """A verdict issued long ago (conductor clock) but just received is
    fresh; one received max_age ago is stale however young it claims."""
    cache = make_cache(factory, clocks, max_age=60)
    cache.admit(factory.token("h1", issued_at=T0 - 200, validity=1000))
    assert cache.is_trusted("h1", 1)
    clocks.advance(61)
    cache.mark_contact()
    assert not cache.is_trusted("h1", 1)
    assert "stale" in cache.explain("h1", 1, 60, clocks.mono)


def test_request_max_age_only_tightens(factory, clocks):
    cache = make_cache(factory, clocks, max_age=60)
    cache.admit(factory.token("h1", issued_at=T0))
    clocks.advance(30)
    cache.mark_contact()
    assert not cache.is_trusted("h1", 1, max_age=10)
    assert cache.is_trusted("h1", 1, max_age=3600)
    clocks.advance(31)
    cache.mark_contact()
    assert not cache.is_trusted("h1", 1, max_age=3600)


def test_expiry_still_applies(factory, clocks):
    cache = make_cache(factory, clocks, max_age=3600, leeway=0)
    cache.admit(factory.token("h1", issued_at=T0, validity=20))
    clocks.advance(19)
    assert cache.is_trusted("h1", 1)
    clocks.advance(1)
    assert not cache.is_trusted("h1", 1)
    assert "expired" in cache.explain("h1", 1, 3600, clocks.mono)


def test_expired_token_refused_at_arrival(factory, clocks):
    cache = make_cache(factory, clocks, leeway=0)
    with pytest.raises(exception.ResultExpired):
        cache.admit(factory.token("h1", issued_at=T0 - 100, validity=50))
    assert cache.get("h1") is None


def test_bad_signature_refused_nothing_admitted(factory, clocks):
    cache = make_cache(factory, clocks)
    token = factory.token("h1", issued_at=T0)
    head, payload, sig = token.split(".")
    flipped = sig[:10] + ("A" if sig[10] != "A" else "B") + sig[11:]
    with pytest.raises(exception.ResultSignatureInvalid):
        cache.admit(".".join((head, payload, flipped)))
    assert len(cache) == 0


def test_unknown_kid_refused(factory, clocks):
    cache = make_cache(factory, clocks)
    other = VerdictFactory(issuer="rogue")
    with pytest.raises(exception.ResultKeyUnknown):
        cache.admit(other.token("h1", issued_at=T0))
    assert not cache.is_trusted("h1", 1)


def test_older_verdict_never_replaces_newer(factory, clocks):
    cache = make_cache(factory, clocks)
    old_trusted = factory.token("h1", issued_at=T0 - 10)
    cache.admit(factory.token("h1", status="untrusted", issued_at=T0))
    cache.admit(old_trusted)            # late refresh or replay
    assert not cache.is_trusted("h1", 1)


def test_same_second_less_trusting_wins(factory, clocks):
    cache = make_cache(factory, clocks)
    cache.admit(factory.token("h1", status="untrusted", issued_at=T0))
    cache.admit(factory.token("h1", level=4, issued_at=T0))
    assert not cache.is_trusted("h1", 1)


def test_replayed_token_keeps_first_receive_time(factory, clocks):
    cache = make_cache(factory, clocks, max_age=60)
    token = factory.token("h1", issued_at=T0, validity=1000)
    cache.admit(token)
    clocks.advance(50)
    cache.admit(token)                  # replayed: must not look younger
    clocks.advance(20)
    cache.mark_contact()
    assert not cache.is_trusted("h1", 1)
    assert cache.knows_token("h1", token)


def test_no_contact_past_grace_fails_every_host(factory, clocks):
    cache = make_cache(factory, clocks, grace=30, max_age=600)
    cache.admit(factory.token("h1", issued_at=T0, validity=1000))
    assert cache.is_trusted("h1", 1)
    clocks.advance(31)
    assert not cache.is_trusted("h1", 1)
    assert "no contact" in cache.explain("h1", 1, 600, clocks.mono)
    cache.mark_contact()
    assert cache.is_trusted("h1", 1)


def test_never_contacted_fails_closed(factory, clocks):
    cache = VerdictCache(factory.public_keys, wall=lambda: clocks.wall,
                         monotonic=lambda: clocks.mono)
    cache.admit(factory.token("h1", issued_at=T0))
    assert not cache.is_trusted("h1", 1)


@pytest.mark.parametrize("kwargs", [{"max_age": 0}, {"grace": -1},
                                    {"leeway": 301}, {"max_age": 1.5}])
def test_bad_arguments(factory, kwargs):
    with pytest.raises(exception.InvalidParameterValue):
        VerdictCache(factory.public_keys, **kwargs)


def test_non_string_token_is_malformed(factory, clocks):
    cache = make_cache(factory, clocks)
    with pytest.raises(exception.ResultMalformed):
        cache.admit(b"not-a-str")        # type: ignore[arg-type]


def test_concurrent_admits_keep_the_newest(factory, clocks):
    cache = make_cache(factory, clocks)
    tokens = [factory.token("h1", status="untrusted" if i == 49 else
                            "trusted", issued_at=T0 - 49 + i)
              for i in range(50)]
    threads = [threading.Thread(target=cache.admit, args=(t,))
               for t in reversed(tokens)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cache.get("h1").verdict.issued_at == T0
    assert not cache.is_trusted("h1", 1)


# --- the notification endpoint ------------------------------------------------

@pytest.mark.parametrize("payload", [
    None, "x", [], {"host": "h1"}, {"signed_result": "a.b.c"},
    {"host": 3, "signed_result": "a.b.c"},
    {"host": "h1", "signed_result": 12},
])
def test_malformed_payload_logged_nothing_admitted(factory, clocks, caplog,
                                                   payload):
    cache = VerdictCache(factory.public_keys, wall=lambda: clocks.wall,
                         monotonic=lambda: clocks.mono)
    endpoint = TrustNotificationEndpoint(cache)
    with caplog.at_level(logging.WARNING):
        assert endpoint.handle(payload) is False
    assert "malformed payload" in caplog.text
    assert len(cache) == 0 and cache.contact_age() is None


def test_garbage_token_logged(factory, clocks, caplog):
    cache = make_cache(factory, clocks)
    endpoint = TrustNotificationEndpoint(cache)
    with caplog.at_level(logging.WARNING):
        assert not endpoint.handle({"host": "h1", "signed_result": "x.y.z"})
    assert "Refused trust notification for host h1" in caplog.text
    assert len(cache) == 0


def test_payload_disagreement_is_logged_signed_result_counts(
        factory, clocks, caplog):
    cache = make_cache(factory, clocks)
    endpoint = TrustNotificationEndpoint(cache)
    payload = factory.payload("h1", status="untrusted", issued_at=T0)
    payload["status"] = "trusted"
    with caplog.at_level(logging.WARNING):
        assert endpoint.handle(payload)
    assert "disagree" in caplog.text
    assert not cache.is_trusted("h1", 1)


def test_verification_uses_the_configured_keys_only(factory, clocks):
    cache = make_cache(factory, clocks)
    stranger = VerdictFactory()  # a validly signed result, another key
    with pytest.raises(exception.ResultKeyUnknown):
        cache.admit(stranger.token("h1", issued_at=T0))
    assert not cache.is_trusted("h1", 1)
    assert cache.get("h1") is None


def test_fetched_keys_replace_earlier_fetched_ones(factory, clocks):
    """A conductor key that is no longer served stops being accepted; the
    configured keys stay."""
    from trusted_pools.attestation import keystore
    from trusted_pools.scheduler.listener import TrustListener
    old, new = VerdictFactory(), VerdictFactory()
    served = {}

    class Source:
        def get_public_keys(self, context):
            return {kid: keystore.public_key_pem(key)
                    for kid, key in served.items()}

        def verdicts_since(self, context, since):
            return []

    cache = make_cache(factory, clocks)
    listener = TrustListener(cache, Source(), notification_transport=None,
                             exchange="x", fetch_keys=True)
    served.update(old.public_keys)
    assert listener._fetch_keys()
    cache.admit(old.token("h1", issued_at=T0))
    listener._last_key_fetch = 0.0
    served.clear()
    served.update(new.public_keys)
    assert listener._fetch_keys()
    with pytest.raises(exception.ResultKeyUnknown):
        cache.admit(old.token("h2", issued_at=T0))
    cache.admit(new.token("h2", issued_at=T0))
    cache.admit(factory.token("h3", issued_at=T0))  # configured key
