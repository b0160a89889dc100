"""``trusted-pools-manage ek-sha256 FILE``: the EK hash an operator
approves at enrollment (``openstack trusted host enroll --ek-sha256``).

Host, policy and verdict operations are not here: they go through
trusted-pools-api (``openstack trusted ...``), which checks who asks. This
command reads a local file only. Exit status: 0 success, 1 the file is not
a certificate or key, 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys

from trusted_pools import exception

EXIT_OK = 0
EXIT_FAILED = 1


def add_commands(commands: argparse._SubParsersAction) -> None:
    ek_hash = commands.add_parser(
        "ek-sha256", help="print the EK hash of an EK certificate file",
        description="Print the SHA-256 of the public key in FILE (an EK "
                    "certificate, PEM or DER, or a PEM/DER public key): "
                    "the value 'openstack trusted host enroll --ek-sha256' "
                    "approves.")
    ek_hash.add_argument("file")
    ek_hash.add_argument("--format", choices=("json",), default="json",
                         help="json (the only format: one object)")
    ek_hash.set_defaults(func=_print_ek_sha256)


def _print_ek_sha256(args: argparse.Namespace) -> int:
    try:
        digest = _ek_sha256_of_file(args.file)
    except exception.TrustedPoolsError as error:
        sys.stderr.write("trusted-pools-manage: %s: %s\n"
                         % (type(error).__name__, error.message))
        return EXIT_FAILED
    json.dump({"ek_sha256": digest}, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return EXIT_OK


def _ek_sha256_of_file(path: str) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from trusted_pools.verifier import enrollment
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



__all__ = ["add_commands"]
