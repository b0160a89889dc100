"""The conductor's instance challenges, kept in the database (issue 11).

Deep attestation spends a nonce per instance: the guest quotes over a
nonce the verifier issued for it, once. Kept in a conductor's memory, a
restart forgot which nonces were spent (so a recorded quote could be
replayed after it) and a challenge issued by one conductor could not be
completed on another. Here every nonce is a row of
``instance_challenges`` (by its SHA-256), spent in the transaction that
stores the verdicts it earned; the rule for what may spend it is the
verifier's (:func:`trusted_pools.verifier.deep.challenge_error`).
"""

from __future__ import annotations

import datetime
import hashlib
import os
import time
from typing import Callable, Mapping, Sequence

from trusted_pools import exception
from trusted_pools.db import api as db_api
from trusted_pools.verifier import deep as deep_mod

__all__ = ["DatabaseChallenges"]

#: Seconds a guest has to quote over its nonce.
DEFAULT_TTL = 300
#: Outstanding challenges at most (issued and not expired), all conductors.
DEFAULT_LIMIT = 100_000


def _utc(seconds: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)


def nonce_digest(nonce: bytes) -> str:
    return hashlib.sha256(bytes(nonce)).hexdigest()


class DatabaseChallenges:
    """:class:`~trusted_pools.verifier.deep.InstanceChallenges` in the
    database shared by the conductors."""

    def __init__(self, db: db_api.Connection, conductor: str, *,
                 ttl: float = DEFAULT_TTL, limit: int = DEFAULT_LIMIT,
                 clock: Callable[[], float] = time.time) -> None:
        if ttl <= 0 or limit <= 0:
            raise exception.InvalidParameterValue(
                name="ttl", reason="ttl and limit must be positive")
        self.db = db
        self.conductor = conductor
        self.ttl = ttl
        self.limit = limit
        self._clock = clock

    def issue(self, instance: str, host: str | None = None,
              image: str | None = None) -> bytes:
        """``image``: the instance's image as the trusted caller named it
        (it picks the image's instance policy when the nonce is spent)."""
        instance = deep_mod.instance_id(instance)
        if image is not None:
            image = deep_mod.instance_id(image)
        now = self._clock()
        nonce = os.urandom(32)
        self.db.add_instance_challenge(
            nonce_digest(nonce), instance, host, self.conductor,
            _utc(now), _utc(now + self.ttl), self.limit, image=image)
        return nonce

    def policies_for(self, claims: Sequence[tuple[str, bytes]]
                     ) -> list[deep_mod.InstancePolicy | None]:
        """The instance policy of each ``(instance, nonce)`` of a batch:
        the instance's own assignment, else that of the image the trusted
        caller named with the challenge of ``nonce`` (only if that
        challenge was issued for this instance: a nonce of another
        instance is refused when spent anyway). Nothing the host or the
        guest sent names the image."""
        challenges = self.db.instance_challenges(
            [nonce_digest(nonce) for _instance, nonce in claims])
        subjects = []
        for instance, nonce in claims:
            challenge = challenges.get(nonce_digest(nonce))
            image = challenge.image if challenge is not None and \
                challenge.instance == instance else None
            subjects.append((instance, image))
        return [None if record is None else
                deep_mod.InstancePolicy.from_body(
                    record.name, record.version, record.level, record.pcrs)
                for record in self.db.instance_policies_for(subjects)]

    def consume_many(self, host: str | None,
                     claims: Sequence[tuple[str, bytes]]
                     ) -> list[deep_mod.DeepAttestationError | None]:
        return self.settle(host, claims, {})

    def settle(self, host: str | None, claims: Sequence[tuple[str, bytes]],
               verdicts: Mapping[int, db_api.InstanceVerdictRecord]
               ) -> list[deep_mod.DeepAttestationError | None]:
        """Spend each ``(instance, nonce)`` of a batch of ``host`` and
        store ``verdicts`` (claim index -> record) of the claims whose
        nonce was spent, in one transaction. Per claim None (spent) or
        why its nonce could not be spent (that claim's verdict is not
        stored)."""
        errors: list[deep_mod.DeepAttestationError | None] = \
            [None] * len(claims)

        def decide(index: int,
                   challenge: db_api.InstanceChallengeRecord | None) -> bool:
            errors[index] = deep_mod.challenge_error(
                claims[index][0], host,
                None if challenge is None
                else (challenge.instance, challenge.host),
                challenge is not None and challenge.used_at is not None,
                self.ttl)
            return errors[index] is None

        self.db.spend_instance_challenges(
            [nonce_digest(nonce) for _instance, nonce in claims],
            _utc(self._clock()), decide, verdicts)
        return errors
