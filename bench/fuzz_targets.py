"""Fuzz targets: every evidence parser, RPC entry point and REST route.

Each :class:`Target` is a function of one ``bytes`` input (see
:mod:`bench.fuzz_input` for how structure is read from it) plus seeds, the
real examples the engines start mutating from. The contract every target
checks, whatever the input:

* it raises nothing but a :class:`trusted_pools.exception.TrustedPoolsError`
  (for an RPC endpoint: the ``ExpectedException`` oslo.messaging wraps one
  in);
* it never returns a verified or trusted result: every seed that could
  verify is made so that it must not (a genuine quote over another nonce,
  a token signed by a key the verifier does not hold or long expired), so
  any verified result is a forgery the code let through;
* it ends within the engine's per-input time budget.

A target signals a broken contract by raising :class:`Violation`.

The REST API (``trusted_pools/api``) has one target per route and method,
``api.<method>.<path>``, built by :func:`register_api_targets` on the
harness in :mod:`bench.fuzz_api` (the contract is written there).
"""

from __future__ import annotations

import base64
import datetime
import functools
import hashlib
import json
import logging
import os
import pathlib
import struct
import tempfile
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from bench.fuzz_input import Source, pack, structured
from trusted_pools import exception

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"


class Violation(AssertionError):
    """The target broke its contract (a verified or trusted result, an
    untyped error hidden in a log, the TPM touched by a refused call)."""


@dataclass(frozen=True)
class Target:
    name: str
    run: Callable[[bytes], Any]
    seeds: Callable[[], list[bytes]] = lambda: []
    doc: str = ""
    #: Extra exception types that count as typed refusals.
    allowed: tuple[type[BaseException], ...] = field(default=())


TARGETS: dict[str, Target] = {}


def target(name: str, seeds: Callable[[], list[bytes]] | None = None,
           allowed: tuple[type[BaseException], ...] = ()):
    def register(fn: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
        TARGETS[name] = Target(name, fn, seeds or (lambda: []),
                               (fn.__doc__ or "").strip().splitlines()[0],
                               allowed)
        return fn
    return register


class SetupError(RuntimeError):
    """Shared material could not be made: never a typed refusal, so a
    broken setup cannot pass for a target that refuses everything."""


def _shared(fn: Callable[[], Any]) -> Callable[[], Any]:
    """Made once per process; any error while making it is a SetupError."""
    @functools.lru_cache(maxsize=None)
    @functools.wraps(fn)
    def made() -> Any:
        try:
            return fn()
        except Exception as error:  # noqa: BLE001 - re-raised untyped
            raise SetupError("fuzz setup %s failed: %r"
                             % (fn.__name__, error)) from error
    return made


def _must_fail(what: str, call: Callable[[], Any]) -> None:
    """``call`` must raise a typed error; returning means it verified."""
    try:
        result = call()
    except exception.TrustedPoolsError:
        return
    raise Violation("%s verified a generated input: %r" % (what, result))


# --- shared material (made once per process) ---------------------------------

@_shared
def _aks() -> tuple[Any, Any]:
    from tests import soft_tpm
    return soft_tpm.SoftAK.ecc(), soft_tpm.SoftAK.rsa()


_NONCE = b"N" * 32          # what the verifier expects
_OTHER_NONCE = b"O" * 32     # what every seed quote is over


def _quote_pcrs() -> dict[int, dict[int, bytes]]:
    from trusted_pools.tpm.constants import TPM_ALG
    return {TPM_ALG.SHA256: {0: bytes(32), 7: b"\x07" * 32},
            TPM_ALG.SHA1: {10: b"\x0a" * 20}}


@_shared
def _genuine_quotes() -> list[tuple[bytes, bytes]]:
    """Real (quote, signature) pairs over ``_OTHER_NONCE``."""
    return [ak.quote(_OTHER_NONCE, _quote_pcrs()) for ak in _aks()]


def _event_logs() -> list[bytes]:
    logs = []
    for path in sorted((DATA / "eventlog").glob("**/*")):
        if not path.is_file() or path.name.endswith(".yaml"):
            continue
        raw = path.read_bytes()
        if path.name.endswith(".b64"):
            raw = base64.b64decode(raw)
        logs.append(raw)
    return logs


def _ima_logs() -> list[bytes]:
    from tests import ima_gen
    logs = [p.read_bytes()[:20000]
            for p in sorted((DATA / "ima" / "keylime").glob("*"))]
    ascii_log = ima_gen.generate_ascii_log(30, seed=1)
    sig_log = ima_gen.generate_ascii_log(10, template="ima-sig", seed=2)
    return logs + [ascii_log, sig_log, ima_gen.ascii_to_binary(ascii_log),
                   ima_gen.ascii_to_binary(sig_log)]


# --- the evidence library (trusted_pools/tpm) --------------------------------

def _public_seeds() -> list[bytes]:
    from trusted_pools.tpm import structures
    out = []
    for ak in _aks():
        out.append(ak.public_bytes)
        out.append(structures.marshal_tpm2b(ak.public_bytes))
    return out


@target("tpm.public", _public_seeds)
def fuzz_public(data: bytes) -> None:
    """TPMT_PUBLIC / TPM2B_PUBLIC parsers, key extraction, AK rules."""
    from trusted_pools.tpm import keys, structures
    for parse in (structures.parse_public, structures.parse_public_b,
                  structures.load_public):
        try:
            public = parse(data)
        except exception.TrustedPoolsError:
            continue
        public.name()
        public.marshal_b()
        public.public_key()
        try:
            keys.check_ak_attributes(public)
        except exception.TrustedPoolsError:
            pass


@target("tpm.attest", lambda: [q for q, _ in _genuine_quotes()])
def fuzz_attest(data: bytes) -> None:
    """TPMS_ATTEST parser."""
    from trusted_pools.tpm import structures
    structures.parse_attest(data)


@target("tpm.signature", lambda: [s for _, s in _genuine_quotes()])
def fuzz_signature(data: bytes) -> None:
    """TPMT_SIGNATURE parser."""
    from trusted_pools.tpm import structures
    structures.parse_signature(data)


def _selection_seeds() -> list[bytes]:
    from trusted_pools.tpm import structures
    from trusted_pools.tpm.constants import TPM_ALG
    return [structures.marshal_pcr_selection_list([
        structures.PCRSelection(TPM_ALG.SHA256, frozenset({0, 7, 23})),
        structures.PCRSelection(TPM_ALG.SHA1, frozenset({10}))])]


@target("tpm.pcr_selection", _selection_seeds)
def fuzz_pcr_selection(data: bytes) -> None:
    """TPML_PCR_SELECTION parser."""
    from trusted_pools.tpm import structures
    structures.parse_pcr_selection_list(data)


def _quote_seeds() -> list[bytes]:
    return [bytes([i]) + pack(q, s)
            for i, (q, s) in enumerate(_genuine_quotes())]


@target("tpm.verify_quote", _quote_seeds)
def fuzz_verify_quote(data: bytes) -> None:
    """verify_quote with a real AK: quote and signature from the input,
    never over the nonce asked for, so it must never verify."""
    from trusted_pools.tpm import quote, structures
    src = Source(data)
    ak = _aks()[src.byte() % 2]
    quote_bytes, signature = src.chunk(), src.chunk()
    public = structures.parse_public(ak.public_bytes)
    _must_fail("verify_quote", lambda: quote.verify_quote(
        public, quote_bytes, signature, _NONCE, _quote_pcrs()))


def _pcr_file_seeds() -> list[bytes]:
    from trusted_pools.tpm.constants import TPM_ALG
    values = b"\x11" * 32 + b"\x22" * 32
    # tpm2-tools' C structs, little-endian: 16 selection slots, then one
    # TPML_DIGEST of 8 TPM2B_DIGEST slots.
    slots = [struct.pack("<HB4sB", TPM_ALG.SHA256, 3, b"\x03\0\0\0", 0)]
    slots += [bytes(8)] * 15
    digests = [struct.pack("<H", 32) + v.ljust(64, b"\0")
               for v in (values[:32], values[32:])]
    digests += [bytes(66)] * 6
    serialized = (struct.pack("<I", 1) + b"".join(slots)
                  + struct.pack("<II", 1, 2) + b"".join(digests))
    text = (b"sha256:\n  0 : 0x" + b"11" * 32
            + b"\n  1 : 0x" + b"22" * 32 + b"\n")
    return [b"\x00" + values, b"\x01" + serialized, b"\x02" + text]


@target("tpm.pcr_files", _pcr_file_seeds)
def fuzz_pcr_files(data: bytes) -> None:
    """tpm2-tools PCR files (values, serialized, text) via load_pcr_values."""
    from trusted_pools.tpm import pcrs, structures
    from trusted_pools.tpm.constants import TPM_ALG
    selection = [structures.PCRSelection(TPM_ALG.SHA256, frozenset({0, 1}))]
    mode, body = data[:1], data[1:]
    pcrs.load_pcr_values(body, selection if mode == b"\x00" else None)
    pcrs.parse_text(body)


def _foreign_pcrs() -> dict[int, dict[int, bytes]]:
    from trusted_pools.tpm.constants import TPM_ALG
    return {TPM_ALG.SHA256: {i: bytes([0x5a + i]) * 32 for i in range(10)},
            TPM_ALG.SHA1: {i: bytes([0x5a + i]) * 20 for i in range(10)}}


@target("tpm.eventlog", _event_logs)
def fuzz_eventlog(data: bytes) -> None:
    """TCG event log: parse, replay, verify against its own replay, decode
    and summarise; verifying against unrelated PCR values must fail."""
    from trusted_pools.tpm import eventlog, eventlog_decode
    log = eventlog.parse_event_log(data)
    replayed = eventlog.replay_event_log(log)
    _must_fail("verify_event_log (foreign PCRs)",
               lambda: eventlog.verify_event_log(log, _foreign_pcrs()))
    if not replayed:
        return
    verified = eventlog.verify_event_log(log, replayed)
    eventlog_decode.decode_events(verified)
    eventlog_decode.summarize(verified)


def _efi_seeds() -> list[bytes]:
    """UEFI event data bodies from the real logs, tagged by parser."""
    from trusted_pools.tpm import eventlog
    out = []
    for raw in _event_logs()[:6]:
        try:
            log = eventlog.parse_event_log(raw)
        except exception.TrustedPoolsError:
            continue
        for event in log.events[:60]:
            out.append(bytes([event.event_type % 7]) + event.data[:2048])
    return out[:200]


@target("tpm.efi", _efi_seeds)
def fuzz_efi(data: bytes) -> None:
    """UEFI structures: variable data, signature lists, device paths, load
    options, image load events, GPT, boot order."""
    from trusted_pools.tpm import efi
    parsers = (efi.parse_variable_data, efi.parse_signature_lists,
               efi.parse_signature_data, efi.parse_device_path,
               efi.parse_load_option, efi.parse_image_load_event,
               efi.parse_gpt_data, efi.parse_boot_order)
    body = data[1:]
    parsers[data[0] % len(parsers) if data else 0](body)
    if data[:1] == b"\x00":
        # A variable's value holds the next structure (db, BootOrder, ...).
        value = efi.parse_variable_data(body).value
        for parse in parsers[1:]:
            try:
                parse(value)
            except exception.TrustedPoolsError:
                pass


def _ima_seeds(fmt: str) -> Callable[[], list[bytes]]:
    def seeds() -> list[bytes]:
        return [log for log in _ima_logs()
                if (log[:1].isdigit()) == (fmt == "ascii")]
    return seeds


def _ima_quoted() -> dict[int, bytes]:
    from trusted_pools.tpm.constants import TPM_ALG
    return {TPM_ALG.SHA256: b"\x5a" * 32, TPM_ALG.SHA1: b"\x5a" * 20}


def _fuzz_ima(data: bytes, fmt: str) -> None:
    from trusted_pools.tpm import ima
    from trusted_pools.tpm.constants import TPM_ALG
    th_alg = None if fmt == "ascii" or not data[:1] == b"\x01" else \
        TPM_ALG.SHA256
    try:
        entries = ima.parse_ima_log(data, fmt=fmt, template_hash_alg=th_alg,
                                    max_entries=2000)
        ima.replay_ima(entries, [TPM_ALG.SHA256, TPM_ALG.SHA1])
    except exception.TrustedPoolsError:
        pass
    for offset in (0, len(data) // 2):
        try:
            ima.count_entries(data, fmt, offset=offset, count=50,
                              template_hash_alg=th_alg)
        except exception.TrustedPoolsError:
            pass
    if fmt == "binary":
        try:
            ima.walk_binary_entries(data, 0, 100, template_hash_alg=th_alg)
        except exception.TrustedPoolsError:
            pass
    start = ima.ReplayState.initial([TPM_ALG.SHA256, TPM_ALG.SHA1])
    for tail in (False, True):
        result = None
        try:
            result = ima.verify_ima_log(data, _ima_quoted(), start, fmt=fmt,
                                        tail=tail, template_hash_alg=th_alg)
        except exception.TrustedPoolsError:
            continue
        # The quoted PCR 10 is no replay of any prefix (not even the
        # empty one): a result may only say nothing was accepted.
        if result is not None and getattr(result, "entries", ()):
            raise Violation("verify_ima_log accepted entries against an "
                            "unrelated PCR 10: %r" % (result,))


@target("tpm.ima_ascii", _ima_seeds("ascii"))
def fuzz_ima_ascii(data: bytes) -> None:
    """IMA ascii list: parse, replay, count, verify (whole and tail)."""
    _fuzz_ima(data, "ascii")


@target("tpm.ima_binary", _ima_seeds("binary"))
def fuzz_ima_binary(data: bytes) -> None:
    """IMA binary list: parse, replay, walk/count tails, verify."""
    _fuzz_ima(data, "binary")


@target("tpm.ima_templates", lambda: [b"\x00" + pack(b"sha256:" + b"ab" * 32,
                                                      b"/usr/bin/x")])
def fuzz_ima_templates(data: bytes) -> None:
    """IMA template fields: split template data, fields from ascii."""
    from trusted_pools.tpm import ima_templates
    src = Source(data)
    count = src.byte() % 6
    ima_templates.split_template_data(src.chunk(), count, 1)
    kinds = sorted({kind for name in ("ima", "ima-ng", "ima-sig",
                                      "ima-buf", "ima-modsig")
                    for _, kind in (ima_templates.field_kinds(name) or ())})
    if kinds:
        ima_templates.field_from_ascii("d-ng", src.choice(kinds),
                                       src.chunk(), 1)


def _key_seeds() -> list[bytes]:
    from trusted_pools.protocol import keystore
    key = keystore.generate_signing_key()
    pem = keystore.public_key_pem(key).encode()
    jwks = json.dumps({"keys": [keystore.public_jwk(key)]}).encode()
    return [b"\x00" + pem, b"\x01" + jwks, b"\x02" + pem,
            b"\x03" + _aks()[1].public_bytes]


@target("keys.loaders", _key_seeds)
def fuzz_key_loaders(data: bytes) -> None:
    """Key and credential loaders: pinned conductor keys (PEM/JWKS), PEM
    public keys, JWKs, CA bundles, MakeCredential on a parsed EK."""
    from trusted_pools.protocol import agent_requests
    from trusted_pools.verifier import enrollment
    from trusted_pools.protocol import keystore
    from trusted_pools.tpm import credential, structures
    mode, body = (data[0] % 5 if data else 0), data[1:]
    if mode == 0:
        agent_requests.parse_pinned_keys(body)
    elif mode == 1:
        try:
            jwk = json.loads(body)
        except ValueError:
            jwk = body.decode("latin-1")
        keystore.public_key_from_jwk(jwk)
        if isinstance(jwk, dict) and isinstance(jwk.get("keys"), list):
            for item in jwk["keys"][:4]:
                try:
                    keystore.public_key_from_jwk(item)
                except exception.TrustedPoolsError:
                    pass
    elif mode == 2:
        keystore.public_key_from_pem(body)
    elif mode == 3:
        ek = structures.parse_public(body)
        credential.make_credential(ek, b"\x00\x0b" + bytes(32),
                                   b"s" * 16)
    else:
        enrollment.load_ca_bundle(body)


# --- the verifier's inputs (trusted_pools/attestation) -----------------------

_WIRE_KEYS = ["version", "host", "epoch_id", "quote", "signature", "pcrs",
              "event_log", "event_log_digest", "ima", "start", "data",
              "format", "template_hash_alg", "count", "sha256", "sha1",
              "11", "4", "0", "7", "10", "x"]


@_shared
def _wire_seeds() -> list[dict[str, Any]]:
    from tests import ima_gen
    from trusted_pools.protocol.evidence import Evidence, IMATail
    out = []
    ascii_log = ima_gen.generate_ascii_log(3, seed=3)
    for (q, s), ima_tail, version_log in zip(
            _genuine_quotes(),
            (IMATail(0, ascii_log), IMATail(
                2, ima_gen.ascii_to_binary(ascii_log), "binary")),
            (_event_logs()[0][:4000], None)):
        wire = Evidence(host="compute-1", quote=q, signature=s,
                        pcrs=_quote_pcrs(), epoch_id="1-x",
                        event_log=version_log,
                        event_log_digest=None if version_log else "ab" * 32,
                        ima=ima_tail).to_wire()
        out.append(wire)
    return out


@target("attestation.evidence_wire")
def fuzz_evidence_wire(data: bytes) -> None:
    """Evidence.from_wire on structured random JSON and mutated wires."""
    from trusted_pools.protocol.evidence import Evidence
    wire = structured(Source(data), _wire_seeds(), _WIRE_KEYS)
    evidence = Evidence.from_wire(wire)
    evidence.digest()
    evidence.to_wire()


_POLICY_KEYS = [
    "kind", "pcrs", "platform_firmware", "os_boot", "description",
    "annotations", "sha256", "sha1", "0", "7", "10", "crtm_versions",
    "firmware_digests", "secure_boot", "required", "pk", "db",
    "dbx_contains", "boot_loaders", "kernels", "initrds", "boot_files",
    "kernel_command_lines", "allow_any_kernel_command_line", "digests",
    "excludes", "allow_unknown", "allow_violations",
    "require_boot_aggregate", "/usr/bin/bash", "/tmp/*"]


@_shared
def _policy_seeds() -> list[Any]:
    hex32 = "ab" * 32
    out: list[Any] = [
        {"kind": "measured_boot", "pcrs": {"sha256": {"0": hex32}},
         "platform_firmware": {"crtm_versions": ["edk2"]},
         "os_boot": {"boot_loaders": {"sha256": [hex32]},
                     "kernels": {"sha256": [hex32]},
                     "kernel_command_lines": ["ro quiet"]}},
        {"kind": "ima", "digests": {"/usr/bin/bash": ["sha256:" + hex32]},
         "excludes": ["/tmp/*", "/var/log/"]}]
    for path in sorted((ROOT / "etc" / "trusted-pools" / "policies")
                       .glob("*.json")):
        out.append(json.loads(path.read_text()))
    return out


@target("attestation.policy")
def fuzz_policy(data: bytes) -> None:
    """load_policy (both kinds) on random and mutated bodies; a loaded
    policy must survive its own round trip."""
    from trusted_pools.verifier import policy
    src = Source(data)
    kind = src.choice([policy.KIND_MEASURED_BOOT, policy.KIND_RUNTIME])
    body = structured(src, _policy_seeds(), _POLICY_KEYS)
    loaded = policy.load_policy(kind, body, name="fuzz", version=1)
    again = policy.load_policy(kind, loaded.to_json(), name="fuzz",
                               version=1)
    if again.to_json() != loaded.to_json():
        raise Violation("policy round trip changed: %r" % (body,))
    if kind == policy.KIND_RUNTIME:
        loaded.allowed("/usr/bin/bash")
        loaded.is_excluded("/tmp/x")


@_shared
def _result_keys() -> tuple[Any, Any, dict[str, Any]]:
    """(trusted key, foreign key, the verifier's key set)."""
    from trusted_pools.protocol import keystore
    trusted = keystore.generate_signing_key()
    foreign = keystore.generate_signing_key()
    return trusted, foreign, keystore.key_set([trusted.public_key()])


_NOW = 2_000_000_000


@_shared
def _token_seeds() -> list[str]:
    """Tokens that must not verify: signed by a key the verifier does not
    hold, or by its key but expired long before ``_NOW``."""
    from trusted_pools.protocol import results, verdict as verdict_mod
    from trusted_pools.protocol.levels import AssuranceLevel, Outcome
    from trusted_pools.protocol.levels import Rung
    trusted, foreign, _ = _result_keys()
    out = []
    for key, issued in ((foreign, _NOW), (trusted, _NOW - 10 ** 6)):
        v = verdict_mod.make_verdict(
            host="compute-1", outcomes={r: Outcome.PASSED for r in Rung},
            required_level=AssuranceLevel.OS_BOOT, policy_versions={},
            evidence_digest=verdict_mod.evidence_digest(b"{}"),
            issued_at=issued, validity=180, reasons=[])
        if v.status is not verdict_mod.Status.TRUSTED:
            raise AssertionError("seed verdict should be a trusted one")
        out.append(results.sign_verdict(v, key, "c-a", sequence=1))
    return out


def _token(src: Source) -> Any:
    mode = src.byte() % 4
    seeds = _token_seeds()
    if mode == 0:
        return structured(src, [], ["."])
    token = bytearray(src.choice(seeds).encode())
    for _ in range(1 + src.below(4)):
        op = src.byte() % 4
        pos = src.below(len(token) + 1)
        if op == 0 and token:
            token[min(pos, len(token) - 1)] = src.choice(
                b"ABCxyz019-_.=+/\x00\xff")
        elif op == 1:
            token[pos:pos] = src.take(src.below(6))
        elif op == 2:
            del token[pos:pos + src.below(8)]
        elif mode == 3:
            parts = bytes(token).split(b".")
            if len(parts) == 3:
                # A foreign header or payload spliced onto a genuine one.
                other = src.choice(seeds).encode().split(b".")
                i = src.below(3)
                parts[i] = other[i]
                token = bytearray(b".".join(parts))
    return token.decode("latin-1")


@target("attestation.signed_results")
def fuzz_signed_results(data: bytes) -> None:
    """verify_signed_result (PyJWT underneath) on random and mutated
    tokens that must never verify."""
    from trusted_pools.protocol import results
    _, _, keyset = _result_keys()
    src = Source(data)
    token = _token(src)
    _must_fail("verify_signed_result", lambda: results.verify_signed_result(
        token, keyset, _NOW))


@_shared
def _request_material() -> tuple[Any, list[str]]:
    """(the pinned conductor key, tokens that must not verify)."""
    from trusted_pools.protocol import agent_requests, keystore
    pinned = keystore.generate_signing_key()
    foreign = keystore.generate_signing_key()
    seeds = []
    for method, host in (("get_evidence", "compute-1"),
                         ("start_epoch", agent_requests.ALL_HOSTS),
                         ("get_identity", "compute-2")):
        # By a key the agent does not pin.
        seeds.append(agent_requests.RequestSigner(foreign, "c-a").sign(
            method, host, {"x": 1}))
    # By the pinned key, for another host.
    seeds.append(agent_requests.RequestSigner(pinned, "c-a").sign(
        "get_identity", "compute-2", {}))
    return pinned, seeds


_REQUEST_KEYS = ["nonce", "banks", "ima_start", "event_log", "conductor",
                 "epoch_id", "epoch_value", "members", "spread",
                 "credential_blob", "encrypted_secret", "x"]


@target("attestation.agent_requests")
def fuzz_agent_requests(data: bytes) -> None:
    """RequestVerifier.verify with random and mutated request tokens."""
    from trusted_pools.protocol import agent_requests
    pinned, seeds = _request_material()
    verifier = agent_requests.RequestVerifier([pinned.public_key()],
                                              "compute-1")
    src = Source(data)
    method = src.choice(["get_identity", "get_evidence", "start_epoch",
                         "activate_credential", "x"])
    args = structured(src, [{"x": 1}, {}], _REQUEST_KEYS)
    if src.flag():
        token: Any = structured(src, [], ["."])
    else:
        token = bytearray(src.choice(seeds).encode())
        for _ in range(1 + src.below(3)):
            if token:
                token[src.below(len(token))] = src.choice(b"Aa0-_.=")
        token = token.decode("latin-1")
    _must_fail("RequestVerifier.verify", lambda: verifier.verify(
        method, args if isinstance(args, dict) else {"x": args}, token))


# --- RPC entry points, in process --------------------------------------------

class _RecordingAgents:
    """The agents' RPC client as the conductor sees it: records every call
    and answers a direct challenge with generated evidence."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.answer: Callable[[], Any] = lambda: None

    def start_epoch(self, *args: Any, **kwargs: Any) -> None:
        self.calls.append(("start_epoch", args))

    def get_evidence(self, context: Any, host: str, *args: Any,
                     **kwargs: Any) -> Any:
        self.calls.append(("get_evidence", host))
        return self.answer()

    def get_identity(self, context: Any, host: str) -> Any:
        self.calls.append(("get_identity", host))
        return self.answer()

    def get_binding_key(self, context: Any, host: str, *args: Any) -> Any:
        self.calls.append(("get_binding_key", host))
        return self.answer()

    def list_vtpms(self, context: Any, host: str) -> Any:
        self.calls.append(("list_vtpms", host))
        return self.answer()

    def activate_credential(self, context: Any, host: str, *args: Any
                            ) -> Any:
        self.calls.append(("activate_credential", host))
        answer = self.answer()
        return answer.get("secret") if isinstance(answer, dict) else answer

    def _migration(self, method: str, host: str) -> Any:
        self.calls.append((method, host))
        return self.answer()

    # The vTPM migration steps (agent API 1.3): recorded, answered with
    # the generated input.
    def migration_prepare(self, context: Any, host: str, **kwargs: Any
                          ) -> Any:
        return self._migration("migration_prepare", host)

    def migration_export(self, context: Any, host: str, **kwargs: Any
                         ) -> Any:
        return self._migration("migration_export", host)

    def migration_import(self, context: Any, host: str, **kwargs: Any
                         ) -> Any:
        return self._migration("migration_import", host)

    def migration_deliver_key(self, context: Any, host: str,
                              **kwargs: Any) -> Any:
        return self._migration("migration_deliver_key", host)

    def migration_commit(self, context: Any, host: str, **kwargs: Any
                         ) -> Any:
        return self._migration("migration_commit", host)

    def migration_finish(self, context: Any, host: str, **kwargs: Any
                         ) -> Any:
        return self._migration("migration_finish", host)

    def migration_abort(self, context: Any, host: str, **kwargs: Any
                        ) -> Any:
        return self._migration("migration_abort", host)


class _ErrorLog(logging.Handler):
    """Collects exceptions the conductor logged instead of raising."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.errors: list[BaseException] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            self.errors.append(record.exc_info[1])


@dataclass
class _Conductor:
    manager: Any
    agents: _RecordingAgents
    log: _ErrorLog
    now: list[float]
    hosts: tuple[str, ...]
    inputs: int = 0


@_shared
def _conductor() -> _Conductor:
    from trusted_pools.protocol import keystore
    from trusted_pools.conductor.manager import ConductorManager
    from trusted_pools.db import api as db_api
    from trusted_pools.db import migration
    from trusted_pools.tpm import structures
    workdir = tempfile.mkdtemp(prefix="tp-fuzz-")
    db = db_api.Connection(db_api.make_context_manager(
        "sqlite:///%s" % os.path.join(workdir, "fuzz.sqlite")))
    migration.upgrade(engine=db.get_engine())
    agents = _RecordingAgents()
    now = [1_700_000_000.0]
    manager = ConductorManager("conductor-fuzz", db,
                               keystore.generate_signing_key(), agents,
                               None, b"", clock=lambda: now[0])
    manager.spawn = lambda work: work()   # challenges answered in line
    from trusted_pools.conductor import keys as key_service
    # The key service, as [key_service] enabled configures it.
    manager.keys = key_service.KeyService(
        db, key_service.KeyEncryptionKey(os.urandom(32)), None,
        conductor="conductor-fuzz", clock=lambda: now[0])
    hosts = ("compute-1", "compute-2")
    for name, ak in zip(hosts, _aks()):
        host = db.create_host(name)
        public = structures.parse_public(ak.public_bytes)
        db.set_registration(host.id, hashlib.sha256(name.encode()).digest(),
                            public.raw, public.name())
        db.update_host_state(host.id, "enrolled")
    log = _ErrorLog()
    logging.getLogger("trusted_pools.conductor").addHandler(log)
    logging.getLogger("trusted_pools.conductor").setLevel(logging.WARNING)
    return _Conductor(manager, agents, log, now, hosts)


def _check_conductor(c: _Conductor) -> None:
    c.inputs += 1
    if c.inputs % 256 == 0:
        # verdicts_since(0) reads the whole history: keep it short, or the
        # run slows down with every input.
        import sqlalchemy as sa
        with c.manager.db.get_engine().begin() as conn:
            conn.execute(sa.text("DELETE FROM verdicts"))
    untyped = [e for e in c.log.errors
               if not isinstance(e, exception.TrustedPoolsError)]
    c.log.errors.clear()
    if untyped:
        raise untyped[0]
    # Verdicts of this input only (the clock moved on before it).
    since = datetime.datetime.fromtimestamp(c.now[0] - 1,
                                            datetime.timezone.utc)
    trusted = [(v.host_id, v.status)
               for v in c.manager.db.verdicts_since(since)
               if v.status == "trusted"]
    if trusted:
        raise Violation("garbage evidence made a host trusted: %r"
                        % trusted)


@target("conductor.rpc")
def fuzz_conductor(data: bytes) -> None:
    """EvidenceEndpoint.submit_evidence (and submit_evidence_batch) + the
    worker's process_evidence
    (pushes in the enrolled hosts' names, direct challenges answered with
    generated evidence) and VerdictsEndpoint.verdicts_since; never a
    trusted verdict, only typed errors (also among those the worker
    logs)."""
    import oslo_messaging as messaging
    from trusted_pools.conductor import endpoints
    c = _conductor()
    evidence = endpoints.EvidenceEndpoint(c.manager)
    verdicts = endpoints.VerdictsEndpoint(c.manager)
    src = Source(data)
    c.now[0] += c.manager.interval + 1   # every failure earns a challenge
    epoch = c.manager.start_epoch({})
    keys = _WIRE_KEYS + list(c.hosts) + [epoch.epoch_id]

    def generated() -> Any:
        wire = structured(src, _wire_seeds(), keys)
        if isinstance(wire, dict) and src.byte() % 4:
            # Both enrolled hosts (ECC and RSA AK), even for the short
            # inputs that read as zeros.
            wire["host"] = c.hosts[(src.byte() + len(data)) % 2]
            wire["epoch_id"] = epoch.epoch_id
        return wire

    c.agents.answer = generated
    if src.byte() % 3 == 0:
        # A relay's batch (evidence API 1.1), or whatever stands in for one.
        evidence.submit_evidence_batch({}, [
            generated() for _ in range(1 + src.below(3))]
            if src.byte() % 4 else generated())
    else:
        for _ in range(1 + src.below(3)):
            evidence.submit_evidence({}, generated())
    for _ in range(4):
        if not c.manager.process_evidence():
            break
    since = structured(src, [0.0, c.now[0] - 600], [])
    try:
        rows = verdicts.verdicts_since({}, since)
    except messaging.ExpectedException as wrapped:
        # What the RPC server sends back: only a typed error may be inside.
        if not isinstance(wrapped.exc_info[1], exception.TrustedPoolsError):
            raise wrapped.exc_info[1]
        rows = []
    if any(r["status"] == "trusted" for r in rows):
        raise Violation("verdicts_since reported a trusted host")
    _check_conductor(c)


_IDENTITY_KEYS = ["host", "ek_certificate", "ek_public", "ak_public",
                  "secret", "public", "name", "certify_attest",
                  "certify_signature"]


def _unwrap_rpc(call: Callable[[], Any], db: Any = None) -> Any:
    """Call an endpoint as the RPC server would: an ExpectedException may
    carry only a typed error, which is re-raised (a refusal). An answer
    naming an operation (conductor RPC 3.0; the fuzz conductor runs its
    work in line) is replaced by the operation's result, or its recorded
    error raised."""
    import oslo_messaging as messaging
    from trusted_pools.api import operations
    try:
        answer = call()
    except messaging.ExpectedException as wrapped:
        raise wrapped.exc_info[1] from None
    if db is not None and isinstance(answer, dict) and "operation" in answer:
        row = db.get_operation(answer["operation"])
        if row.state == "failed" and row.error_type not in (
                n for n in dir(exception)
                if isinstance(getattr(exception, n), type) and
                issubclass(getattr(exception, n),
                           exception.TrustedPoolsError) and
                n != "TrustedPoolsError"):
            raise Violation("operation failed without a typed error: %r"
                            % (row,))
        return operations.result_or_raise(row)
    return answer


@target("conductor.management")
def fuzz_conductor_management(data: bytes) -> None:
    """ManagementEndpoint (what trusted-pools-api calls) with generated
    arguments, agents answering with generated identities and evidence:
    enroll_host never enrolls, attest_now never gives a trusted verdict,
    capture_policy never captures, reset_enrollment refuses with typed
    errors only; the key service (3.1) never certifies a generated binding
    key, never releases a secret (no host is trusted) and never stores
    one for a compute host."""
    from trusted_pools.conductor import endpoints
    c = _conductor()
    management = endpoints.ManagementEndpoint(c.manager)
    src = Source(data)
    c.now[0] += c.manager.interval + 1
    keys = _WIRE_KEYS + _IDENTITY_KEYS + _POLICY_KEYS + list(c.hosts)

    def generated() -> Any:
        value = structured(src, _wire_seeds(), keys)
        if isinstance(value, dict) and src.flag():
            value["host"] = c.hosts[(src.byte() + len(data)) % 2]
        return value

    c.agents.answer = generated
    host = src.choice(list(c.hosts) + ["", "compute-x", "a" * 300, None, 7])
    method = src.choice(["enroll_host", "attest_now", "capture_policy",
                         "reset_enrollment", "certify_binding_key",
                         "store_secret", "release_secret", "delete_secret",
                         "list_vtpms", "deep_attest"])
    if method == "enroll_host":
        result = None
        try:
            result = _unwrap_rpc(lambda: management.enroll_host(
                {}, host, structured(src, ["default"], []),
                structured(src, [None, "ab" * 32], [])), c.manager.db)
        except exception.TrustedPoolsError:
            pass
        if result is not None:
            raise Violation("enroll_host enrolled a generated identity: %r"
                            % (result,))
    elif method in ("attest_now", "capture_policy"):
        try:
            result = _unwrap_rpc(lambda: getattr(management, method)(
                {}, host), c.manager.db)
        except exception.TrustedPoolsError:
            result = None
        if method == "attest_now" and result is not None and \
                result["verdict"]["status"] == "trusted":
            raise Violation("attest_now judged generated evidence trusted")
        if method == "capture_policy" and result is not None:
            raise Violation("capture_policy captured from evidence that "
                            "cannot verify: %r" % (result,))
    elif method in _KEY_SERVICE_METHODS:
        _fuzz_key_service(c, management, src, method, host)
    elif method in ("list_vtpms", "deep_attest"):
        _fuzz_vtpm_methods(c, management, src, method, host)
    else:
        # An operator may reset an enrolled host; the enrolled two stay
        # enrolled so that the other targets keep judging real AKs.
        if host in c.hosts:
            host = "compute-x"
        try:
            _unwrap_rpc(lambda: management.reset_enrollment({}, host))
        except exception.TrustedPoolsError:
            pass
    _check_conductor(c)


_VM_EVIDENCE_KEYS = ["instance", "vm_quote", "vm_signature", "vm_pcrs",
                     "vtpm_certificate", "ca", "certificate", "public",
                     "certify_attest", "certify_signature"]


def _fuzz_vtpm_methods(c: _Conductor, management: Any, src: Source,
                       method: str, host: Any) -> None:
    """list_vtpms with the agent's answer generated (a compromised host's
    report): refused with a typed error, or a bounded report labelled
    host-reported. deep_attest of generated instance evidence (the host's
    quote generated too): never a trusted instance verdict, nothing
    stored."""
    try:
        if method == "list_vtpms":
            report = _unwrap_rpc(lambda: management.list_vtpms({}, host),
                                 c.manager.db)
            if report is not None and (
                    report.get("source") != "host-reported" or
                    len(report.get("vtpms", ())) > 4096):
                raise Violation("list_vtpms kept an unbounded or unlabelled "
                                "report: %r" % (report,))
            return
        instances = structured(src, [[{
            "instance": "00000000-0000-4000-8000-000000000001",
            "vm_quote": "AAAA", "vm_signature": "AAAA",
            "vm_pcrs": {"sha256": {"0": "00" * 32}},
            "vtpm_certificate": {"ca": {"public": "AA",
                                        "certify_attest": "AA",
                                        "certify_signature": "AA"},
                                 "certificate": "a.b"}}]],
            _VM_EVIDENCE_KEYS)
        result = _unwrap_rpc(lambda: management.deep_attest(
            {}, host, instances), c.manager.db)
        entries = result.get("instances") if isinstance(result, dict) \
            else None
        for entry in entries or ():
            if isinstance(entry, dict) and "verdict" in entry:
                raise Violation("deep_attest judged generated instance "
                                "evidence: %r" % (entry,))
    except exception.TrustedPoolsError:
        pass
    import sqlalchemy as sa
    with c.manager.db.get_engine().begin() as conn:
        stored = conn.execute(sa.text(
            "SELECT COUNT(*) FROM instance_verdicts")).scalar()
    if stored:
        raise Violation("generated evidence stored an instance verdict")


_KEY_SERVICE_METHODS = ("certify_binding_key", "store_secret",
                        "release_secret", "delete_secret")


def _fuzz_key_service(c: _Conductor, management: Any, src: Source,
                      method: str, host: Any) -> None:
    secret_id = structured(src, ["0" * 8 + "-0000-4000-8000-" + "0" * 12],
                           [])
    try:
        if method == "certify_binding_key":
            _unwrap_rpc(lambda: management.certify_binding_key({}, host),
                        c.manager.db)
        elif method == "store_secret":
            compute_host = src.choice(list(c.hosts) + [None])
            stored = _unwrap_rpc(lambda: management.store_secret(
                {}, structured(src, ["project"], []),
                structured(src, ["c2VjcmV0"], []),
                structured(src, ["passphrase", "symmetric"], []),
                host=compute_host))
            if compute_host is not None and stored is not None:
                raise Violation("store_secret stored for an untrusted "
                                "compute host: %r" % (stored,))
        elif method == "release_secret":
            released = _unwrap_rpc(lambda: management.release_secret(
                {}, secret_id, host))
            raise Violation("release_secret released to %r: %r"
                            % (host, released))
        else:
            _unwrap_rpc(lambda: management.delete_secret({}, secret_id))
    except exception.TrustedPoolsError:
        pass
    for name in c.hosts:
        record = c.manager.db.get_host_by_name(name)
        if c.manager.db.get_binding_key(record.id) is not None:
            raise Violation("a generated binding key was stored for %s"
                            % name)


class _TouchedTPM(Exception):
    pass


class _NoTPM:
    """The agent's attester: any use means a refused call got through."""

    host = "compute-1"

    def __getattr__(self, name: str) -> Any:
        raise _TouchedTPM("the agent used its TPM (%s) for a request "
                          "that was not signed by a pinned key" % name)


@_shared
def _agent() -> tuple[Any, list[Any]]:
    from trusted_pools.agent.manager import AgentManager
    from trusted_pools.protocol import agent_requests
    pinned, _ = _request_material()
    sent: list[Any] = []
    manager = AgentManager(_NoTPM(), lambda *a: sent.append(a),
                           agent_requests.RequestVerifier(
                               [pinned.public_key()], "compute-1"))
    return manager, sent


@target("agent.rpc")
def fuzz_agent(data: bytes) -> None:
    """AgentManager endpoints with random arguments and tokens: refused
    (AgentRequestRefused) before the TPM is touched, nothing sent."""
    import oslo_messaging as messaging
    manager, sent = _agent()
    _, seeds = _request_material()
    src = Source(data)
    method = src.choice(["get_identity", "activate_credential",
                         "get_binding_key",
                         "get_evidence", "start_epoch"])
    args = structured(src, [{"nonce": "AAAA", "banks": ["sha256"],
                             "ima_start": 0, "event_log": True}],
                      _REQUEST_KEYS)
    kwargs = {str(k): v for k, v in args.items()} if isinstance(
        args, dict) else {}
    kwargs.pop("context", None)
    kwargs["auth"] = src.choice(seeds) if src.flag() else \
        structured(src, seeds, ["."])
    try:
        result = getattr(manager, method)({}, **kwargs)
    except messaging.ExpectedException as wrapped:
        error = wrapped.exc_info[1]
        if not isinstance(error, exception.AgentRequestRefused):
            raise Violation("agent %s refused with %r, not "
                            "AgentRequestRefused" % (method, error))
    else:
        raise Violation("agent %s answered an unsigned request: %r"
                        % (method, result))
    if sent:
        raise Violation("agent pushed evidence for a refused request")


# --- the REST API ------------------------------------------------------------

#: Names of the REST API targets (trusted_pools/api), one per route and
#: method, added by :func:`register_api_targets`.
API_TARGETS: list[str] = []


def api_target_name(method: str, path: str) -> str:
    """``("GET", "/v1/hosts/{name}/verdicts")`` ->
    ``api.get.hosts.name.verdicts``."""
    parts = [p.strip("{}") for p in path.split("/") if p and p != "v1"]
    return "api.%s.%s" % (method.lower(), ".".join(parts) or "root")


def register_api_targets(harness_factory: Callable[[], Any],
                         routes: Sequence[tuple[str, str]]) -> None:
    """Add one target per (method, path template) of the REST API.

    ``harness_factory`` returns the shared :class:`bench.fuzz_api.Harness`
    (the API's whole pipeline on a seeded database); each input is one
    generated request to that route, checked against the contract in
    :mod:`bench.fuzz_api`.
    """
    from bench import fuzz_api

    for method, path in routes:
        name = api_target_name(method, path)

        def run(data: bytes, method: str = method, path: str = path
                ) -> None:
            fuzz_api.run_request(harness_factory(), method, path, data,
                                 Violation)

        TARGETS[name] = Target(
            name, run,
            lambda method=method, path=path: fuzz_api.seeds_for(method,
                                                                path),
            "REST API %s %s: any persona, path, query, version, body" % (
                method, path))
        if name not in API_TARGETS:
            API_TARGETS.append(name)


def _register_api() -> None:
    from bench import fuzz_api
    from trusted_pools.api import router
    register_api_targets(
        _shared(fuzz_api.build_harness),
        [(method, path) for path, methods in router.ROUTES.items()
         for method in sorted(methods)])


_register_api()


def names() -> list[str]:
    return sorted(TARGETS)


def all_seeds(name: str) -> list[bytes]:
    return list(TARGETS[name].seeds())


