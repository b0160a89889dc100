"""The live migration payload's plaintext: swtpm's migration key and the
source vTPM's metadata. What a compromised source could put there instead
is refused with a typed error (the destination aborts, nothing prepared)."""

from __future__ import annotations

import json
import os

import pytest

from trusted_pools import exception
from trusted_pools.protocol import vtpm_migration as proto


def test_round_trip():
    key = os.urandom(32)
    meta = {"user": {"flavor": "vtpm.small"}, "migration_epoch": 0}
    assert proto.decode_live_key(proto.encode_live_key(key, meta)) == (
        key, meta)


@pytest.mark.parametrize("plaintext", [
    os.urandom(32),  # a bare key: no metadata
    b"[]",
    json.dumps({"migration_key": proto.b64(os.urandom(32))}).encode(),
    json.dumps({"migration_key": proto.b64(os.urandom(16)),
                "metadata": {}}).encode(),
    json.dumps({"migration_key": "not base64!", "metadata": {}}).encode(),
    json.dumps({"migration_key": proto.b64(os.urandom(32)),
                "metadata": []}).encode(),
])
def test_malformed_is_refused(plaintext):
    with pytest.raises((exception.MigrationPayloadRejected,
                        exception.MalformedEvidence)):
        proto.decode_live_key(plaintext)
