"""Golden measurements (ETSI GR NFV-SEC 007 clause 7.1.3) as policies.

Two kinds of policy, each an immutable, validated object with a JSON body
(the database keeps the body with a name and a version; versioning is the
database's job, the object only carries name and version so that reasons
and verdicts can say which policy decided):

* :class:`MeasuredBootPolicy` (kind ``measured_boot``) - expected PCR
  values and rules over the decoded, *verified* events of the TCG event
  log, split by rung of the level ladder:

  - ``platform_firmware`` (rung 2, PCRs 0-3 and 5-7): allowed S-CRTM
    versions, allowed digests of firmware code measured into PCRs 0 and 2,
    secure boot required on, with the PK/KEK/db entries allowed and the
    dbx entries that must be present;
  - ``os_boot`` (rung 3, PCRs 4, 8, 9, 11-14): allowed boot loaders (every
    image measured into PCR 4), kernels, initrds and other boot files
    (every file measured into PCR 9) and kernel command lines with the
    boot loader's commands (exact strings whose hashes every PCR 8/12
    event must match, or an explicit ``allow_any_kernel_command_line``;
    regular expressions are not offered: one careless ``.*`` would allow
    ``init=/bin/sh``).

* :class:`RuntimePolicy` (kind ``ima``) - allowed file digests per path
  for the IMA measurement list, excluded paths (fnmatch patterns),
  whether unknown files and violations are tolerated (both off by
  default) and whether the boot_aggregate must match the quoted PCRs.

Validation is strict: unknown keys are rejected (a typo such as
``kernals`` must not silently switch a check off), every digest must have
its algorithm's length, and every error is :class:`~trusted_pools.exception.
PolicyInvalid` naming the field and what to fix. The JSON body format is
described for operators in ``etc/trusted-pools/policies/README.md``.

This module imports no oslo library and touches no database.
"""

from __future__ import annotations

import fnmatch
import json
import re
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from trusted_pools import exception
from trusted_pools.protocol.levels import Rung
from trusted_pools.tpm import constants

__all__ = [
    "KIND_MEASURED_BOOT", "KIND_RUNTIME", "PCR_RUNGS", "DigestAllowList",
    "SecureBootRule", "FirmwareRules", "OSBootRules", "MeasuredBootPolicy",
    "RuntimePolicy", "load_policy", "ima_digest_key",
]

#: Kinds, spelled as the database spells them (``models.POLICY_KINDS``).
KIND_MEASURED_BOOT = "measured_boot"
KIND_RUNTIME = "ima"

#: Which rung a PCR's expected value belongs to (TCG PC Client PFP and the
#: usage of GRUB, shim and systemd): firmware code, configuration and secure
#: boot policy go to the platform rung; the boot manager code (PCR 4: boot
#: loaders, and kernels loaded as EFI images), GRUB's commands and files
#: (8, 9), systemd-stub (11-13) and shim's MOK lists (14) to the OS rung.
#: PCR 10 belongs to IMA (the runtime policy) and 15-23 are not boot state.
PCR_RUNGS: Mapping[int, Rung] = types.MappingProxyType({
    **{pcr: Rung.PLATFORM_FIRMWARE for pcr in (0, 1, 2, 3, 5, 6, 7)},
    **{pcr: Rung.OS_BOOT for pcr in (4, 8, 9, 11, 12, 13, 14)},
})

# Bounds: a policy is operator input stored in a database; these keep one
# bad body from costing unbounded memory or time.
MAX_LIST = 100_000
MAX_RUNTIME_PATHS = 2_000_000
MAX_DIGESTS_PER_PATH = 1_000
# GRUB measures a whole menuentry body as one command: real ones pass 4 KiB.
MAX_TEXT = 65536
MAX_EXCLUDES = 10_000

_HEX = re.compile(r"[0-9a-fA-F]*")
_IMA_ALG = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
# File-hash algorithm names the kernel prints (hash_algo_name) and sizes.
_IMA_ALG_SIZES = {"md5": 16, "sha1": 20, "sha224": 28, "sha256": 32,
                  "sha384": 48, "sha512": 64, "sm3": 32, "sm3_256": 32,
                  "sm3-256": 32, "rmd160": 20, "wp512": 64, "streebog256": 32,
                  "streebog512": 64, "sha3-256": 32, "sha3-384": 48,
                  "sha3-512": 64}
_SB_ID = re.compile(r"[a-z0-9-]{1,32}:[0-9a-f]{2,1024}")
# '<variable>:<kind>:<hex>', as appraisal.authority_id prints them.
_SB_AUTHORITY = re.compile(
    r"[A-Za-z0-9_]{1,64}:[a-z0-9-]{1,40}:[0-9a-f]{0,128}")


# --- validation helpers --------------------------------------------------------

class _Checker:
    """Raises PolicyInvalid for one policy, naming the JSON path."""

    def __init__(self, policy: str) -> None:
        self.policy = policy

    def fail(self, where: str, reason: str) -> exception.PolicyInvalid:
        return exception.PolicyInvalid(policy=self.policy, field=where,
                                       name=where, reason=reason)

    def obj(self, value: Any, where: str, allowed: Iterable[str]
            ) -> dict[str, Any]:
        allowed = tuple(allowed)
        if type(value) is not dict:
            raise self.fail(where, "expected a JSON object, got %s"
                            % _json_type(value))
        for key in value:
            if type(key) is not str or key not in allowed:
                raise self.fail(where, "unknown key %s; allowed keys: %s"
                                % (_short(key), ", ".join(allowed)))
        return value

    def boolean(self, value: Any, where: str) -> bool:
        if type(value) is not bool:
            raise self.fail(where, "expected true or false, got %s"
                            % _json_type(value))
        return value

    def text(self, value: Any, where: str, *, empty: bool = False) -> str:
        if type(value) is not str:
            raise self.fail(where, "expected a string, got %s"
                            % _json_type(value))
        if not empty and not value:
            raise self.fail(where, "must not be empty")
        if len(value) > MAX_TEXT:
            raise self.fail(where, "longer than %d characters" % MAX_TEXT)
        return value

    def array(self, value: Any, where: str, *, limit: int = MAX_LIST,
              empty: bool = False) -> list[Any]:
        if type(value) is not list:
            raise self.fail(where, "expected a JSON array, got %s"
                            % _json_type(value))
        if not empty and not value:
            raise self.fail(where, "must not be empty (leave the key out "
                            "to not check this)")
        if len(value) > limit:
            raise self.fail(where, "more than %d items" % limit)
        return value

    def hex_digest(self, value: Any, where: str, size: int) -> bytes:
        text = self.text(value, where)
        if len(text) != 2 * size or not _HEX.fullmatch(text):
            raise self.fail(where, "expected %d hex digits, got %s"
                            % (2 * size, _short(text)))
        return bytes.fromhex(text)

    def bank(self, value: Any, where: str) -> constants.HashAlgorithm:
        if type(value) is not str:
            raise self.fail(where, "bank names are strings")
        algorithm = constants.HASH_BY_NAME.get(value)
        if algorithm is None:
            raise self.fail(where, "unknown bank %s; use one of %s" % (
                _short(value), ", ".join(constants.HASH_BY_NAME)))
        return algorithm


def _json_type(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string",
            bool: "a boolean", int: "a number", float: "a number",
            type(None): "null"}.get(type(value), type(value).__name__)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _freeze_digests(digests: Mapping[int, Iterable[bytes]]
                    ) -> Mapping[int, frozenset[bytes]]:
    return types.MappingProxyType(
        {alg: frozenset(values) for alg, values in digests.items()})


# --- measured boot --------------------------------------------------------------

@dataclass(frozen=True)
class DigestAllowList:
    """Allowed digests per bank (TPM_ALG_ID -> set of raw digests).

    JSON: ``{"sha256": ["hex", ...], "sha384": [...]}``. An event matches
    when, in some bank both it and the list have, its verified digest is in
    the list: every verified bank binds the same content, so one bank is
    enough (list only strong banks if SHA-1 collisions worry you).
    """

    digests: Mapping[int, frozenset[bytes]]

    @classmethod
    def from_json(cls, value: Any, check: _Checker, where: str
                  ) -> DigestAllowList:
        body = check.obj(value, where, constants.HASH_BY_NAME)
        if not body:
            raise check.fail(where, "give at least one bank with digests")
        digests = {}
        for name, items in body.items():
            algorithm = check.bank(name, where)
            path = "%s.%s" % (where, name)
            digests[int(algorithm.alg)] = {
                check.hex_digest(item, "%s[%d]" % (path, i),
                                 algorithm.digest_size)
                for i, item in enumerate(check.array(items, path))}
        return cls(_freeze_digests(digests))

    def allows(self, event_digests: Mapping[int, bytes]) -> bool | None:
        """True/False; None when no bank is shared (cannot be judged)."""
        shared = False
        for alg, digest in event_digests.items():
            allowed = self.digests.get(alg)
            if allowed is not None:
                shared = True
                if digest in allowed:
                    return True
        return False if shared else None

    def banks(self) -> list[str]:
        return [constants.alg_name(alg) for alg in sorted(self.digests)]

    def to_json(self) -> dict[str, list[str]]:
        return {constants.alg_name(alg): sorted(d.hex() for d in values)
                for alg, values in sorted(self.digests.items())}


def _sb_authorities(value: Any, check: _Checker, where: str
                    ) -> frozenset[str]:
    ids = set()
    for i, item in enumerate(check.array(value, where, empty=True)):
        text = check.text(item, "%s[%d]" % (where, i))
        if not _SB_AUTHORITY.fullmatch(text):
            raise check.fail("%s[%d]" % (where, i), "expected "
                             "'<variable>:<kind>:<hex>' such as "
                             "'db:x509:<SHA-256 of the certificate>' or "
                             "'SbatLevel:value:<hex>', got %s" % _short(item))
        ids.add(text)
    return frozenset(ids)


def _sb_ids(value: Any, check: _Checker, where: str) -> frozenset[str]:
    ids = set()
    for i, item in enumerate(check.array(value, where)):
        text = check.text(item, "%s[%d]" % (where, i)).lower()
        if not _SB_ID.fullmatch(text):
            raise check.fail("%s[%d]" % (where, i), "expected '<type>:<hex>'"
                             " such as 'x509:<SHA-256 of the certificate>' "
                             "or 'sha256:<image hash>', got %s" % _short(item))
        ids.add(text)
    return frozenset(ids)


@dataclass(frozen=True)
class SecureBootRule:
    """Secure boot state and key databases, read from PCR 7.

    Entries are named ``x509:<SHA-256 fingerprint of the DER certificate>``
    or ``<hash type>:<hex hash>`` (``sha256:...`` for image hashes), as
    :func:`trusted_pools.verifier.appraisal.signature_entry_id` prints
    them. ``pk``/``kek``/``db``: every entry of the variable must be listed
    (extra keys would let other code boot). ``dbx_contains``: every listed
    revocation must be present (a shorter dbx lets revoked code boot).
    ``authorities``: every EV_EFI_VARIABLE_AUTHORITY-style measurement on
    PCR 7 (the db entry, shim certificate or MOK that verified code, and
    shim's SbatLevel / MokListTrusted values) must be listed, named
    ``<variable>:<kind>:<hex>`` as
    :func:`trusted_pools.verifier.appraisal.authority_id` prints them
    (an empty list: none may appear).
    """

    required: bool
    pk: frozenset[str] | None = None
    kek: frozenset[str] | None = None
    db: frozenset[str] | None = None
    dbx_contains: frozenset[str] | None = None
    authorities: frozenset[str] | None = None

    _KEYS = ("required", "pk", "kek", "db", "dbx_contains", "authorities")

    @classmethod
    def from_json(cls, value: Any, check: _Checker, where: str
                  ) -> SecureBootRule:
        body = check.obj(value, where, cls._KEYS)
        if "required" not in body:
            raise check.fail(where + ".required", "missing: say whether "
                             "secure boot must be on (true or false)")
        lists = {key: (_sb_authorities if key == "authorities" else
                       _sb_ids)(body[key], check, "%s.%s" % (where, key))
                 for key in cls._KEYS[1:] if key in body}
        return cls(check.boolean(body["required"], where + ".required"),
                   **lists)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"required": self.required}
        for key in self._KEYS[1:]:
            values = getattr(self, key)
            if values is not None:
                out[key] = sorted(values)
        return out


@dataclass(frozen=True)
class FirmwareRules:
    """Event rules of the platform firmware rung (PCRs 0, 2, 7)."""

    crtm_versions: frozenset[str] | None = None
    firmware_digests: DigestAllowList | None = None
    secure_boot: SecureBootRule | None = None

    _KEYS = ("crtm_versions", "firmware_digests", "secure_boot")

    @classmethod
    def from_json(cls, value: Any, check: _Checker, where: str
                  ) -> FirmwareRules:
        body = check.obj(value, where, cls._KEYS)
        crtm = None
        if "crtm_versions" in body:
            path = where + ".crtm_versions"
            crtm = frozenset(
                check.text(v, "%s[%d]" % (path, i), empty=True)
                for i, v in enumerate(check.array(body["crtm_versions"],
                                                  path)))
        digests = (DigestAllowList.from_json(
            body["firmware_digests"], check, where + ".firmware_digests")
            if "firmware_digests" in body else None)
        secure_boot = (SecureBootRule.from_json(
            body["secure_boot"], check, where + ".secure_boot")
            if "secure_boot" in body else None)
        return cls(crtm, digests, secure_boot)

    @property
    def empty(self) -> bool:
        return (self.crtm_versions is None and self.firmware_digests is None
                and self.secure_boot is None)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.crtm_versions is not None:
            out["crtm_versions"] = sorted(self.crtm_versions)
        if self.firmware_digests is not None:
            out["firmware_digests"] = self.firmware_digests.to_json()
        if self.secure_boot is not None:
            out["secure_boot"] = self.secure_boot.to_json()
        return out


@dataclass(frozen=True)
class OSBootRules:
    """Event rules of the OS boot rung (PCRs 4, 8, 9, 12).

    ``kernels``, ``initrds`` and ``boot_files`` form ONE allow-list for
    every image measured into PCR 9: the path that says "kernel" is not
    covered by the digest, so the split is for review and for reasons only,
    and naming one of them makes every PCR 9 file checked.

    ``kernel_command_lines`` and ``boot_loader_commands`` (exact strings:
    GRUB's commands without their ``grub_cmd: `` label) likewise form ONE
    allow-list for every event of PCRs 8 and 12: GRUB hashes a command and
    a command line the same way (the bare text), so only a digest can be
    matched, never a label or an event type. At least one event must be
    the hash of a listed kernel command line.
    """

    boot_loaders: DigestAllowList | None = None
    kernels: DigestAllowList | None = None
    initrds: DigestAllowList | None = None
    boot_files: DigestAllowList | None = None
    kernel_command_lines: frozenset[str] | None = None
    allow_any_kernel_command_line: bool = False
    boot_loader_commands: frozenset[str] | None = None

    _KEYS = ("boot_loaders", "kernels", "initrds", "boot_files",
             "kernel_command_lines", "allow_any_kernel_command_line",
             "boot_loader_commands")

    @classmethod
    def from_json(cls, value: Any, check: _Checker, where: str
                  ) -> OSBootRules:
        body = check.obj(value, where, cls._KEYS)
        lists = {key: DigestAllowList.from_json(body[key], check,
                                                "%s.%s" % (where, key))
                 for key in cls._KEYS[:4] if key in body}
        cmdlines = None
        if "kernel_command_lines" in body:
            path = where + ".kernel_command_lines"
            cmdlines = frozenset(
                check.text(v, "%s[%d]" % (path, i), empty=True)
                for i, v in enumerate(check.array(
                    body["kernel_command_lines"], path, empty=True)))
        commands = None
        if "boot_loader_commands" in body:
            path = where + ".boot_loader_commands"
            commands = frozenset(
                check.text(v, "%s[%d]" % (path, i), empty=True)
                for i, v in enumerate(check.array(
                    body["boot_loader_commands"], path)))
            if cmdlines is None:
                raise check.fail(path, "needs kernel_command_lines in the "
                                 "same section: boot loader commands are "
                                 "allowed only as part of the command line "
                                 "rule of PCRs 8 and 12")
        allow_any = check.boolean(
            body.get("allow_any_kernel_command_line", False),
            where + ".allow_any_kernel_command_line")
        if allow_any and cmdlines is not None:
            raise check.fail(where + ".allow_any_kernel_command_line",
                             "cannot be true together with "
                             "kernel_command_lines: remove one of them")
        if cmdlines is not None and "boot_loaders" not in lists:
            raise check.fail(where + ".kernel_command_lines",
                             "needs boot_loaders in the same section: what "
                             "a command line does depends on the boot loader "
                             "that measured it, so it means something only "
                             "when the boot loader is pinned")
        return cls(
            kernel_command_lines=cmdlines,
            allow_any_kernel_command_line=allow_any,
            boot_loader_commands=commands, **lists)

    @property
    def files(self) -> tuple[tuple[str, DigestAllowList], ...]:
        """The PCR 9 lists given, by name."""
        return tuple((name, getattr(self, name))
                     for name in ("kernels", "initrds", "boot_files")
                     if getattr(self, name) is not None)

    @property
    def empty(self) -> bool:
        """No check at all (allow_any is a waiver, not a check)."""
        return (self.boot_loaders is None and not self.files
                and self.kernel_command_lines is None)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in self._KEYS[:4]:
            value = getattr(self, key)
            if value is not None:
                out[key] = value.to_json()
        if self.kernel_command_lines is not None:
            out["kernel_command_lines"] = sorted(self.kernel_command_lines)
        if self.allow_any_kernel_command_line:
            out["allow_any_kernel_command_line"] = True
        if self.boot_loader_commands is not None:
            out["boot_loader_commands"] = sorted(self.boot_loader_commands)
        return out


def _check_identity(name: Any, version: Any) -> tuple[str, int]:
    if type(name) is not str or not name or len(name) > 255:
        raise exception.InvalidParameterValue(
            name="name", reason="a policy name is a non-empty string of at "
            "most 255 characters")
    if type(version) is not int or version < 0:
        raise exception.InvalidParameterValue(
            name="version", reason="a policy version is an integer >= 0")
    return name, version


def _body(value: Any, check: _Checker) -> Any:
    """Accept a dict, or JSON text / bytes of one."""
    if isinstance(value, (bytes, bytearray)):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise check.fail("(body)", "not UTF-8 text") from None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError) as error:
            raise check.fail("(body)", "not JSON: %s" % _short(str(error))
                             ) from None
    return value


def _kind(body: dict[str, Any], check: _Checker, expected: str) -> None:
    if "kind" not in body:
        raise check.fail("kind", "missing; set \"kind\": \"%s\"" % expected)
    if body["kind"] != expected:
        raise check.fail("kind", "is %s, this policy type needs %r"
                         % (_short(body["kind"]), expected))


def _pcr_values(value: Any, check: _Checker
                ) -> Mapping[int, Mapping[int, bytes]]:
    banks = check.obj(value, "pcrs", constants.HASH_BY_NAME)
    result = {}
    for name, pcrs in banks.items():
        algorithm = check.bank(name, "pcrs")
        where = "pcrs.%s" % name
        entries = check.obj(pcrs, where, [str(p) for p in PCR_RUNGS])
        result[int(algorithm.alg)] = types.MappingProxyType({
            int(pcr): check.hex_digest(hexval, "%s.%s" % (where, pcr),
                                       algorithm.digest_size)
            for pcr, hexval in entries.items()})
    return types.MappingProxyType(result)


def _annotations(value: Any, check: _Checker) -> Mapping[str, str]:
    if type(value) is not dict:
        raise check.fail("annotations", "expected a JSON object of digest "
                         "or entry id -> description")
    body = value
    if len(body) > MAX_LIST:
        raise check.fail("annotations", "more than %d items" % MAX_LIST)
    for key, text in body.items():
        check.text(key, "annotations (key)")
        check.text(text, "annotations.%s" % _short(key)[:70], empty=True)
    return types.MappingProxyType(dict(body))


@dataclass(frozen=True)
class MeasuredBootPolicy:
    """Golden measurements for the firmware and OS boot rungs.

    Build with :meth:`from_json`; the constructor does not validate.
    ``pcrs`` maps bank -> PCR -> expected value (rung by :data:`PCR_RUNGS`).
    ``annotations`` maps a digest or entry id to what it was captured from
    (paths, subjects): help for the reviewer, never used to decide.
    """

    name: str
    version: int
    pcrs: Mapping[int, Mapping[int, bytes]]
    platform_firmware: FirmwareRules
    os_boot: OSBootRules
    description: str = ""
    annotations: Mapping[str, str] = field(
        default_factory=lambda: types.MappingProxyType({}))
    #: Accept quotes signed (and PCR-digested) with SHA-1. Off unless the
    #: operator sets it: SHA-1 collisions are practical, and any TPM 2.0
    #: can make an AK with a SHA-256 scheme.
    allow_sha1_quotes: bool = False

    kind = KIND_MEASURED_BOOT
    _KEYS = ("kind", "description", "pcrs", "platform_firmware", "os_boot",
             "annotations", "allow_sha1_quotes")

    @classmethod
    def from_json(cls, body: Any, *, name: str, version: int
                  ) -> MeasuredBootPolicy:
        """Validate a JSON body (dict, or JSON text) into a policy."""
        name, version = _check_identity(name, version)
        check = _Checker("%r v%d" % (name, version))
        body = check.obj(_body(body, check), "(body)", cls._KEYS)
        _kind(body, check, KIND_MEASURED_BOOT)
        policy = cls(
            name=name, version=version,
            pcrs=_pcr_values(body.get("pcrs", {}), check),
            platform_firmware=FirmwareRules.from_json(
                body.get("platform_firmware", {}), check,
                "platform_firmware"),
            os_boot=OSBootRules.from_json(body.get("os_boot", {}), check,
                                          "os_boot"),
            description=check.text(body.get("description", ""),
                                   "description", empty=True),
            annotations=_annotations(body.get("annotations", {}), check),
            allow_sha1_quotes=check.boolean(body.get(
                "allow_sha1_quotes", False), "allow_sha1_quotes"))
        if not any(policy.covers(rung) for rung in (
                Rung.PLATFORM_FIRMWARE, Rung.OS_BOOT)):
            raise check.fail("(body)", "the policy checks nothing: give "
                             "pcrs, platform_firmware or os_boot rules")
        return policy

    def pcrs_of(self, rung: Rung) -> list[tuple[int, int, bytes]]:
        """(bank, PCR, expected value) for the PCRs of ``rung``."""
        return [(alg, pcr, value) for alg, bank in sorted(self.pcrs.items())
                for pcr, value in sorted(bank.items())
                if PCR_RUNGS[pcr] is rung]

    def covers(self, rung: Rung) -> bool:
        """Whether any rule or PCR value of this policy is about ``rung``."""
        if self.pcrs_of(rung):
            return True
        if rung is Rung.PLATFORM_FIRMWARE:
            return not self.platform_firmware.empty
        if rung is Rung.OS_BOOT:
            return not self.os_boot.empty
        return False

    def required_pcrs(self) -> frozenset[int]:
        """PCRs the quote must cover for every rule here to be judged."""
        pcrs = {pcr for bank in self.pcrs.values() for pcr in bank}
        fw, os_ = self.platform_firmware, self.os_boot
        if fw.crtm_versions is not None:
            pcrs.add(0)
        if fw.firmware_digests is not None:
            pcrs.update((0, 2))
        if fw.secure_boot is not None:
            pcrs.add(7)
        if os_.boot_loaders is not None:
            pcrs.add(4)
        if os_.files:
            pcrs.add(9)
        if os_.kernel_command_lines is not None:
            pcrs.update((8, 12))
        return frozenset(pcrs)

    def to_json(self) -> dict[str, Any]:
        """The JSON body (what the database stores)."""
        out: dict[str, Any] = {"kind": self.kind}
        if self.description:
            out["description"] = self.description
        if self.allow_sha1_quotes:
            out["allow_sha1_quotes"] = True
        if self.pcrs:
            out["pcrs"] = {constants.alg_name(alg): {str(p): v.hex()
                                             for p, v in sorted(b.items())}
                           for alg, b in sorted(self.pcrs.items())}
        fw, os_ = self.platform_firmware.to_json(), self.os_boot.to_json()
        if fw:
            out["platform_firmware"] = fw
        if os_:
            out["os_boot"] = os_
        if self.annotations:
            out["annotations"] = dict(sorted(self.annotations.items()))
        return out


# --- runtime (IMA) -------------------------------------------------------------

def ima_digest_key(algorithm: str, digest: bytes) -> str:
    """How a runtime policy names a file digest: ``"<alg>:<hex>"``, with
    the algorithm as the kernel prints it in the measurement list."""
    return "%s:%s" % (algorithm, digest.hex())


def _ima_digest(value: Any, check: _Checker, where: str) -> str:
    text = check.text(value, where).lower()
    alg, sep, hexdigest = text.partition(":")
    if not sep or not _IMA_ALG.fullmatch(alg):
        raise check.fail(where, "expected '<algorithm>:<hex digest>' as IMA "
                         "prints it (e.g. 'sha256:ab12...'), got %s"
                         % _short(value))
    size = _IMA_ALG_SIZES.get(alg)
    if (not _HEX.fullmatch(hexdigest) or len(hexdigest) % 2 or not hexdigest
            or len(hexdigest) > 256
            or (size is not None and len(hexdigest) != 2 * size)):
        raise check.fail(where, "the %s digest must be %s hex digits" % (
            alg, 2 * size if size else "an even number of (at most 256)"))
    return text


def _exclude_regex(patterns: tuple[str, ...]) -> re.Pattern[str] | None:
    if not patterns:
        return None
    parts = [fnmatch.translate(p + "*" if p.endswith("/") else p)
             for p in patterns]
    return re.compile("|".join("(?:%s)" % part for part in parts))


@dataclass(frozen=True)
class RuntimePolicy:
    """Golden measurements for the runtime rung (the IMA log).

    ``digests`` maps a path to the allowed ``"<alg>:<hex>"`` keys
    (:func:`ima_digest_key`). ``excludes`` are fnmatch patterns matched
    against the whole path, case-sensitively; ``*`` also matches ``/``, so
    ``/tmp/*`` covers the whole tree, and a pattern ending in ``/`` is a
    prefix. Build with :meth:`from_json`.
    """

    name: str
    version: int
    digests: Mapping[str, frozenset[str]]
    excludes: tuple[str, ...] = ()
    allow_unknown: bool = False
    allow_violations: bool = False
    require_boot_aggregate: bool = True
    description: str = ""
    _exclude: re.Pattern[str] | None = field(default=None, init=False,
                                             repr=False, compare=False)

    kind = KIND_RUNTIME
    _KEYS = ("kind", "description", "digests", "excludes", "allow_unknown",
             "allow_violations", "require_boot_aggregate")

    def __post_init__(self) -> None:
        object.__setattr__(self, "_exclude", _exclude_regex(self.excludes))

    @classmethod
    def from_json(cls, body: Any, *, name: str, version: int
                  ) -> RuntimePolicy:
        """Validate a JSON body (dict, or JSON text) into a policy."""
        name, version = _check_identity(name, version)
        check = _Checker("%r v%d" % (name, version))
        body = check.obj(_body(body, check), "(body)", cls._KEYS)
        _kind(body, check, KIND_RUNTIME)
        raw = body.get("digests", {})
        if type(raw) is not dict:
            raise check.fail("digests", "expected a JSON object of path -> "
                             "list of '<alg>:<hex>'")
        if len(raw) > MAX_RUNTIME_PATHS:
            raise check.fail("digests", "more than %d paths"
                             % MAX_RUNTIME_PATHS)
        digests = {}
        for path, items in raw.items():
            check.text(path, "digests (a path)")
            where = "digests[%s]" % _short(path)
            digests[path] = frozenset(
                _ima_digest(item, check, "%s[%d]" % (where, i))
                for i, item in enumerate(check.array(
                    items, where, limit=MAX_DIGESTS_PER_PATH)))
        excludes = tuple(
            check.text(p, "excludes[%d]" % i)
            for i, p in enumerate(check.array(body.get("excludes", []),
                                              "excludes", limit=MAX_EXCLUDES,
                                              empty=True)))
        flags = {key: check.boolean(body[key], key) for key in (
            "allow_unknown", "allow_violations", "require_boot_aggregate")
            if key in body}
        return cls(name=name, version=version,
                   digests=types.MappingProxyType(digests),
                   excludes=excludes,
                   description=check.text(body.get("description", ""),
                                          "description", empty=True),
                   **flags)

    def is_excluded(self, path: str) -> bool:
        return self._exclude is not None and \
            self._exclude.fullmatch(path) is not None

    def allowed(self, path: str) -> frozenset[str] | None:
        """The allowed digest keys of ``path``, None if it is unknown."""
        return self.digests.get(path)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        if self.description:
            out["description"] = self.description
        out["digests"] = {path: sorted(values)
                          for path, values in sorted(self.digests.items())}
        out["excludes"] = list(self.excludes)
        out["allow_unknown"] = self.allow_unknown
        out["allow_violations"] = self.allow_violations
        out["require_boot_aggregate"] = self.require_boot_aggregate
        return out


def load_policy(kind: str, body: Any, *, name: str, version: int
                ) -> MeasuredBootPolicy | RuntimePolicy:
    """Build the policy object for a database record (kind, body, ...)."""
    if kind == KIND_MEASURED_BOOT:
        return MeasuredBootPolicy.from_json(body, name=name, version=version)
    if kind == KIND_RUNTIME:
        return RuntimePolicy.from_json(body, name=name, version=version)
    raise exception.InvalidParameterValue(
        name="kind", reason="%s is not a policy kind; use %r or %r"
        % (_short(kind), KIND_MEASURED_BOOT, KIND_RUNTIME))
