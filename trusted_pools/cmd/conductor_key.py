"""``trusted-pools-manage conductor-key show|generate``: the conductor's
signing key without openssl.

``show`` prints the public half of ``[conductor] signing_key_path`` (PEM,
or ``--format jwk``), what agents pin in ``[agent] conductor_keys_file``
and consumers in ``conductor_public_keys``. ``generate PATH`` makes a new
key for a rotation: publish its public half to every agent and consumer
first (their files hold several keys), then point ``signing_key_path`` at
it and restart the conductor; remove the old public key last.

Exit status: 0 success, 1 the key cannot be read or written, 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from trusted_pools import exception
from trusted_pools.conf import CONF
from trusted_pools.conf import conductor as conductor_conf

EXIT_OK = 0
EXIT_FAILED = 1

# [conductor] signing_key_path must exist before the command line is read.
conductor_conf.register_opts(CONF)


def add_commands(commands: argparse._SubParsersAction) -> None:
    group = commands.add_parser(
        "conductor-key", help="show or generate the conductor's signing key")
    sub = group.add_subparsers(dest="key_command", metavar="ACTION")
    sub.required = True
    show = sub.add_parser(
        "show", help="print the public key agents and consumers pin",
        description="Print the public half of the conductor's signing key "
                    "([conductor] signing_key_path, or --key).")
    show.add_argument("--key", metavar="PATH",
                      help="private key file (default: [conductor] "
                           "signing_key_path)")
    show.add_argument("--format", choices=("pem", "jwk", "json"),
                      default="pem",
                      help="pem: for [agent] conductor_keys_file; jwk: with "
                           "its kid, as GET /v1/keys serves it; json: both "
                           "(kid, public_key_pem, jwk)")
    show.set_defaults(func=run_show)
    generate = sub.add_parser(
        "generate", help="create a new signing key file for a rotation",
        description="Create PATH (mode 0600) holding a new private key and "
                    "print its public half. Refuses an existing PATH.")
    generate.add_argument("path", metavar="PATH")
    generate.add_argument("--algorithm", choices=("EdDSA", "ES256"),
                          default="EdDSA")
    generate.add_argument("--format", choices=("pem", "json"), default="pem",
                          help="pem (default): the public key; json: path, "
                               "kid, public_key_pem and jwk")
    generate.set_defaults(func=run_generate)


def run_show(args: argparse.Namespace) -> int:
    from trusted_pools.protocol import keystore
    path = args.key or CONF.conductor.signing_key_path
    try:
        key = keystore.load_signing_key(path)
    except exception.TrustedPoolsError as error:
        return _failed("conductor-key show", error)
    if args.format == "jwk":
        json.dump(keystore.public_jwk(key), sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif args.format == "json":
        _dump_key(key, path)
    else:
        sys.stdout.write(keystore.public_key_pem(key))
    return EXIT_OK


def _dump_key(key: object, path: str) -> None:
    from trusted_pools.protocol import keystore
    jwk = keystore.public_jwk(key)
    json.dump({"path": path, "kid": jwk["kid"],
               "public_key_pem": keystore.public_key_pem(key), "jwk": jwk},
              sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


def run_generate(args: argparse.Namespace) -> int:
    from trusted_pools.protocol import keystore
    if os.path.lexists(args.path):
        return _failed("conductor-key generate", exception.ConfigInvalid(
            reason="%s exists; a rotation writes a new file (move the old "
                   "one away only after the new key is in use)"
                   % args.path))
    try:
        key = keystore.load_or_create_signing_key(args.path, args.algorithm)
    except exception.TrustedPoolsError as error:
        return _failed("conductor-key generate", error)
    if args.format == "json":
        _dump_key(key, args.path)
    else:
        sys.stdout.write(keystore.public_key_pem(key))
    sys.stderr.write(
        "New signing key written to %s. Add the public key above to every "
        "agent's [agent] conductor_keys_file and every consumer's "
        "conductor_public_keys, then set [conductor] signing_key_path = %s "
        "and restart the conductor.\n" % (args.path, args.path))
    return EXIT_OK


def _failed(command: str, error: exception.TrustedPoolsError) -> int:
    sys.stderr.write("trusted-pools-manage %s: %s\n" % (command, error))
    return EXIT_FAILED
