"""``trusted-pools-manage host|policy|verdict ...``: operate the pool.

Writes go through a conductor over the message bus (it validates, and the
owning conductor acts at once); reads come from the database. Exit status:
0 success, 1 the operation failed (the reason is printed), 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable

import oslo_messaging as messaging

from trusted_pools import exception
from trusted_pools.common import rpc
from trusted_pools.conf import CONF
from trusted_pools.db import api as db_api

EXIT_OK = 0
EXIT_FAILED = 1


def _conductor_api():
    from trusted_pools.conductor import rpcapi
    rpc.init(CONF)
    return rpcapi.ConductorAPI(timeout=120)


def _run(action: Callable[[], Any]) -> int:
    """Run an operation; print its result as JSON, or why it failed."""
    try:
        result = action()
    except exception.TrustedPoolsError as error:
        sys.stderr.write("trusted-pools-manage: %s: %s\n"
                         % (type(error).__name__, error.message))
        return EXIT_FAILED
    except messaging.MessagingTimeout:
        sys.stderr.write("trusted-pools-manage: no conductor answered: is "
                         "trusted-pools-conductor running, and does "
                         "transport_url point at its message bus?\n")
        return EXIT_FAILED
    finally:
        rpc.cleanup()
    if result is not None:
        json.dump(result, sys.stdout, indent=2, sort_keys=True, default=str)
        sys.stdout.write("\n")
    return EXIT_OK


def _load_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError) as error:
        raise exception.InvalidParameterValue(
            name=path, reason="not a readable JSON file (%s)" % error) \
            from None


def add_commands(commands: argparse._SubParsersAction) -> None:
    _host_commands(commands)
    _policy_commands(commands)
    _verdict_commands(commands)


def _host_commands(commands: argparse._SubParsersAction) -> None:
    host = commands.add_parser("host", help="enroll, list and attest hosts")
    sub = host.add_subparsers(dest="host_command", metavar="ACTION")
    sub.required = True
    enroll = sub.add_parser(
        "enroll", help="register a host's TPM (EK chain, AK binding)",
        description="Ask a conductor to enroll HOST: its agent must run. "
                    "The EK certificate must chain to [conductor] "
                    "ek_ca_bundle and match the TCG EK profile. The first "
                    "enrollment needs --ek-sha256, the SHA-256 of the "
                    "host's EK public key (SubjectPublicKeyInfo DER) from "
                    "your inventory; without it the refusal prints the "
                    "hash the host presents, to compare. Re-enrolling with "
                    "the same EK (a new AK) needs no approval; another EK "
                    "needs 'host reset-enrollment' first.")
    enroll.add_argument("host", help="compute host name (the agent's host)")
    enroll.add_argument("--group", default="default",
                        help="host group whose policies apply")
    enroll.add_argument("--ek-sha256", metavar="HEX",
                        help="approve this EK: SHA-256 (64 hex digits, "
                             "colons allowed) of the EK's "
                             "SubjectPublicKeyInfo DER")
    enroll.set_defaults(func=lambda a: _run(
        lambda: _conductor_api().enroll_host({}, a.host, a.group,
                                             ek_sha256=a.ek_sha256)))
    reset = sub.add_parser(
        "reset-enrollment", help="forget a host's TPM after a TPM swap",
        description="Drop HOST's EK approval and registration (after its "
                    "TPM or motherboard was replaced): it is not attested "
                    "until it enrolls again with --ek-sha256 of the new "
                    "EK.")
    reset.add_argument("host")
    reset.set_defaults(func=lambda a: _run(
        lambda: _conductor_api().reset_enrollment({}, a.host)))
    ek_hash = sub.add_parser(
        "ek-sha256", help="print the EK hash of an EK certificate file",
        description="Print the SHA-256 of the public key in FILE (an EK "
                    "certificate, PEM or DER, or a PEM/DER public key): "
                    "the value 'host enroll --ek-sha256' approves.")
    ek_hash.add_argument("file")
    ek_hash.set_defaults(func=lambda a: _run(lambda: {
        "ek_sha256": _ek_sha256_of_file(a.file)}))
    attest = sub.add_parser(
        "attest", help="attest a host now (a fresh challenge)")
    attest.add_argument("host")
    attest.set_defaults(func=lambda a: _run(
        lambda: _conductor_api().attest_now({}, a.host)))
    listing = sub.add_parser("list", help="hosts with their latest verdict")
    listing.set_defaults(func=lambda a: _run(_list_hosts))


def _ek_sha256_of_file(path: str) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from trusted_pools.attestation import enrollment
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        raise exception.InvalidParameterValue(
            name=path, reason="cannot be read (%s)" % error) from None
    loaders = (x509.load_pem_x509_certificate,
               x509.load_der_x509_certificate,
               serialization.load_pem_public_key,
               serialization.load_der_public_key)
    for load in loaders:
        try:
            return enrollment.ek_public_sha256(load(data))
        except (ValueError, TypeError):
            continue
    raise exception.InvalidParameterValue(
        name=path, reason="not a certificate or public key (PEM or DER)")


def _list_hosts() -> list[dict[str, Any]]:
    db = db_api.get_instance()
    latest = {v.host_id: v for v in db.latest_verdicts()}
    rows = []
    for host in db.list_hosts():
        verdict = latest.get(host.id)
        rows.append({
            "host": host.hostname, "group": host.group, "state": host.state,
            "status": verdict.status if verdict else "unknown",
            "level": verdict.level if verdict else 0,
            "issued_at": verdict.issued_at if verdict else None,
            "reasons": verdict.reasons if verdict else []})
    return rows


def _policy_commands(commands: argparse._SubParsersAction) -> None:
    policy = commands.add_parser(
        "policy", help="golden measurements: capture, create, assign")
    sub = policy.add_subparsers(dest="policy_command", metavar="ACTION")
    sub.required = True
    capture = sub.add_parser(
        "capture", help="print policies built from a known-good host",
        description="Attest HOST afresh and print measured-boot and IMA "
                    "policy bodies pinned to what verified. Review them, "
                    "then 'policy create'. Nothing is stored.")
    capture.add_argument("host")
    capture.set_defaults(func=lambda a: _run(
        lambda: _conductor_api().capture_policy({}, a.host)))
    create = sub.add_parser(
        "create", help="store a new version of a policy",
        description="Store FILE (a JSON policy body) as the next version "
                    "of policy NAME. Kinds: measured_boot, ima.")
    create.add_argument("name")
    create.add_argument("file", help="JSON policy body")
    create.add_argument("--kind", required=True,
                        choices=("measured_boot", "ima"))
    create.set_defaults(func=lambda a: _run(
        lambda: _conductor_api().create_policy(
            {}, a.name, a.kind, _load_json(a.file))))
    assign = sub.add_parser(
        "assign", help="apply a policy to a host group")
    assign.add_argument("group")
    assign.add_argument("name")
    assign.add_argument("--version", type=int,
                        help="pin this version (default: always the latest)")
    assign.set_defaults(func=lambda a: _run(
        lambda: _conductor_api().assign_policy({}, a.group, a.name,
                                               a.version)))
    listing = sub.add_parser("list", help="policies and their versions")
    listing.set_defaults(func=lambda a: _run(lambda: [
        {"name": p.name, "version": p.version, "kind": p.kind,
         "created_at": p.created_at, "created_by": p.created_by}
        for p in db_api.get_instance().list_policies()]))


def _verdict_commands(commands: argparse._SubParsersAction) -> None:
    verdict = commands.add_parser("verdict", help="attestation results")
    sub = verdict.add_subparsers(dest="verdict_command", metavar="ACTION")
    sub.required = True
    history = sub.add_parser("history", help="a host's recent verdicts")
    history.add_argument("host")
    history.add_argument("--limit", type=int, default=20)
    history.set_defaults(func=lambda a: _run(lambda: _history(a.host,
                                                              a.limit)))


def _history(hostname: str, limit: int) -> list[dict[str, Any]]:
    db = db_api.get_instance()
    host = db.get_host_by_name(hostname)
    return [{"status": v.status, "level": v.level, "reasons": v.reasons,
             "policy_versions": v.policy_versions,
             "issued_at": v.issued_at, "expires_at": v.expires_at,
             "evidence_digest": v.evidence_digest}
            for v in db.verdict_history(host.id, limit)]


__all__ = ["add_commands"]
