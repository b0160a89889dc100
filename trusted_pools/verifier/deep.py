"""Deep attestation (ETSI GR NFV-SEC 007 4.4.3/4.4.4): a VM's evidence
bound to a fresh quote of its host. A verifier library: no oslo, no bus,
no database; the conductor (``conductor.manager.deep_attest``) feeds it.

An instance is attested from three things:

(a) a **vTPM quote made inside the guest** over a nonce this verifier
    issued for that instance (:class:`InstanceChallenges`: one use each,
    expiring; :class:`NonceBook` in memory, the conductor's in its
    database);
    verified with :func:`trusted_pools.tpm.quote.verify_quote` and the
    vTPM AK from (b);
(b) the **vTPM's chain to its host** (:mod:`.vtpm_binding`): the host's
    vTPM CA certified by the host's *registered* AK, the CA's certificate
    for the vTPM AK naming this host and this instance;
(c) a **fresh host quote that commits to the VM quotes**: its nonce is
    ``SHA-256(tag || verifier nonce || Merkle root)`` over the hashes of
    the VM quotes' TPMS_ATTEST bytes (:func:`host_nonce`). One host quote
    commits to a whole batch; each VM's result carries its inclusion
    proof, so anyone holding the result can check the link
    (:func:`check_commitment`).

The linked scheme defeats relaying: a quote of another VM carries another
vTPM AK (whose chain leads to its own host), a quote of this VM from
before was over a spent nonce, and a host quote over anything but this
batch's commitment does not verify.

The Merkle tree is RFC 9162's (2.1): leaves ``H(0x00 || data)``, nodes
``H(0x01 || left || right)``, an odd count split at the largest power of
two below it (no duplicated last leaf, so no CVE-2012-2459 ambiguity);
the domain bytes make a leaf never pass for a node (second preimages).

Levels. An instance's level is on the host scale
(:class:`~trusted_pools.protocol.levels.AssuranceLevel`) and never
above its host's current verdict: with no instance policy the vTPM is
bound and its PCRs reported but not appraised ("vTPM-bound, measured"):
own level 1 (IDENTITY). With an :class:`InstancePolicy` whose allowed PCR
values all match, the policy's level (default 3, OS boot). The host must
itself be trusted, its verdict fresh, and its quote made in the same TPM
boot as the quote behind that verdict, with the same boot PCR values.

Errors. Failures that concern the whole batch raise (the host); failures
of one instance are returned in its :class:`InstanceOutcome`, all as
:class:`DeepAttestationError` subclasses with a reason. Evidence that
does not verify gives no verdict (anyone may submit garbage in an
instance's name); verified PCRs that a policy refuses give an untrusted
verdict.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
import uuid
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence

import jwt
import jwt.algorithms
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from trusted_pools import exception
from trusted_pools.protocol import keystore
from trusted_pools.protocol import vtpm_binding
from trusted_pools.protocol.evidence import _pcrs as _wire_pcrs
from trusted_pools.protocol.evidence import decode_b64, encode_b64
from trusted_pools.protocol.levels import AssuranceLevel
from trusted_pools.protocol.verdict import canonical_json
from trusted_pools.tpm import constants, quote as quotes, structures
from trusted_pools.tpm import pcrs as pcr_files

__all__ = [
    "DOMAIN_TAG", "INSTANCE_BATCH_TYPE", "INSTANCE_RESULT_TYPE",
    "INSTANCE_RESULT_VERSION",
    "Batch", "DeepAttestationError", "DeepVerifier", "HostNotTrusted",
    "HostQuote", "HostQuoteInvalid", "HostQuoteNotCommitted",
    "HostStanding", "HostVerdictStale", "InstanceOutcome", "InstancePolicy",
    "InstanceChallenges", "InstanceResultSigner", "InstanceVerdict",
    "MerkleTree", "NonceBook", "challenge_error",
    "VMChainForeignHost", "VMChainRefused", "VMEvidence", "VMNonceMismatch",
    "VMPolicyViolation", "VMQuoteInvalid", "VMQuoteReplayed",
    "check_commitment", "host_nonce", "instance_id", "leaf_hash",
    "node_hash", "pcrs_wire", "capture_policy",
    "prepare_batch", "verify_inclusion", "verify_instance_result",
]

#: Domain tag of the host nonce.
DOMAIN_TAG = b"trusted_pools deep attestation v1\0"
INSTANCE_RESULT_TYPE = "trusted-pools-instance-result+jwt"
#: The ``typ`` of the one JWS a batch's instance results share.
INSTANCE_BATCH_TYPE = "trusted-pools-instance-batch+jwt"
INSTANCE_RESULT_VERSION = 1
#: Separates the parts of a batch-signed instance result.
_BATCH_SEPARATOR = "~"
#: Largest batch: one host quote commits to at most this many VM quotes.
MAX_BATCH = 4096
_LEAF, _NODE = b"\x00", b"\x01"
_MAX_VM_QUOTE = 4096
_MAX_VM_SIGNATURE = 1024
#: Verified chains (and CA certifications) kept; the cache starts over
#: when full.
_MAX_CACHED = 65536


# --- errors -----------------------------------------------------------------

# Defined in the service exception tree (trusted_pools.exception), so a
# refusal recorded in a host operation's row is raised again by its type
# wherever the row is read.
DeepAttestationError = exception.DeepAttestationError
HostNotTrusted = exception.HostNotTrusted
HostVerdictStale = exception.HostVerdictStale
HostQuoteInvalid = exception.HostQuoteInvalid
HostQuoteNotCommitted = exception.HostQuoteNotCommitted
VMQuoteInvalid = exception.VMQuoteInvalid
VMNonceMismatch = exception.VMNonceMismatch
VMQuoteReplayed = exception.VMQuoteReplayed
VMChainRefused = exception.VMChainRefused
VMChainForeignHost = exception.VMChainForeignHost
VMPolicyViolation = exception.VMPolicyViolation


# --- Merkle tree (RFC 9162 2.1) ---------------------------------------------

def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(_LEAF + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(_NODE + left + right).digest()


def _split(n: int) -> int:
    """Largest power of two smaller than ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


class MerkleTree:
    """A Merkle tree over ``leaves`` (their data; hashed as leaves here)."""

    def __init__(self, leaves: Sequence[bytes]) -> None:
        if not leaves:
            raise exception.InvalidParameterValue(
                name="leaves", reason="a tree needs at least one leaf")
        self._hashes = [leaf_hash(bytes(d)) for d in leaves]
        self.size = len(self._hashes)
        self._memo: dict[tuple[int, int], bytes] = {}
        self._proofs: dict[int, tuple[bytes, ...]] = {}
        self.root = self._mth(0, self.size)

    def has_leaves(self, leaves: Sequence[bytes]) -> bool:
        """Whether this tree was built over exactly ``leaves``."""
        return len(leaves) == self.size and all(
            hmac.compare_digest(leaf_hash(bytes(d)), h)
            for d, h in zip(leaves, self._hashes))

    def _mth(self, lo: int, hi: int) -> bytes:
        if hi - lo == 1:
            return self._hashes[lo]
        key = (lo, hi)
        found = self._memo.get(key)
        if found is None:
            k = _split(hi - lo)
            found = node_hash(self._mth(lo, lo + k), self._mth(lo + k, hi))
            self._memo[key] = found
        return found

    def proof(self, index: int) -> tuple[bytes, ...]:
        """The inclusion path of leaf ``index``, leaf side first."""
        found = self._proofs.get(index) if type(index) is int else None
        if found is not None:
            return found
        if type(index) is not int or not 0 <= index < self.size:
            raise exception.InvalidParameterValue(
                name="index", reason="out of range 0-%d" % (self.size - 1))
        path: list[bytes] = []
        lo, hi = 0, self.size
        while hi - lo > 1:
            k = _split(hi - lo)
            if index < lo + k:
                path.append(self._mth(lo + k, hi))
                hi = lo + k
            else:
                path.append(self._mth(lo, lo + k))
                lo = lo + k
        found = self._proofs[index] = tuple(reversed(path))
        return found


def verify_inclusion(data: bytes, index: int, size: int,
                     proof: Sequence[bytes], root: bytes) -> bool:
    """RFC 9162 2.1.3.2: whether leaf ``data`` is at ``index`` of a tree
    of ``size`` leaves with ``root``."""
    if type(index) is not int or type(size) is not int or \
            not 0 <= index < size:
        return False
    fn, sn = index, size - 1
    r = leaf_hash(data)
    for p in proof:
        if not isinstance(p, (bytes, bytearray)) or len(p) != 32 or sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(bytes(p), r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, bytes(p))
        fn >>= 1
        sn >>= 1
    return sn == 0 and hmac.compare_digest(r, root)


def host_nonce(verifier_nonce: bytes, root: bytes) -> bytes:
    """The nonce the host quotes over to commit to a batch."""
    return hashlib.sha256(DOMAIN_TAG + bytes(verifier_nonce)
                          + bytes(root)).digest()


def check_commitment(subject: str, vm_quote: bytes, index: int, size: int,
                     proof: Sequence[bytes], root: bytes,
                     verifier_nonce: bytes, host_extra_data: bytes) -> None:
    """Raise :class:`HostQuoteNotCommitted` unless the (verified) host
    quote's extraData commits to ``vm_quote`` through this proof."""
    if not verify_inclusion(hashlib.sha256(vm_quote).digest(), index, size,
                            proof, root):
        raise HostQuoteNotCommitted(
            subject=subject, reason="the inclusion proof does not lead from "
            "the VM quote to the Merkle root")
    if not hmac.compare_digest(host_nonce(verifier_nonce, root),
                               bytes(host_extra_data)):
        raise HostQuoteNotCommitted(
            subject=subject, reason="the host quote's nonce is not the "
            "commitment to this Merkle root")


# --- nonces ------------------------------------------------------------------

class InstanceChallenges(Protocol):
    """Where a verifier keeps the nonces it issued to instances:
    :class:`NonceBook` (memory, one process) or the conductor's database
    store (:mod:`trusted_pools.conductor.instance_challenges`), which
    survives a restart and is shared by every conductor."""

    ttl: float

    def issue(self, instance: str, host: str | None = None,
              image: str | None = None) -> bytes: ...

    def consume_many(self, host: str | None,
                     claims: Sequence[tuple[str, bytes]]
                     ) -> list[DeepAttestationError | None]: ...


class NonceBook:
    """Nonces issued to instances, in memory: each used once, within
    ``ttl`` seconds, by a batch of the host it was issued for (if one was
    named).

    Used nonces are remembered until they would have expired, so a
    replayed quote is named as such; past that it is an unknown nonce
    (refused all the same). Thread-safe; at most ``limit`` outstanding.
    Lost when the process ends: the conductor keeps its nonces in the
    database instead.
    """

    def __init__(self, ttl: float = 300.0, limit: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if ttl <= 0 or limit <= 0:
            raise exception.InvalidParameterValue(
                name="ttl", reason="ttl and limit must be positive")
        self.ttl = ttl
        self.limit = limit
        self._clock = clock
        self._lock = threading.Lock()
        # nonce -> (instance, host or None, expires at, used)
        self._book: dict[bytes, tuple[str, str | None, float, bool]] = {}

    def _expire(self, now: float) -> None:
        for nonce in [n for n, (_, _h, exp, _u) in self._book.items()
                      if exp <= now]:
            del self._book[nonce]

    def issue(self, instance: str, host: str | None = None,
              image: str | None = None) -> bytes:
        """A fresh nonce for ``instance`` (on ``host``, when the caller
        named it: then only a batch of that host may spend it). ``image``
        is not kept in memory: only the database store chooses instance
        policies by image."""
        instance = instance_id(instance)
        now = self._clock()
        with self._lock:
            if len(self._book) >= self.limit:
                self._expire(now)
                if len(self._book) >= self.limit:
                    raise exception.TemporaryFailure(
                        reason="%d instance challenges are outstanding"
                        % self.limit)
            nonce = os.urandom(32)
            self._book[nonce] = (instance, host, now + self.ttl, False)
            return nonce

    def consume(self, instance: str, nonce: bytes,
                host: str | None = None) -> None:
        """Spend ``nonce`` for ``instance`` (quoted on ``host``) or raise
        why it cannot be."""
        error = self.consume_many(host, [(instance, nonce)])[0]
        if error is not None:
            raise error

    def consume_many(self, host: str | None,
                     claims: Sequence[tuple[str, bytes]]
                     ) -> list[DeepAttestationError | None]:
        """Spend each ``(instance, nonce)`` of a batch of ``host``: per
        claim None (spent now) or the error saying why it cannot be."""
        now = self._clock()
        out: list[DeepAttestationError | None] = []
        with self._lock:
            for instance, nonce in claims:
                nonce = bytes(nonce)
                entry = self._book.get(nonce)
                if entry is not None and entry[2] <= now:
                    del self._book[nonce]
                    entry = None
                error = challenge_error(
                    instance, host, None if entry is None else entry[:2],
                    entry is not None and entry[3], self.ttl)
                if error is None:
                    assert entry is not None
                    self._book[nonce] = entry[:3] + (True,)
                out.append(error)
        return out


def challenge_error(instance: str, host: str | None,
                    issued: tuple[str, str | None] | None, used: bool,
                    ttl: float) -> DeepAttestationError | None:
    """Why a quote of ``instance`` on ``host`` may not spend a nonce that
    was ``issued`` as (instance, host) (None: never issued, or expired)
    and is ``used`` already; None if it may. One rule for every store of
    instance challenges (memory, database)."""
    if issued is None:
        return VMNonceMismatch(
            subject=instance, reason="this verifier issued no such nonce, "
            "or it expired (they live %d s)" % ttl)
    owner, owner_host = issued
    if owner != instance:
        return VMNonceMismatch(
            subject=instance, reason="the nonce was issued for instance %s"
            % owner)
    if owner_host is not None and owner_host != host:
        return VMNonceMismatch(
            subject=instance, reason="the nonce was issued for the "
            "instance on host %s, not on host %s" % (owner_host, host))
    if used:
        return VMQuoteReplayed(
            subject=instance, reason="its nonce was already used by an "
            "earlier attestation")
    return None


def instance_id(instance: Any) -> str:
    try:
        text = str(uuid.UUID(str(instance)))
    except ValueError:
        raise exception.InvalidParameterValue(
            name="instance", reason="%r is not a UUID" % (instance,)) \
            from None
    return text


# --- inputs ------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class VMEvidence:
    """What the guest (or whoever relays it) sends for one instance:
    TPMS_ATTEST and TPMT_SIGNATURE of its vTPM quote, the PCR values,
    the vTPM chain (:class:`~.vtpm_binding.VTPMChain` wire form).
    Unverified."""

    instance: str
    quote: bytes
    signature: bytes
    pcrs: dict[int, dict[int, bytes]]
    chain: Any

    @classmethod
    def from_wire(cls, wire: Any) -> "VMEvidence":
        """From ``{instance, vm_quote, vm_signature, vm_pcrs,
        vtpm_certificate}`` (base64 quote and signature, PCRs as in host
        evidence: bank name -> index -> hex)."""
        if not isinstance(wire, Mapping) or set(wire) != {
                "instance", "vm_quote", "vm_signature", "vm_pcrs",
                "vtpm_certificate"}:
            raise exception.MalformedEvidence(
                what="instance evidence", reason="expected exactly "
                "instance, vm_quote, vm_signature, vm_pcrs, "
                "vtpm_certificate")
        try:
            instance = instance_id(wire["instance"])
        except exception.InvalidParameterValue as error:
            raise exception.MalformedEvidence(
                what="instance evidence", reason=str(error)) from None
        return cls(instance,
                   decode_b64(wire["vm_quote"], "vm_quote", _MAX_VM_QUOTE),
                   decode_b64(wire["vm_signature"], "vm_signature",
                              _MAX_VM_SIGNATURE),
                   _wire_pcrs(wire["vm_pcrs"]), wire["vtpm_certificate"])

    @classmethod
    def from_tpm2_tools(cls, instance: str, message: bytes,
                        signature: bytes, pcrs: bytes,
                        chain: Any) -> "VMEvidence":
        """From what ``tpm2_quote -c 0x81008001 -q NONCE -l sha256:...
        -m MSG -s SIG -o PCRS`` writes inside the guest (the signature in
        its default ``tss`` form, TPMT_SIGNATURE; the PCR file as
        ``tpm2_quote -o`` or ``tpm2_pcrread -o`` writes it). The PCR file
        is read in the order of the quote's (unverified) selection;
        verification later checks the values against the signed digest."""
        attest = structures.parse_attest(bytes(message))
        selection = getattr(attest.attested, "pcr_select", None)
        if selection is None:
            raise exception.MalformedEvidence(
                what="guest quote", reason="the message is not a quote")
        return cls(instance_id(instance), bytes(message), bytes(signature),
                   pcr_files.load_pcr_values(bytes(pcrs), selection), chain)

    def to_wire(self) -> dict[str, Any]:
        """The form :meth:`from_wire` (and ``deep_attest``) takes."""
        return {"instance": self.instance,
                "vm_quote": encode_b64(self.quote),
                "vm_signature": encode_b64(self.signature),
                "vm_pcrs": {constants.hash_algorithm(alg).name:
                            {str(p): v.hex() for p, v in sorted(bank.items())}
                            for alg, bank in self.pcrs.items()},
                "vtpm_certificate": self.chain.to_wire() if isinstance(
                    self.chain, vtpm_binding.VTPMChain) else self.chain}

    def leaf(self) -> bytes:
        return hashlib.sha256(self.quote).digest()


@dataclasses.dataclass(frozen=True)
class HostQuote:
    """The host agent's quote over the batch's host nonce."""

    quote: bytes
    signature: bytes
    pcrs: Mapping[int, Mapping[int, bytes]]


@dataclasses.dataclass(frozen=True)
class HostStanding:
    """The host's current verdict as the conductor holds it."""

    host: str
    status: str
    level: int
    issued_at: int
    expires_at: int
    #: The verdict's sequence (claim ``seq``), if known.
    sequence: int | None = None


#: Largest number of allowed values per PCR in an instance policy.
MAX_ALLOWED_VALUES = 64
#: The PCR indexes an instance policy body names, as written.
_PCR_INDEXES = frozenset(str(index) for index in range(24))


@dataclasses.dataclass(frozen=True)
class InstancePolicy:
    """Golden vTPM PCR values of an instance (or of every instance of an
    image): ``pcrs``: bank (TPM_ALG) -> PCR -> allowed values (a guest
    passes when every named PCR holds one of them). ``level``: what a
    match proves (2 firmware, 3 OS boot), never above the host's level.

    The values are compared with the PCRs of the guest's *verified*
    quote only; which policy applies is chosen by the verifier from the
    instance id and the image the trusted caller named with the
    challenge (:meth:`DeepVerifier.verify_batch`), never from anything
    the host or the guest sent."""

    name: str
    version: int
    pcrs: Mapping[int, Mapping[int, frozenset[bytes]]]
    level: AssuranceLevel = AssuranceLevel.OS_BOOT

    def __post_init__(self) -> None:
        if not self.pcrs or not any(self.pcrs.values()):
            raise exception.InvalidParameterValue(
                name="pcrs", reason="an instance policy names at least one "
                "PCR")
        if self.level not in (AssuranceLevel.PLATFORM_FIRMWARE,
                              AssuranceLevel.OS_BOOT):
            raise exception.InvalidParameterValue(
                name="level", reason="an instance policy stands for level "
                "2 or 3")

    @property
    def label(self) -> str:
        return "%s@%d" % (self.name, self.version)

    @classmethod
    def from_body(cls, name: str, version: int, level: Any,
                  pcrs: Any) -> "InstancePolicy":
        """From the stored (or operator-written) form: ``pcrs`` maps a
        bank name (``sha256``) to PCR index (``"0"``-``"23"``) to an
        allowed hex value or a list of them. Raises
        :class:`InvalidParameterValue` naming what is wrong."""
        # The API's rule for a name (it is a URL path segment there):
        # trusted-pools-manage stores through this loader too, and a name
        # the API cannot address could not be shown or deleted over it.
        if not isinstance(name, str) or not name or len(name) > 255 or \
                any(c == "/" or c.isspace() for c in name):
            raise exception.InvalidParameterValue(
                name="name", reason="a non-empty string of at most 255 "
                "characters, without '/' or spaces, is required")
        if type(level) is not int or level not in (2, 3):
            raise exception.InvalidParameterValue(
                name="level", reason="an instance policy stands for level "
                "2 or 3")
        if not isinstance(pcrs, Mapping) or not pcrs:
            raise exception.InvalidParameterValue(
                name="pcrs", reason="must map bank names to PCRs")
        banks: dict[int, dict[int, frozenset[bytes]]] = {}
        for bank_name, bank in pcrs.items():
            try:
                alg = constants.hash_by_name(str(bank_name))
            except exception.UnsupportedAlgorithm:
                raise exception.InvalidParameterValue(
                    name="pcrs", reason="unknown PCR bank %r" % (bank_name,)
                ) from None
            if not isinstance(bank, Mapping) or not bank or len(bank) > 24:
                raise exception.InvalidParameterValue(
                    name="pcrs.%s" % alg.name,
                    reason="must map 1 to 24 PCRs to allowed values")
            if alg.alg in banks:
                # "sha256" and "SHA256" are one bank: the second would
                # silently replace the first's values.
                raise exception.InvalidParameterValue(
                    name="pcrs.%s" % alg.name, reason="the bank is named "
                    "twice (%r)" % (bank_name,))
            values: dict[int, frozenset[bytes]] = {}
            for index, allowed in bank.items():
                # Only "0".."23" as written by body(): "00" would replace
                # the values of "0", and str.isdigit() takes "²", which
                # int() refuses.
                if index not in _PCR_INDEXES:
                    raise exception.InvalidParameterValue(
                        name="pcrs.%s" % alg.name,
                        reason="PCR index %r out of range \"0\"-\"23\""
                        % (index,))
                where = "pcrs.%s.%s" % (alg.name, index)
                items = [allowed] if isinstance(allowed, str) else allowed
                if not isinstance(items, list) or not items or \
                        len(items) > MAX_ALLOWED_VALUES:
                    raise exception.InvalidParameterValue(
                        name=where, reason="a hex digest or a list of 1 to "
                        "%d of them" % MAX_ALLOWED_VALUES)
                digests = set()
                for item in items:
                    try:
                        if not isinstance(item, str) or \
                                len(item) != 2 * alg.digest_size:
                            raise ValueError
                        digests.add(bytes.fromhex(item))
                    except ValueError:
                        raise exception.InvalidParameterValue(
                            name=where, reason="%r is not a %d-byte hex "
                            "digest" % (item, alg.digest_size)) from None
                values[int(index)] = frozenset(digests)
            banks[alg.alg] = values
        return cls(name, version, banks, AssuranceLevel(level))

    def body(self) -> dict[str, dict[str, list[str]]]:
        """The stored form (:meth:`from_body` takes it), canonical."""
        return {constants.alg_name(alg): {
            str(pcr): sorted(v.hex() for v in allowed)
            for pcr, allowed in sorted(bank.items())}
            for alg, bank in sorted(self.pcrs.items())}

    def mismatches(self, pcrs: Mapping[int, Mapping[int, bytes]]
                   ) -> list[str]:
        """One reason per PCR of the policy that the (verified) ``pcrs``
        do not satisfy, naming the policy, bank, PCR, what was expected
        and what was quoted."""
        bad = []
        for alg, bank in sorted(self.pcrs.items()):
            for pcr, allowed in sorted(bank.items()):
                value = pcrs.get(alg, {}).get(pcr)
                expected = " or ".join(sorted(v.hex() for v in allowed))
                if value is None:
                    bad.append("instance policy %s: %s PCR %d not quoted "
                               "(expected %s)" % (
                                   self.label, constants.alg_name(alg), pcr,
                                   expected))
                elif value not in allowed:
                    bad.append("instance policy %s: %s PCR %d expected %s, "
                               "got %s" % (self.label,
                                           constants.alg_name(alg), pcr,
                                           expected, value.hex()))
        return bad


def capture_policy(name: str, version: int, level: int,
                   verified: Mapping[str, Mapping[str, str]],
                   pcrs: Iterable[int] | None = None,
                   banks: Iterable[str] | None = None) -> InstancePolicy:
    """An instance policy pinning the PCR values a verdict *verified*
    (``verified``: as :func:`pcrs_wire` stored them), restricted to the
    PCRs ``pcrs`` and banks ``banks`` if given. Golden-measurement
    registration for guests (NFV-SEC 007 7.1.3)."""
    wanted_pcrs = None if pcrs is None else {int(p) for p in pcrs}
    wanted_banks = None if banks is None else {
        constants.alg_name(constants.hash_by_name(b).alg) for b in banks}
    body = {bank: {index: [value] for index, value in values.items()
                   if wanted_pcrs is None or int(index) in wanted_pcrs}
            for bank, values in verified.items()
            if wanted_banks is None or bank in wanted_banks}
    body = {bank: values for bank, values in body.items() if values}
    if not body:
        raise exception.InvalidParameterValue(
            name="pcrs", reason="the verdict verified none of the PCRs "
            "asked for")
    return InstancePolicy.from_body(name, version, level, body)


def pcrs_wire(pcrs: Mapping[int, Mapping[int, bytes]]
              ) -> dict[str, dict[str, str]]:
    """Verified PCR values as stored with an instance verdict (bank name
    -> PCR -> hex): what an instance policy is captured from."""
    return {constants.alg_name(alg): {str(p): v.hex()
                                      for p, v in sorted(bank.items())}
            for alg, bank in sorted(pcrs.items())}


@dataclasses.dataclass(frozen=True)
class Batch:
    """VM quotes of one host, committed to by one host quote."""

    host: str
    verifier_nonce: bytes
    items: tuple[VMEvidence, ...]
    tree: MerkleTree

    @property
    def host_nonce(self) -> bytes:
        return host_nonce(self.verifier_nonce, self.tree.root)


def prepare_batch(host: str, items: Iterable[VMEvidence],
                  verifier_nonce: bytes | None = None) -> Batch:
    """The Merkle tree over the VM quotes and the nonce the host must
    quote over (a fresh verifier nonce unless given)."""
    items = tuple(items)
    if not items or len(items) > MAX_BATCH:
        raise exception.InvalidParameterValue(
            name="instances", reason="1 to %d instances per host quote"
            % MAX_BATCH)
    if len({i.instance for i in items}) != len(items):
        raise exception.InvalidParameterValue(
            name="instances", reason="an instance appears twice")
    nonce = os.urandom(32) if verifier_nonce is None else verifier_nonce
    if len(nonce) != 32:
        raise exception.InvalidParameterValue(
            name="verifier_nonce", reason="32 bytes are required")
    return Batch(host, nonce, items, MerkleTree([i.leaf() for i in items]))


# --- results -----------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class InstanceVerdict:
    """The conductor's conclusion about one instance at one time."""

    instance: str
    host: str
    status: str
    level: int
    reasons: tuple[str, ...]
    appraisal: str
    host_status: str
    host_level: int
    host_quote_sha256: str
    vm_quote_sha256: str
    vtpm_ak_name: str
    vtpm_ek_sha256: str
    verifier_nonce: bytes
    merkle_root: bytes
    leaf_index: int
    tree_size: int
    proof: tuple[bytes, ...]
    issued_at: int
    expires_at: int
    policy: str | None = None

    def claims(self, issuer: str, jti: str) -> dict[str, Any]:
        """The EAR-style claim set: one section per attester."""
        return {
            "ver": INSTANCE_RESULT_VERSION, "iss": issuer,
            "sub": self.instance, "iat": self.issued_at,
            "exp": self.expires_at, "jti": jti,
            "status": self.status, "level": self.level,
            "submods": {
                "host": {"name": self.host, "status": self.host_status,
                         "level": self.host_level,
                         "quote_sha256": self.host_quote_sha256},
                "vm": {"instance": self.instance, "status": self.status,
                       "level": self.level, "appraisal": self.appraisal,
                       "policy": self.policy,
                       "vtpm_ak_name": self.vtpm_ak_name,
                       "vtpm_ek_sha256": self.vtpm_ek_sha256,
                       "quote_sha256": self.vm_quote_sha256,
                       "reasons": list(self.reasons)},
            },
            "binding": {"verifier_nonce": self.verifier_nonce.hex(),
                        "merkle_root": self.merkle_root.hex(),
                        "leaf_index": self.leaf_index,
                        "tree_size": self.tree_size,
                        "proof": [p.hex() for p in self.proof]},
        }


_CLAIMS = frozenset({"ver", "iss", "sub", "iat", "exp", "jti", "status",
                     "level", "submods", "binding"})
_JWS = jwt.PyJWS(algorithms=sorted(keystore.SUPPORTED_ALGORITHMS))


class InstanceResultSigner:
    """Signs instance verdicts like host verdicts (JWS, the conductor's
    key) but with their own ``typ``, so a host-verdict consumer
    (``results.verify_result``) refuses them, and the reverse."""

    def __init__(self, key: keystore.PrivateKey, issuer: str) -> None:
        if not isinstance(key, (ec.EllipticCurvePrivateKey,
                                ed25519.Ed25519PrivateKey)):
            raise exception.InvalidParameterValue(
                name="key", reason="expected an ES256 or Ed25519 key")
        self._key = key
        self.issuer = issuer
        self.alg = keystore.algorithm_for_key(key)
        self.kid = keystore.jwk_thumbprint(key)
        # The compact JWS is assembled here (RFC 7515 7.1) rather than by
        # PyJWS.encode, which rebuilds and re-serialises the same header
        # for every token: a batch signs up to thousands. The header is
        # the one PyJWS writes (sorted keys, no spaces); the signature is
        # PyJWT's own algorithm (raw r||s for ES256).
        self._headers = {typ: _b64url(canonical_json(
            {"alg": self.alg, "kid": self.kid, "typ": typ})) + b"."
            for typ in (INSTANCE_RESULT_TYPE, INSTANCE_BATCH_TYPE)}
        self._algorithm = jwt.algorithms.get_default_algorithms()[self.alg]

    def _jws(self, typ: str, payload: bytes) -> str:
        signing_input = self._headers[typ] + _b64url(payload)
        signature = self._algorithm.sign(signing_input, self._key)
        return (signing_input + b"." + _b64url(signature)).decode("ascii")

    def sign(self, verdict: InstanceVerdict) -> str:
        """One instance's result: a JWS over its claim set."""
        claims = verdict.claims(self.issuer, secrets.token_urlsafe(16))
        return self._jws(INSTANCE_RESULT_TYPE, canonical_json(claims))

    def sign_batch(self, verdicts: Sequence[InstanceVerdict]) -> list[str]:
        """The results of a batch's instances under one signature.

        Each instance's claim set (the same as :meth:`sign` signs, with
        its own random ``jti``, so a sibling's hash reveals nothing of
        its claims) is a leaf of an RFC 9162 Merkle tree; one JWS of type
        :data:`INSTANCE_BATCH_TYPE` signs the root. An instance's result
        is ``JWS~claims~index~proof`` (base64url claims and proof): it
        carries its own claims only, and verifies on its own
        (:func:`verify_instance_result`)."""
        if not verdicts:
            return []
        leaves = [canonical_json(v.claims(self.issuer,
                                          secrets.token_urlsafe(16)))
                  for v in verdicts]
        tree = MerkleTree(leaves)
        batch = self._jws(INSTANCE_BATCH_TYPE, canonical_json({
            "ver": INSTANCE_RESULT_VERSION, "iss": self.issuer,
            "iat": min(v.issued_at for v in verdicts),
            "exp": max(v.expires_at for v in verdicts),
            "jti": secrets.token_urlsafe(16),
            "results": {"root": tree.root.hex(), "size": tree.size}}))
        return [_BATCH_SEPARATOR.join((
            batch, _b64url(leaf).decode("ascii"), str(index),
            _b64url(b"".join(tree.proof(index))).decode("ascii")))
            for index, leaf in enumerate(leaves)]


def _b64url(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


_BATCH_CLAIMS = frozenset({"ver", "iss", "iat", "exp", "jti", "results"})
_MAX_RESULT = 256 * 1024


def _verified_jws(token: str, typ: str,
                  public_keys: Mapping[str, keystore.PublicKey]) -> bytes:
    """The payload of a compact JWS of type ``typ`` whose signature
    verifies with the pinned key its ``kid`` names."""
    if not isinstance(token, str) or token.count(".") != 2:
        raise exception.ResultMalformed(reason="not a compact JWS")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as error:
        raise exception.ResultMalformed(reason=str(error)) from None
    if set(header) != {"alg", "kid", "typ"} or header.get("typ") != typ:
        raise exception.ResultMalformed(
            reason="header is not alg, kid and typ %r" % typ)
    key = public_keys.get(header["kid"]) if isinstance(
        header["kid"], str) else None
    if key is None:
        raise exception.ResultKeyUnknown(kid=repr(header["kid"]))
    alg = keystore.algorithm_for_key(key)
    if header["alg"] != alg:
        raise exception.ResultAlgorithmRejected(
            alg=str(header["alg"]), reason="the key is pinned to %s" % alg)
    try:
        return _JWS.decode_complete(token, key=key,
                                    algorithms=[alg])["payload"]
    except jwt.InvalidSignatureError:
        raise exception.ResultSignatureInvalid() from None
    except jwt.PyJWTError as error:
        raise exception.ResultMalformed(reason=str(error)) from None


def _canonical_object(payload: bytes, keys: frozenset[str], what: str
                      ) -> dict[str, Any]:
    try:
        claims = json.loads(payload)
    except ValueError:
        raise exception.ResultMalformed(reason="%s is not JSON" % what) \
            from None
    if not isinstance(claims, dict) or set(claims) != keys or \
            canonical_json(claims) != payload:
        raise exception.ResultMalformed(
            reason="%s is not the canonical claim set" % what)
    if type(claims["ver"]) is not int or \
            claims["ver"] != INSTANCE_RESULT_VERSION:
        raise exception.ResultMalformed(reason="unknown claim set version")
    iat, exp = claims["iat"], claims["exp"]
    if type(iat) is not int or type(exp) is not int or exp <= iat:
        raise exception.ResultMalformed(reason="bad iat/exp")
    return claims


def _b64url_decode(text: str, what: str) -> bytes:
    if not text or len(text) % 4 == 1 or not set(text) <= _B64URL:
        raise exception.ResultMalformed(reason="%s is not base64url" % what)
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


_B64URL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                    "0123456789-_")


def _batch_claims(token: str,
                  public_keys: Mapping[str, keystore.PublicKey]) -> bytes:
    """The instance claim bytes of a batch-signed result
    (``JWS~claims~index~proof``), once the batch JWS verifies and the
    proof leads from the claims to the root it signed."""
    parts = token.split(_BATCH_SEPARATOR)
    if len(parts) != 4:
        raise exception.ResultMalformed(
            reason="a batch-signed result has four parts")
    jws, claims_b64, index_text, proof_b64 = parts
    batch = _canonical_object(
        _verified_jws(jws, INSTANCE_BATCH_TYPE, public_keys), _BATCH_CLAIMS,
        "batch claims")
    results = batch["results"]
    if not isinstance(results, dict) or set(results) != {"root", "size"} \
            or not isinstance(results["root"], str) \
            or type(results["size"]) is not int:
        raise exception.ResultMalformed(reason="bad batch results")
    try:
        root = bytes.fromhex(results["root"])
    except ValueError:
        root = b""
    if len(root) != 32 or not index_text.isascii() or \
            not index_text.isdigit() or len(index_text) > 9:
        raise exception.ResultMalformed(reason="bad batch root or index")
    claims = _b64url_decode(claims_b64, "claims")
    proof = _b64url_decode(proof_b64, "proof") if proof_b64 else b""
    if len(proof) % 32:
        raise exception.ResultMalformed(reason="bad inclusion proof")
    if not verify_inclusion(claims, int(index_text), results["size"],
                            [proof[i:i + 32]
                             for i in range(0, len(proof), 32)], root):
        # The claims are not what the conductor signed.
        raise exception.ResultSignatureInvalid()
    instance = _canonical_object(claims, _CLAIMS, "claims")
    if instance["iss"] != batch["iss"] or not \
            batch["iat"] <= instance["iat"] < instance["exp"] \
            <= batch["exp"]:
        raise exception.ResultMalformed(
            reason="the claims are not within their batch's")
    return claims


def verify_instance_result(token: str,
                           public_keys: Mapping[str, keystore.PublicKey],
                           now: int, leeway: int = 5) -> dict[str, Any]:
    """The claims of a signed instance verdict (a JWS of its own, or
    batch-signed: see :meth:`InstanceResultSigner.sign_batch`), or a
    :class:`~trusted_pools.exception.SignedResultError`."""
    if not isinstance(token, str) or len(token) > _MAX_RESULT:
        raise exception.ResultMalformed(reason="not an instance result")
    if _BATCH_SEPARATOR in token:
        payload = _batch_claims(token, public_keys)
    else:
        payload = _verified_jws(token, INSTANCE_RESULT_TYPE, public_keys)
    claims = _canonical_object(payload, _CLAIMS, "claims")
    iat, exp = claims["iat"], claims["exp"]
    if iat > now + leeway:
        raise exception.ResultNotYetValid(issued_at=iat, now=now,
                                          leeway=leeway)
    if now >= exp + leeway:
        raise exception.ResultExpired(expires_at=exp, now=now, leeway=leeway)
    return claims


@dataclasses.dataclass(frozen=True)
class InstanceOutcome:
    """One instance of a batch: a verdict (and its token), or the error
    that kept it from one; a policy violation has both."""

    instance: str
    verdict: InstanceVerdict | None = None
    signed_result: str | None = None
    error: DeepAttestationError | None = None
    #: The nonce the verified quote was made over (to spend, when the
    #: caller spends a batch's nonces itself).
    nonce: bytes | None = None
    #: The vTPM PCR values the verified quote covers (with a verdict).
    pcrs: Mapping[int, Mapping[int, bytes]] | None = None


_CA_FIELDS = ("public", "certify_attest", "certify_signature")


def _ca_wire_key(wire: dict[str, str]) -> tuple[str, str, str]:
    return (wire["public"], wire["certify_attest"], wire["certify_signature"])


def _chain_wire(wire: Any, host: str) -> tuple[tuple[str, str, str], str]:
    """A chain's wire form checked for shape only: the CA certification's
    three strings and the certificate (decoded and verified later)."""
    if not isinstance(wire, Mapping) or set(wire) != {"ca", "certificate"}:
        raise vtpm_binding.VTPMCertificateMalformed(
            host=host, reason="a vTPM chain holds exactly ca and certificate")
    ca, certificate = wire["ca"], wire["certificate"]
    if not isinstance(certificate, str):
        raise vtpm_binding.VTPMCertificateMalformed(
            host=host, reason="certificate must be a string")
    if not isinstance(ca, Mapping) or set(ca) != set(_CA_FIELDS) or \
            not all(isinstance(ca[k], str) for k in _CA_FIELDS):
        raise vtpm_binding.VTPMCertificateMalformed(
            host=host, reason="CA certification must hold exactly public, "
            "certify_attest and certify_signature (strings)")
    return _ca_wire_key(ca), certificate


# --- the verifier ------------------------------------------------------------

class DeepVerifier:
    """Deep attestation state of one conductor: the instance nonces it
    issued, its signer, verdict validity and instance policies.

    ``policy_for(instance) -> InstancePolicy | None`` picks an instance's
    policy (None: not appraised). ``policies_for``, if given, replaces it
    with one call per batch: ``policies_for([(instance, nonce), ...])``
    returns the policy (or None) of each verified quote, chosen from the
    instance and the nonce its quote was made over (the challenge, whose
    trusted caller named the image): the conductor's reads them from the
    database in one transaction. Neither sees anything the host or the
    guest chose except the instance id and the nonce, both of which the
    challenge store checks before the verdict counts.

    Levels: an instance with no policy is judged "vTPM-bound, measured"
    at level 1 (IDENTITY); with a policy its PCRs must all match, for
    the policy's level (2 or 3); a mismatch is ``untrusted``. Always
    capped at the host's current level."""

    def __init__(self, signer: InstanceResultSigner | None = None, *,
                 nonces: InstanceChallenges | None = None,
                 validity: int = 300,
                 max_host_age: int | None = None,
                 policy_for: Callable[[str], InstancePolicy | None]
                 = lambda instance: None,
                 policies_for: Callable[
                     [Sequence[tuple[str, bytes]]],
                     Sequence[InstancePolicy | None]] | None = None
                 ) -> None:
        self.signer = signer
        self.nonces: InstanceChallenges = nonces or NonceBook()
        self.validity = validity
        self.max_host_age = max_host_age
        self.policy_for = policy_for
        self.policies_for = policies_for
        # Verified CA certifications: (AK name, CA certification) -> CA
        # key; verified chains: (AK name, CA certification, certificate,
        # instance) -> bound vTPM. The same inputs verify the same way, so
        # an instance attested again costs its quote only.
        self._cas: dict[tuple[bytes, vtpm_binding.CACertification],
                        structures.Public] = {}
        self._bound: dict[tuple[bytes, tuple[str, str, str], str, str],
                          vtpm_binding.BoundVTPM] = {}
        # A batch's instances carry the same CA certification (their
        # host's): its wire form (three base64url strings) -> the parsed
        # certification, so it is decoded once, not once per instance.
        self._ca_wires: dict[tuple[str, str, str],
                             vtpm_binding.CACertification] = {}

    def clear_cache(self) -> None:
        """Forget verified CA certifications and chains."""
        self._cas.clear()
        self._bound.clear()
        self._ca_wires.clear()

    def challenge(self, instance: str, host: str | None = None,
                  image: str | None = None) -> bytes:
        """A fresh nonce for the guest of ``instance`` (on ``host``, if
        named; of ``image``, as the trusted caller named it) to quote
        over."""
        if image is None:
            return self.nonces.issue(instance, host)
        return self.nonces.issue(instance, host, image=image)

    # host side ------------------------------------------------------------

    def check_host(self, subject: str, standing: HostStanding,
                   now: int) -> None:
        if standing.status != "trusted" or standing.level < 1:
            raise HostNotTrusted(
                subject=subject, reason="host %s is %s at level %d"
                % (standing.host, standing.status, standing.level))
        if now >= standing.expires_at:
            raise HostVerdictStale(
                subject=subject, reason="the verdict of host %s expired %d s "
                "ago" % (standing.host, now - standing.expires_at))
        if self.max_host_age is not None and \
                now - standing.issued_at > self.max_host_age:
            raise HostVerdictStale(
                subject=subject, reason="the verdict of host %s is %d s old "
                "(at most %d)" % (standing.host, now - standing.issued_at,
                                  self.max_host_age))

    def verify_host_quote(self, batch: Batch, host_ak: structures.Public,
                          host_quote: HostQuote, *,
                          baseline: Any = None,
                          boot_pcrs: Iterable[tuple[int, int, bytes]]
                          | None = None,
                          allow_sha1: bool = False) -> quotes.VerifiedQuote:
        """The host quote must verify with the registered AK over the
        batch's host nonce, in the same TPM boot as ``baseline`` (the
        clock of the quote behind the host's verdict) and after it, and
        quote the same values of the PCRs in ``boot_pcrs`` ((bank, PCR,
        value) of the boot the verifier last verified) as that boot."""
        subject = "host %s" % batch.host
        try:
            verified = quotes.verify_quote(
                host_ak, host_quote.quote, host_quote.signature,
                batch.host_nonce, host_quote.pcrs, allow_sha1=allow_sha1)
        except exception.NonceMismatch:
            raise HostQuoteNotCommitted(
                subject=subject, reason="the host quoted over another nonce "
                "than the commitment to this batch") from None
        except exception.EvidenceError as error:
            raise HostQuoteInvalid(subject=subject, reason=str(error)) \
                from None
        if baseline is not None:
            clock = verified.clock_info
            if (clock.reset_count, clock.restart_count) != (
                    baseline.reset_count, baseline.restart_count):
                raise HostVerdictStale(
                    subject=subject, reason="the host TPM was reset or "
                    "restarted since the quote behind its verdict (counts "
                    "%d/%d, were %d/%d)" % (
                        clock.reset_count, clock.restart_count,
                        baseline.reset_count, baseline.restart_count))
            if clock.clock <= baseline.clock:
                raise HostQuoteInvalid(
                    subject=subject, reason="TPM clock %d is not after %d: "
                    "not a fresh quote" % (clock.clock, baseline.clock))
        changed = sorted(
            (bank, pcr) for bank, pcr, value in boot_pcrs or ()
            if verified.pcrs.get(bank, {}).get(pcr) != value)
        if changed:
            raise HostVerdictStale(
                subject=subject, reason="boot PCR(s) %s differ from the boot "
                "its verdict judged (or were not quoted)" % ", ".join(
                    "%s:%d" % (constants.alg_name(b), p) for b, p in changed))
        return verified

    # vm side --------------------------------------------------------------

    def _ca(self, host: str, host_ak: structures.Public,
            certification: vtpm_binding.CACertification
            ) -> structures.Public:
        key = (host_ak.name(), certification)
        ca = self._cas.get(key)
        if ca is None:
            ca = vtpm_binding.verify_ca(host, host_ak, certification)
            if len(self._cas) >= _MAX_CACHED:
                self._cas.clear()
            self._cas[key] = ca
        return ca

    def bind(self, host: str, host_ak: structures.Public,
             item: VMEvidence) -> vtpm_binding.BoundVTPM:
        """The vTPM of ``item`` bound to ``host`` through the host's
        registered AK. Per batch the host's CA certification is decoded
        and verified once (looked up by its wire form, then by its
        content); per instance only its certificate is verified, once
        for the same (AK, CA, certificate, instance)."""
        try:
            if isinstance(item.chain, vtpm_binding.VTPMChain):
                ca_wire = _ca_wire_key(item.chain.ca.to_wire())
                certificate = item.chain.certificate
            else:
                ca_wire, certificate = _chain_wire(item.chain, host)
            key = (host_ak.name(), ca_wire, certificate, item.instance)
            bound = self._bound.get(key)
            if bound is None:
                ca = self._ca(host, host_ak, self._ca_certification(
                    host, ca_wire))
                bound = vtpm_binding.verify_certificate(
                    certificate, ca, host, item.instance)
                if len(self._bound) >= _MAX_CACHED:
                    self._bound.clear()
                self._bound[key] = bound
            return bound
        except vtpm_binding.VTPMChainForeignHost as error:
            raise VMChainForeignHost(subject=item.instance,
                                     reason=error.message) from None
        except vtpm_binding.VTPMBindingRefused as error:
            raise VMChainRefused(subject=item.instance,
                                 reason=error.message) from None

    def _ca_certification(self, host: str, wire: tuple[str, str, str]
                          ) -> vtpm_binding.CACertification:
        certification = self._ca_wires.get(wire)
        if certification is None:
            certification = vtpm_binding.CACertification.from_wire(
                dict(zip(_CA_FIELDS, wire)), host)
            if len(self._ca_wires) >= _MAX_CACHED:
                self._ca_wires.clear()
            self._ca_wires[wire] = certification
        return certification

    def _verify_vm_signature(self, bound: vtpm_binding.BoundVTPM,
                             item: VMEvidence) -> quotes.VerifiedQuote:
        """The guest's quote verified with the bound vTPM AK, over the
        nonce it names (whether that nonce was issued is asked later,
        for the whole batch at once). The fast path of
        :func:`~trusted_pools.tpm.quote.verify_quote` reads the nonce
        from the quote itself; only a quote it does not accept is parsed
        here for the reference verifier."""
        try:
            extra_data = _quote_extra_data(item.quote)
            return quotes.verify_quote(bound.ak, item.quote, item.signature,
                                       extra_data, item.pcrs)
        except exception.EvidenceError as error:
            raise VMQuoteInvalid(subject=item.instance,
                                 reason=str(error)) from None

    # the batch ------------------------------------------------------------

    def verify_batch(self, batch: Batch, *, host_ak: structures.Public,
                     standing: HostStanding, host_quote: HostQuote,
                     now: int, baseline: Any = None,
                     boot_pcrs: Iterable[tuple[int, int, bytes]]
                     | None = None,
                     allow_sha1: bool = False,
                     spend_nonces: bool = True) -> list[InstanceOutcome]:
        """Judge every instance of ``batch``. Raises for what fails them
        all (the host); returns one outcome per instance, in order.

        Three passes: every instance's evidence is verified (chain, quote
        signature, commitment); the nonces of those that verified are
        spent together (one call to the challenge store); the verdicts
        of those whose nonce was spent are made and signed.

        ``spend_nonces=False``: the caller spends them (each verdict's
        outcome carries its ``nonce``), together with storing the
        verdicts: the conductor does both in one database transaction
        and drops, unreleased, the verdict of a nonce it could not
        spend."""
        self.check_host("host %s" % batch.host, standing, now)
        self.verify_host_quote(
            batch, host_ak, host_quote, baseline=baseline,
            boot_pcrs=boot_pcrs, allow_sha1=allow_sha1)
        # The host quoted over the commitment to this tree (checked just
        # above); the tree must be over exactly these VM quotes. Then each
        # quote's inclusion proof holds by construction: it is checked
        # once here for the batch, not walked again per instance (the
        # results carry the proofs, for whoever holds them:
        # check_commitment).
        if not batch.tree.has_leaves([item.leaf() for item in batch.items]):
            raise HostQuoteNotCommitted(
                subject="host %s" % batch.host, reason="the batch's Merkle "
                "tree is not over its VM quotes")
        outcomes: list[InstanceOutcome | None] = [None] * len(batch.items)
        checked: list[tuple[int, vtpm_binding.BoundVTPM,
                            quotes.VerifiedQuote]] = []
        for index, item in enumerate(batch.items):
            try:
                bound = self.bind(batch.host, host_ak, item)
                verified_vm = self._verify_vm_signature(bound, item)
                checked.append((index, bound, verified_vm))
            except DeepAttestationError as error:
                outcomes[index] = InstanceOutcome(item.instance, error=error)
        spent: list[DeepAttestationError | None] = [None] * len(checked)
        if spend_nonces and checked:
            spent = self.nonces.consume_many(batch.host, [
                (batch.items[index].instance, verified.attest.extra_data)
                for index, _bound, verified in checked])
        host_digest = hashlib.sha256(host_quote.quote).hexdigest()
        policies = self._policies(batch, checked)
        judged: list[InstanceOutcome] = []
        for (index, bound, verified_vm), error, policy in zip(
                checked, spent, policies):
            item = batch.items[index]
            if error is not None:
                outcomes[index] = InstanceOutcome(item.instance, error=error)
            else:
                outcomes[index] = outcome = self._verdict(
                    batch, index, item, bound, verified_vm, standing,
                    host_digest, now, policy)
                judged.append(outcome)
        if self.signer is not None and judged:
            # One signature for the batch (each result carries its own
            # claims and their inclusion proof), not one per instance.
            tokens = self.signer.sign_batch(
                [o.verdict for o in judged if o.verdict is not None])
            signed = {o.instance: dataclasses.replace(o, signed_result=t)
                      for o, t in zip(judged, tokens)}
            outcomes = [signed.get(o.instance, o) if o is not None else o
                        for o in outcomes]
        return [o for o in outcomes if o is not None]

    def _policies(self, batch: Batch,
                  checked: Sequence[tuple[int, vtpm_binding.BoundVTPM,
                                          quotes.VerifiedQuote]]
                  ) -> list[InstancePolicy | None]:
        """The policy of each verified quote of the batch (None: none)."""
        if not checked:
            return []
        if self.policies_for is None:
            return [self.policy_for(batch.items[index].instance)
                    for index, _bound, _verified in checked]
        found = list(self.policies_for([
            (batch.items[index].instance, verified.attest.extra_data)
            for index, _bound, verified in checked]))
        if len(found) != len(checked):
            raise exception.TemporaryFailure(
                reason="the instance policy store answered %d policies for "
                "%d instances" % (len(found), len(checked)))
        return found

    def _verdict(self, batch: Batch, index: int, item: VMEvidence,
                 bound: vtpm_binding.BoundVTPM,
                 verified_vm: quotes.VerifiedQuote, standing: HostStanding,
                 host_digest: str, now: int,
                 policy: InstancePolicy | None) -> InstanceOutcome:
        reasons: list[str] = []
        error = None
        if policy is None:
            own, appraisal = AssuranceLevel.IDENTITY, "vtpm-bound-measured"
            status = "trusted"
        else:
            bad = policy.mismatches(verified_vm.pcrs)
            appraisal = "policy"
            if bad:
                reasons = bad
                own, status = AssuranceLevel.IDENTITY, "untrusted"
                error = VMPolicyViolation(subject=item.instance,
                                          reason="; ".join(bad))
            else:
                own, status = policy.level, "trusted"
        level = min(int(own), int(standing.level))
        verdict = InstanceVerdict(
            instance=item.instance, host=batch.host, status=status,
            level=level, reasons=tuple(reasons), appraisal=appraisal,
            host_status=standing.status, host_level=int(standing.level),
            host_quote_sha256=host_digest,
            vm_quote_sha256=hashlib.sha256(item.quote).hexdigest(),
            vtpm_ak_name=bound.ak.name().hex(),
            vtpm_ek_sha256=bound.ek_sha256,
            verifier_nonce=batch.verifier_nonce,
            merkle_root=batch.tree.root, leaf_index=index,
            tree_size=batch.tree.size, proof=batch.tree.proof(index),
            issued_at=now,
            expires_at=min(now + self.validity, standing.expires_at),
            policy=None if policy is None else policy.label)
        return InstanceOutcome(item.instance, verdict, None, error,
                               verified_vm.attest.extra_data,
                               verified_vm.pcrs)


def _quote_extra_data(quote: bytes) -> bytes:
    """The extraData (the nonce) a TPMS_ATTEST names, read without
    parsing the rest: magic (4), type (2), qualifiedSigner (2 + n),
    extraData (2 + n). Anything short or odd goes through the full
    parser, whose error is the one reported."""
    if len(quote) >= 10:
        signer = int.from_bytes(quote[6:8], "big")
        start = 8 + signer
        if len(quote) >= start + 2:
            size = int.from_bytes(quote[start:start + 2], "big")
            if len(quote) >= start + 2 + size:
                return quote[start + 2:start + 2 + size]
    return structures.parse_attest(quote).extra_data
