"""``trusted-pools-manage evidence ...``: verify evidence from files.

Reads the files operators already have from tpm2-tools: the AK public
(``tpm2_readpublic -f tss``/``tpm2_createak -u``) or a PEM key, the quote
message (``tpm2_quote -m``), its signature (``-s``, TSS format), the PCR
values (``-o``, serialized or ``-F values``), the nonce as hex, a binary
firmware event log and an IMA runtime measurement list.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from dataclasses import dataclass, field
from typing import Any, Callable

from trusted_pools import exception
from trusted_pools.conf import CONF
from trusted_pools.tpm import constants
from trusted_pools.tpm import eventlog
from trusted_pools.tpm import ima
from trusted_pools.tpm import keys
from trusted_pools.tpm import pcrs as pcr_files
from trusted_pools.tpm import quote as quotes
from trusted_pools.tpm import structures

EXIT_VERIFIED = 0
EXIT_REJECTED = 1
EXIT_USAGE = 2



@dataclass
class Report:
    """What was verified, in order, and the first failure if any."""

    checks: list[dict[str, Any]] = field(default_factory=list)
    failure: dict[str, Any] | None = None

    def passed(self, check: str, detail: str, **facts: Any) -> None:
        self.checks.append({"check": check, "result": "verified",
                            "detail": detail, **facts})

    def failed(self, check: str, error: exception.TrustedPoolsError) -> None:
        self.failure = {"check": check, "error": type(error).__name__,
                        "reason": error.message,
                        "details": _jsonable(error.kwargs)}

    @property
    def verified(self) -> bool:
        return self.failure is None


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    return str(value)


def add_commands(commands: argparse._SubParsersAction) -> None:
    group = commands.add_parser(
        "evidence", help="verify TPM 2.0 attestation evidence from files")
    sub = group.add_subparsers(dest="evidence_command", metavar="ACTION")
    sub.required = True
    verify = sub.add_parser(
        "verify",
        help="verify a quote, its PCR values and the logs that explain them",
        description="Verify, in order: the AK (strict attestation-key "
                    "attributes), the quote signature, the nonce, the PCR "
                    "values against the signed PCR digest, then the event "
                    "log and the IMA log against those PCRs. Stops at the "
                    "first failure. Exit status 0: all verified; 1: "
                    "evidence rejected; 2: bad usage.")
    _add_verify_arguments(verify)
    verify.set_defaults(func=run_verify)


def _add_verify_arguments(verify: argparse.ArgumentParser) -> None:
    verify.add_argument(
        "--ak", required=True, metavar="FILE",
        help="attestation key public: TPM2B_PUBLIC/TPMT_PUBLIC as written "
             "by 'tpm2_readpublic -f tss' or 'tpm2_createak -u', or a PEM "
             "public key (then the AK rules cannot be checked and "
             "--allow-unrestricted-ak is required)")
    verify.add_argument(
        "--allow-unrestricted-ak", action="store_true",
        help="skip the AK attribute rules (restricted, sign, fixedTPM, "
             "fixedParent, sensitiveDataOrigin, not decrypt). Never use "
             "for trust decisions: an unrestricted key can sign forged "
             "quotes. Also accepts an AK without a fixed signing scheme")
    verify.add_argument(
        "--allow-sha1-quotes", action="store_true",
        help="accept a quote signed with SHA-1 (refused by default, as the "
             "conductor does unless the host's measured-boot policy sets "
             "allow_sha1_quotes)")
    verify.add_argument(
        "--quote", required=True, metavar="FILE",
        help="quoted TPMS_ATTEST, as written by 'tpm2_quote -m'")
    verify.add_argument(
        "--signature", required=True, metavar="FILE",
        help="TPMT_SIGNATURE, as written by 'tpm2_quote -s' (TSS format)")
    nonce = verify.add_mutually_exclusive_group(required=True)
    nonce.add_argument(
        "--nonce", metavar="HEX",
        help="the challenge nonce in hex ('' for none); must equal the "
             "quote's extraData")
    nonce.add_argument(
        "--nonce-file", metavar="FILE",
        help="file holding the nonce as raw bytes ('tpm2_quote -q' input)")
    verify.add_argument(
        "--pcrs", required=True, metavar="FILE",
        help="PCR values: 'tpm2_quote -o' / 'tpm2_pcrread -o' output, "
             "either serialized (default) or '-F values' (raw digests in "
             "the quote's selection order)")
    verify.add_argument(
        "--pcrs-format", choices=("auto", "serialized", "values"),
        default="auto",
        help="format of --pcrs; 'values' is read in the order of the "
             "selection signed in the quote (default: auto)")
    verify.add_argument(
        "--eventlog", metavar="FILE",
        help="binary firmware event log, as the kernel exposes it in "
             "/sys/kernel/security/tpm0/binary_bios_measurements")
    verify.add_argument(
        "--ima-log", metavar="FILE",
        help="IMA runtime measurement list, ascii or binary "
             "(/sys/kernel/security/ima/*_runtime_measurements)")
    verify.add_argument(
        "--format", choices=("text", "json"), default="text",
        help="output format (default: text)")


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise exception.InvalidParameterValue(
            name=path, reason="cannot read file: %s" % exc.strerror) from exc


def _load_ak(data: bytes) -> tuple[structures.Public, bool]:
    """The AK from tpm2-tools' TSS form or a PEM public key."""
    if data.lstrip().startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, UnsupportedAlgorithm) as error:
            raise exception.MalformedEvidence(
                what="AK public (PEM)", reason=str(error)) from None
        return keys.public_from_key(key), True
    return structures.load_public(data), False


def _read_limited(path: str, what: str, limit: int) -> bytes:
    data = _read(path)
    if len(data) > limit:
        raise exception.EvidenceTooLarge(what=what, size=len(data),
                                         limit=limit)
    return data


def _parse_nonce(args: argparse.Namespace) -> bytes:
    if args.nonce_file is not None:
        return _read(args.nonce_file)
    text = args.nonce.strip().removeprefix("0x")
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise exception.InvalidParameterValue(
            name="--nonce", reason="not hexadecimal") from None


def _step(report: Report, check: str, action: Callable[[], Any]) -> Any:
    """Run one verification step; record a typed failure and stop."""
    try:
        return action()
    except exception.TrustedPoolsError as error:
        report.failed(check, error)
        raise _Stop() from error


class _Stop(Exception):
    """Internal: a step failed and the report says why."""


def verify_files(args: argparse.Namespace) -> Report:
    report = Report()
    try:
        _verify_all(args, report)
    except _Stop:
        pass
    return report


def _verify_all(args: argparse.Namespace, report: Report) -> None:
    ak, from_pem = _step(report, "AK public", lambda: _load_ak(_read(
        args.ak)))
    if from_pem and not args.allow_unrestricted_ak:
        report.failed("AK attributes", exception.AKAttributesRejected(
            "A PEM key carries no TPM attributes, so nothing shows it is a "
            "restricted key inside a TPM: give the AK as 'tpm2_readpublic "
            "-f tss' output, or pass --allow-unrestricted-ak if it was "
            "checked at enrollment", attribute="restricted",
            expected="set"))
        raise _Stop()
    if args.allow_unrestricted_ak:
        report.passed("AK attributes", "NOT CHECKED (--allow-unrestricted-ak)")
    else:
        _step(report, "AK attributes", lambda: keys.check_ak_attributes(ak))
        report.passed("AK attributes", "restricted signing key bound to "
                      "its TPM", name=ak.name().hex())
    nonce = _step(report, "nonce", lambda: _parse_nonce(args))
    quote_bytes = _step(report, "quote", lambda: _read(args.quote))
    values = _step(report, "PCR values", lambda: _load_pcrs(args,
                                                            quote_bytes))
    verified = _step(report, "quote", lambda: quotes.verify_quote(
        ak, quote_bytes, _read(args.signature), nonce, values,
        allow_sha1=args.allow_sha1_quotes,
        allow_unfixed_scheme=args.allow_unrestricted_ak))
    _report_quote(report, verified)
    if args.eventlog:
        _verify_eventlog(args, report, verified)
    if args.ima_log:
        _verify_ima(args, report, verified)


def _load_pcrs(args: argparse.Namespace, quote_bytes: bytes
               ) -> dict[int, dict[int, bytes]]:
    data = _read(args.pcrs)
    if args.pcrs_format == "serialized":
        return pcr_files.parse_serialized(data)[1]
    # The quote's selection only lays out raw values; verify_quote then
    # checks them against the signed digest, so reading it early is safe.
    attested = structures.parse_attest(quote_bytes).attested
    if not isinstance(attested, structures.QuoteInfo):
        raise exception.QuoteTypeInvalid(
            type=structures.parse_attest(quote_bytes).type, expected=0x8018)
    selection = attested.pcr_select
    if args.pcrs_format == "values":
        return pcr_files.parse_values(data, selection)
    return pcr_files.load_pcr_values(data, selection)


def _report_quote(report: Report, verified: Any) -> None:
    clock = verified.clock_info
    banks = ", ".join("%s:%s" % (constants.alg_name(alg),
                                 ",".join(str(p) for p in sorted(pcrs)))
                      for alg, pcrs in verified.pcrs.items())
    report.passed("quote signature", "valid signature by the AK")
    report.passed("nonce", "quote extraData equals the nonce")
    report.passed("PCR digest", "PCR values match the signed digest",
                  pcrs=banks)
    report.passed("clock", "clock=%d resetCount=%d restartCount=%d safe=%s"
                  % (clock.clock, clock.reset_count, clock.restart_count,
                     clock.safe))


def _verify_eventlog(args: argparse.Namespace, report: Report,
                     verified: Any) -> None:
    data = _read(args.eventlog)
    log = _step(report, "event log", lambda: eventlog.parse_event_log(
        data, max_size=CONF.attestation.max_event_log_bytes))
    result = _step(report, "event log", lambda: eventlog.verify_event_log(
        log, verified.pcrs))
    report.passed("event log", "%d events replay to the quoted PCRs"
                  % len(result.events))


def _verify_ima(args: argparse.Namespace, report: Report,
                verified: Any) -> None:
    quoted = {alg: pcrs[10] for alg, pcrs in verified.pcrs.items()
              if 10 in pcrs}
    if not quoted:
        error = exception.PCRSelectionMismatch(
            reason="an IMA log was given but the quote does not cover "
                   "PCR 10")
        report.failed("IMA log", error)
        raise _Stop()
    data = _step(report, "IMA log", lambda: _read_limited(
        args.ima_log, "IMA log", CONF.attestation.max_ima_log_bytes))
    result = _step(report, "IMA log", lambda: ima.verify_ima_log(
        data, quoted))
    report.passed("IMA log", "%d entries replay to the quoted PCR 10"
                  % result.state.entries)


def _print_text(report: Report, out: Any) -> None:
    for check in report.checks:
        extra = "".join(" %s=%s" % (k, v) for k, v in check.items()
                        if k not in ("check", "result", "detail"))
        out.write("OK      %-16s %s%s\n" % (check["check"], check["detail"],
                                            extra))
    if report.failure:
        out.write("FAILED  %-16s %s: %s\n" % (
            report.failure["check"], report.failure["error"],
            report.failure["reason"]))
        out.write("RESULT  evidence rejected\n")
    else:
        out.write("RESULT  all evidence verified\n")


_FILE_ARGUMENTS = ("ak", "quote", "signature", "nonce_file", "pcrs",
                   "eventlog", "ima_log")


def _unreadable_files(args: argparse.Namespace) -> list[str]:
    paths = (getattr(args, name) for name in _FILE_ARGUMENTS)
    return [p for p in paths if p is not None and not os.access(p, os.R_OK)]


def run_verify(args: argparse.Namespace) -> int:
    unreadable = _unreadable_files(args)
    if unreadable:
        sys.stderr.write("trusted-pools-manage: cannot read: %s\n"
                         % ", ".join(unreadable))
        return EXIT_USAGE
    report = verify_files(args)
    if args.format == "json":
        json.dump({"verified": report.verified, "checks": report.checks,
                   "failure": report.failure}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        _print_text(report, sys.stdout)
    return EXIT_VERIFIED if report.verified else EXIT_REJECTED
