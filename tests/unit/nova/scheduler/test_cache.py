"""VerdictCache: verify once at arrival, decide by local receive time,
fail closed."""

from __future__ import annotations

import logging
import threading

import pytest

from tests.nova_harness import VerdictFactory
from trusted_pools import exception
from trusted_pools.nova.scheduler.cache import VerdictCache
from trusted_pools.nova.scheduler.listener import TrustNotificationEndpoint

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


class _Response:
    def __init__(self, status: int, body) -> None:
        self.status_code = status
        self._body = body

    def json(self):
        if isinstance(self._body, Exception):
            raise self._body
        return self._body


class _Adapter:
    """keystoneauth1 Adapter stand-in: what GET /v1/keys answers."""

    def __init__(self) -> None:
        self.answer = _Response(200, {"keys": []})
        self.paths: list[str] = []

    def get(self, path):
        self.paths.append(path)
        return self.answer


def _jwks(*factories):
    from trusted_pools.protocol import keystore
    keys = []
    for f in factories:
        for kid, key in f.public_keys.items():
            keys.append(dict(keystore.public_jwk(key), kid=kid))
    return {"keys": keys}


class _VerdictsOnly:
    """A conductor source that fails the test if asked for anything but
    verdicts: keys never come from the bus."""

    def verdicts_since(self, context, since):
        return []

    def __getattr__(self, name):
        raise AssertionError("listener asked the bus for %s" % name)


def test_fetched_keys_replace_earlier_fetched_ones(factory, clocks):
    """Keys from the API's JWKS: a conductor key that is no longer served
    stops being accepted; the configured keys stay."""
    from trusted_pools.nova.scheduler.listener import JWKSKeySource
    from trusted_pools.nova.scheduler.listener import TrustListener
    old, new = VerdictFactory(), VerdictFactory()
    adapter = _Adapter()
    cache = make_cache(factory, clocks)
    listener = TrustListener(cache, _VerdictsOnly(),
                             notification_transport=None, exchange="x",
                             key_source=JWKSKeySource(adapter))
    adapter.answer = _Response(200, _jwks(old))
    assert listener._fetch_keys()
    assert adapter.paths == ["/v1/keys"]
    cache.admit(old.token("h1", issued_at=T0))
    listener._last_key_fetch = 0.0
    adapter.answer = _Response(200, _jwks(new))
    assert listener._fetch_keys()
    with pytest.raises(exception.ResultKeyUnknown):
        cache.admit(old.token("h2", issued_at=T0))
    cache.admit(new.token("h2", issued_at=T0))
    cache.admit(factory.token("h3", issued_at=T0))  # configured key


@pytest.mark.parametrize("answer", [
    _Response(503, {"keys": []}),
    _Response(200, ValueError("not JSON")),
    _Response(200, {"keys": "all of them"}),
    _Response(200, {"no": "keys"}),
])
def test_a_failed_key_fetch_changes_no_key(factory, clocks, answer):
    from trusted_pools.nova.scheduler.listener import JWKSKeySource
    from trusted_pools.nova.scheduler.listener import TrustListener
    adapter = _Adapter()
    adapter.answer = answer
    cache = make_cache(factory, clocks)
    before = dict(cache.public_keys())
    listener = TrustListener(cache, _VerdictsOnly(),
                             notification_transport=None, exchange="x",
                             key_source=JWKSKeySource(adapter))
    assert not listener._fetch_keys()
    assert cache.public_keys() == before


def test_a_jwks_key_under_another_kid_is_refused(factory, clocks):
    from trusted_pools.nova.scheduler.listener import JWKSKeySource
    rogue = VerdictFactory(issuer="rogue")
    jwks = _jwks(rogue)
    jwks["keys"][0]["kid"] = next(iter(factory.public_keys))
    adapter = _Adapter()
    adapter.answer = _Response(200, jwks)
    with pytest.raises(exception.InvalidParameterValue):
        JWKSKeySource(adapter).fetch()


def test_an_unknown_kid_never_asks_the_bus(factory, clocks):
    """A notification signed with a key nobody pinned (anyone on the bus
    can publish one): refused; without a key source nothing is fetched,
    and the conductor source is never asked for keys."""
    from trusted_pools.nova.scheduler.listener import TrustListener
    cache = make_cache(factory, clocks)
    listener = TrustListener(cache, _VerdictsOnly(),
                             notification_transport=None, exchange="x")
    stranger = VerdictFactory(issuer="conductor-x")
    assert not listener.endpoint.handle(stranger.payload("h1",
                                                         issued_at=T0))
    assert cache.get("h1") is None


# --- order: the database's sequence, never a conductor's clock ---------------

AHEAD = 4   # seconds the fast conductor's clock runs ahead (within leeway)


@pytest.mark.parametrize("arrival", ["stored-order", "reversed"])
def test_clock_ahead_conductor_cannot_displace_a_newer_verdict(
        clocks, arrival):
    """Conductor A (clock AHEAD s fast) stored a trusted verdict; then
    conductor B (correct clock) stored an untrusted one, so the database
    gave B's the greater sequence while A's carries the later iat. In
    either arrival order the untrusted one is kept."""
    from trusted_pools.protocol import keystore
    fast, correct = VerdictFactory("conductor-a"), VerdictFactory(
        "conductor-b")
    keys = {**fast.public_keys, **correct.public_keys}
    cache = VerdictCache(keys, wall=lambda: clocks.wall,
                         monotonic=lambda: clocks.mono)
    cache.mark_contact()
    old_trusted = fast.token("h1", level=4, issued_at=T0 + AHEAD,
                             sequence=101)
    clocks.advance(2)
    new_untrusted = correct.token("h1", status="untrusted",
                                  issued_at=T0 + 2, sequence=102)
    tokens = [old_trusted, new_untrusted]
    if arrival == "reversed":
        tokens.reverse()
    for token in tokens:
        cache.admit(token)
    entry = cache.get("h1")
    assert entry.sequence == 102 and entry.verdict.status.value == \
        "untrusted"
    assert not cache.is_trusted("h1", 1)
    assert keystore.key_id(correct.key) in keys


def test_lower_sequence_is_not_kept_and_says_so(factory, clocks):
    cache = make_cache(factory, clocks)
    assert cache.admit_token(factory.token(
        "h1", status="untrusted", issued_at=T0 - 100, sequence=9)).kept
    later_dated = cache.admit_token(factory.token("h1", issued_at=T0,
                                                  sequence=8))
    assert not later_dated.kept and later_dated.sequence == 8
    assert not cache.is_trusted("h1", 1)


def test_old_format_token_without_sequence_is_refused(factory, clocks):
    """A version 1 token (no seq) cannot be ordered without trusting its
    signer's clock: refused, nothing admitted."""
    import json
    import jwt
    from trusted_pools.protocol import results
    token = factory.token("h1", issued_at=T0)
    claims = json.loads(jwt.utils.base64url_decode(token.split(".")[1]))
    claims["ver"] = 1
    del claims["seq"]
    from trusted_pools.protocol.verdict import canonical_json
    old = jwt.PyJWS().encode(canonical_json(claims), factory.key,
                             algorithm=factory.signer.alg,
                             headers={"kid": factory.signer.kid,
                                      "typ": results.RESULT_TYPE})
    cache = make_cache(factory, clocks)
    with pytest.raises(exception.ResultMalformed, match="sequence"):
        cache.admit(old)
    assert cache.get("h1") is None


# --- contact: only a conductor's new word counts -----------------------------

def test_garbage_notifications_do_not_keep_contact(factory, clocks):
    """After the conductors are gone, a compromised host keeps sending
    garbage, forged and replayed notifications: none of them is contact,
    so past the grace every host fails closed."""
    cache = make_cache(factory, clocks, grace=30, max_age=600)
    endpoint = TrustNotificationEndpoint(cache)
    payload = factory.payload("h1", issued_at=T0, validity=1000)
    assert endpoint.handle(payload)
    assert cache.is_trusted("h1", 1)
    forged = VerdictFactory(issuer="rogue").payload("h1", issued_at=T0,
                                                    validity=1000)
    older = factory.payload("h1", issued_at=T0 - 5, validity=1000)
    for _ in range(4):
        clocks.advance(10)
        assert not endpoint.handle({"host": "h1", "signed_result": "x.y.z"})
        assert not endpoint.handle({"host": "h1"})
        assert not endpoint.handle(forged)
        assert not endpoint.handle(payload)       # replayed, same token
        assert not endpoint.handle(older)         # verified, but older
    assert cache.contact_age() == pytest.approx(40)
    assert not cache.is_trusted("h1", 1)
    assert "no contact" in cache.explain("h1", 1, 600, clocks.mono)
    # A newer verdict from the conductor is contact again.
    assert endpoint.handle(factory.payload("h1", issued_at=T0 + 40,
                                           validity=1000))
    assert cache.is_trusted("h1", 1)


class _Source:
    def __init__(self, items):
        self.items = items

    def verdicts_since(self, context, since):
        return self.items


def _listener(cache, items):
    from trusted_pools.nova.scheduler.listener import TrustListener
    return TrustListener(cache, _Source(items), notification_transport=None,
                         exchange="x", wall=lambda: float(T0))


@pytest.mark.parametrize("items", [
    [], [{"host": "h1", "signed_result": "x.y.z"}], ["junk"],
    [{"host": "h1", "signed_result": "forged"}],
])
def test_refresh_without_verified_tokens_is_not_contact(factory, clocks,
                                                        items):
    cache = VerdictCache(factory.public_keys, wall=lambda: clocks.wall,
                         monotonic=lambda: clocks.mono)
    if items and items[0] != "junk" and items[0]["signed_result"] == \
            "forged":
        items = [VerdictFactory(issuer="rogue").payload("h1", issued_at=T0)]
    _listener(cache, items).refresh()
    assert cache.contact_age() is None


def test_refresh_with_a_verified_token_is_contact(factory, clocks):
    cache = VerdictCache(factory.public_keys, wall=lambda: clocks.wall,
                         monotonic=lambda: clocks.mono)
    payload = factory.payload("h1", issued_at=T0)
    assert _listener(cache, [payload]).refresh() == 1
    assert cache.contact_age() == 0
    clocks.advance(20)
    # The same token again (already cached, unexpired) still verifies.
    _listener(cache, [payload]).refresh()
    assert cache.contact_age() == 0
