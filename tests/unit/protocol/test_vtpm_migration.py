"""The shared vTPM migration formats (issue 12): what binds a payload to
its migration, and what the destination refuses. Tables: every altered
field is refused, never opened as wrong bytes."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from trusted_pools import exception
from trusted_pools.protocol import vtpm_migration as proto
from trusted_pools.tpm import sealing

MID = "0b7d4c2e-8f1a-4e3b-9c6d-5a2f1e0d9c8b"
INSTANCE = "7d4c6a8e-3c2b-4f6e-9a1d-2b3c4d5e6f70"
AAD = dict(migration_id=MID, instance=INSTANCE, source="compute-0",
           destination="compute-1", epoch=3, kind="cold")


@pytest.fixture(scope="module")
def transport():
    """A software stand-in for the transport key (the TPM's own is in
    tests/functional/migration/test_transport_key.py): the public half as a
    VerifiedBindingKey, and an unwrap with the private half."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = SimpleNamespace(public_key=lambda: private.public_key())
    key = sealing.VerifiedBindingKey(public, b"n", b"q", b"", 0, 0, 0)

    def unwrap(wrapped: bytes, label: bytes) -> bytes:
        return private.decrypt(wrapped, padding.OAEP(
            mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(),
            label=label))
    return key, unwrap


def test_nonce_and_label_commit_to_the_migration():
    salt = os.urandom(32)
    base = proto.transport_nonce(MID, "compute-1", salt)
    assert len(base) == 32
    assert base == proto.transport_nonce(MID, "compute-1", salt)
    assert base != proto.transport_nonce(MID, "compute-2", salt)
    assert base != proto.transport_nonce(MID[:-1] + "0", "compute-1", salt)
    assert base != proto.transport_nonce(MID, "compute-1", os.urandom(32))
    assert proto.transport_label(MID) != proto.transport_label(MID[:-1] + "0")
    assert proto.transport_label(MID).endswith(b"\0")
    with pytest.raises(exception.InvalidParameterValue):
        proto.transport_nonce(MID, "compute-1", b"short")


@pytest.mark.parametrize("field,value", [
    ("migration_id", "another"), ("instance", "other-instance"),
    ("source", "compute-9"), ("destination", "compute-9"), ("epoch", 2),
    ("kind", "live")])
def test_payload_for_another_migration_does_not_open(transport, field,
                                                     value):
    key, unwrap = transport
    label = proto.transport_label(MID)
    sealed = proto.seal(key, b"state", aad=proto.associated_data(**AAD),
                        label=label)
    assert proto.open_sealed(unwrap, sealed, aad=proto.associated_data(
        **AAD), label=label) == b"state"
    other = dict(AAD, **{field: value})
    with pytest.raises(exception.MigrationPayloadRejected,
                       match="does not authenticate"):
        proto.open_sealed(unwrap, sealed, aad=proto.associated_data(
            **other), label=label)


def test_altered_payload_and_wire_format(transport):
    key, unwrap = transport
    label = proto.transport_label(MID)
    aad = proto.associated_data(**AAD)
    sealed = proto.seal(key, b"state", aad=aad, label=label)
    wire = sealed.to_wire()
    assert proto.SealedPayload.from_wire(wire) == sealed
    flipped = bytearray(sealed.ciphertext)
    flipped[0] ^= 1
    with pytest.raises(exception.MigrationPayloadRejected):
        proto.open_sealed(unwrap, proto.SealedPayload(
            sealed.wrapped_key, sealed.nonce, bytes(flipped)), aad=aad,
            label=label)
    for bad in (None, [], {}, dict(wire, nonce="AAAA"),
                dict(wire, ciphertext="%%%"), dict(wire, wrapped_key="")):
        with pytest.raises(exception.MalformedEvidence):
            proto.SealedPayload.from_wire(bad)
    with pytest.raises(TypeError):
        proto.seal(object(), b"x", aad=aad, label=label)


def _state(**changes):
    body = json.loads(proto.encode_cold_state(
        instance=INSTANCE, driver="swtpm", metadata={"user": {}},
        files={"tpm2-00.permall": b"P" * 64}, wrapped_state_key=b"w",
        epoch=3))
    for path, value in changes.items():
        target = body
        *parents, leaf = path.split("/")
        for parent in parents:
            target = target[parent]
        target[leaf] = value
    return json.dumps(body).encode()


def test_cold_state_checks():
    state = proto.decode_cold_state(_state(), instance=INSTANCE, epoch=3)
    assert state.files == {"tpm2-00.permall": b"P" * 64}
    assert state.metadata[proto.EPOCH_METADATA_KEY] == 3
    for bad in (b"not json", _state(instance="x"), _state(epoch=2),
                _state(**{"metadata/migration_epoch": 2}),
                _state(**{"files/tpm2-00.permall": "UFBQ"}),
                _state(**{"digests/extra": "00"})):
        with pytest.raises(exception.MigrationPayloadRejected):
            proto.decode_cold_state(bad, instance=INSTANCE, epoch=3)
    with pytest.raises(exception.MigrationPayloadRejected):
        proto.decode_cold_state(_state(), instance=INSTANCE, epoch=4)


def test_live_key_checks():
    key = os.urandom(32)
    plaintext = proto.encode_live_key(instance=INSTANCE, key=key,
                                      metadata={"driver": "swtpm"}, epoch=3)
    got, meta = proto.decode_live_key(plaintext, instance=INSTANCE, epoch=3)
    assert got == key and meta == {"driver": "swtpm",
                                   proto.EPOCH_METADATA_KEY: 3}
    for instance, epoch in ((INSTANCE, 4), ("other", 3)):
        with pytest.raises(exception.MigrationPayloadRejected):
            proto.decode_live_key(plaintext, instance=instance, epoch=epoch)
    with pytest.raises(exception.InvalidParameterValue):
        proto.encode_live_key(instance=INSTANCE, key=b"short",
                              metadata={}, epoch=3)
