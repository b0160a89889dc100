"""``trusted-pools-manage db ...``: create and upgrade the database schema.

``db sync`` brings the database named by ``[database] connection`` to the
newest schema (or ``--revision``); it is safe to run again. ``db version``
prints the schema revision, or ``None`` for an empty database. For the
embedded SQLite default, ``db sync`` creates ``state_path`` if it is missing.

Exit status: 0 on success, 1 when the database refused or was unreachable.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from trusted_pools import exception
from trusted_pools.conf import CONF
from trusted_pools.conf import database as database_conf

if TYPE_CHECKING:
    import sqlalchemy as sa

# SQLAlchemy, alembic and the database layer are imported by the commands
# that use them: ``trusted-pools-manage evidence verify`` should not pay
# for them at start.

EXIT_OK = 0
EXIT_FAILED = 1

# The [database] options must exist before the command line is parsed.
database_conf.register_opts(CONF)


def add_commands(commands: argparse._SubParsersAction) -> None:
    group = commands.add_parser(
        "db", help="create or upgrade the database schema")
    sub = group.add_subparsers(dest="db_command", metavar="ACTION")
    sub.required = True
    sync = sub.add_parser(
        "sync", help="upgrade the schema to the newest version",
        description="Apply the schema migrations to the database named by "
                    "[database] connection. Idempotent. Back up the "
                    "database first: there are no downgrades.")
    sync.add_argument(
        "--revision", default="head", metavar="REV",
        help="stop at this alembic revision (default: head, the newest)")
    _add_format(sync)
    sync.set_defaults(func=run_sync)
    version = sub.add_parser(
        "version", help="print the schema revision of the database")
    _add_format(version)
    version.set_defaults(func=run_version)
    for name, what, description, run in _PURGES:
        purge = sub.add_parser(
            name, help="delete %s older than a number of days" % what,
            description=description + " Run it from cron, as nova-manage "
                                      "db archive_deleted_rows is.")
        purge.add_argument(
            "--older-than", type=_days, required=True, metavar="DAYS",
            help="age in days (a positive number; fractions allowed)")
        _add_format(purge)
        purge.set_defaults(func=run)


def _add_format(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=("text", "json"), default="text",
                        help="text (default) or json (one object)")


def _say(args: argparse.Namespace, text: str, **fields: object) -> None:
    """The command's answer: a line of text, or ``fields`` as JSON."""
    if getattr(args, "format", "text") == "json":
        import json
        print(json.dumps(fields, indent=2, sort_keys=True))
    else:
        print(text)


def _days(value: str) -> float:
    try:
        days = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            "%r is not a number of days" % value) from None
    # "not >" also refuses NaN.
    if not days > 0 or days == float("inf"):
        raise argparse.ArgumentTypeError(
            "the age must be a positive number of days, not %s" % value)
    return days


def _engine() -> "sa.engine.Engine":
    from trusted_pools.db import api
    return api.make_context_manager().writer.get_engine()


def _ensure_sqlite_directory(connection: str) -> str:
    """An operator expects the first ``db sync`` to create the file; says
    where the database is (password hidden), and what it created."""
    import sqlalchemy as sa
    try:
        url = sa.engine.make_url(connection)
    except sa.exc.ArgumentError:
        raise exception.ConfigInvalid(
            reason="[database] connection is not a database URL") from None
    where = url.render_as_string(hide_password=True)
    if url.get_backend_name() == "sqlite" and url.database not in (
            None, "", ":memory:"):
        directory = os.path.dirname(os.path.abspath(url.database))
        if not os.path.isdir(directory):
            os.makedirs(directory, mode=0o700, exist_ok=True)
            where += " (created directory %s)" % directory
    return where


def run_sync(args: argparse.Namespace) -> int:
    # Again at run time: CONF.reset() drops defaults set by oslo.db.
    database_conf.register_opts(CONF)
    from alembic import util as alembic_util

    from trusted_pools.db import migration
    try:
        where = _ensure_sqlite_directory(CONF.database.connection)
        engine = _engine()
        try:
            reached = migration.upgrade(args.revision, engine=engine)
        finally:
            engine.dispose()
    except (exception.TrustedPoolsError, alembic_util.CommandError,
            OSError) as error:
        return _failed("db sync", error)
    _say(args, "Database schema at revision %s in %s" % (reached, where),
         revision=reached, database=where)
    return EXIT_OK


def run_version(args: argparse.Namespace) -> int:
    database_conf.register_opts(CONF)
    from trusted_pools.db import migration
    try:
        engine = _engine()
        try:
            current = migration.version(engine)
        finally:
            engine.dispose()
    except exception.TrustedPoolsError as error:
        return _failed("db version", error)
    _say(args, str(current), revision=current)
    return EXIT_OK


def _purge(days: float, purge: str) -> tuple[int, str]:
    """Run ``Connection.<purge>(now - days)``: (deleted, cut-off)."""
    database_conf.register_opts(CONF)
    import datetime

    from trusted_pools.db import api
    before = (datetime.datetime.now(datetime.timezone.utc)
              - datetime.timedelta(days=days))
    connection = api.Connection(api.make_context_manager())
    try:
        return (getattr(connection, purge)(before),
                before.isoformat(timespec="seconds"))
    finally:
        connection.dispose()


def run_purge_verdicts(args: argparse.Namespace) -> int:
    try:
        deleted, before = _purge(args.older_than, "purge_verdicts")
    except exception.TrustedPoolsError as error:
        return _failed("db purge-verdicts", error)
    _say(args, "Deleted %d verdicts issued before %s (each host's newest "
         "kept)" % (deleted, before), deleted=deleted, before=before)
    return EXIT_OK


def run_purge_operations(args: argparse.Namespace) -> int:
    try:
        deleted, before = _purge(args.older_than, "purge_operations")
    except exception.TrustedPoolsError as error:
        return _failed("db purge-operations", error)
    _say(args, "Deleted %d host operations that ended before %s (pending "
         "ones kept)" % (deleted, before), deleted=deleted, before=before)
    return EXIT_OK


def run_purge_key_releases(args: argparse.Namespace) -> int:
    try:
        deleted, before = _purge(args.older_than, "purge_key_releases")
    except exception.TrustedPoolsError as error:
        return _failed("db purge-key-releases", error)
    _say(args, "Deleted %d key release and refusal records made before %s"
         % (deleted, before), deleted=deleted, before=before)
    return EXIT_OK


def run_purge_distrust_actions(args: argparse.Namespace) -> int:
    try:
        deleted, before = _purge(args.older_than, "purge_distrust_actions")
    except exception.TrustedPoolsError as error:
        return _failed("db purge-distrust-actions", error)
    _say(args, "Deleted %d distrust action records made before %s"
         % (deleted, before), deleted=deleted, before=before)
    return EXIT_OK


_PURGES = (
    ("purge-verdicts", "verdicts",
     "Delete stored verdicts issued more than --older-than days ago. Each "
     "host's newest verdict is kept whatever its age, so every host still "
     "has a standing.", run_purge_verdicts),
    ("purge-operations", "ended host operations",
     "Delete host operations (enroll, attest, capture, ...) that ended "
     "more than --older-than days ago. Pending ones are kept.",
     run_purge_operations),
    ("purge-key-releases", "key release and refusal records",
     "Delete the records of vTPM key releases and refusals made more than "
     "--older-than days ago (the audit trail GET /v1/key-releases and the "
     "dashboard show; the secrets themselves are not touched).",
     run_purge_key_releases),
    ("purge-distrust-actions", "reported distrust action records",
     "Delete the records of distrust actions (notify, disable_compute, "
     "migrate_trusted_instances) reported more than --older-than days ago.",
     run_purge_distrust_actions),
)


def _failed(command: str, error: BaseException) -> int:
    sys.stderr.write("trusted-pools-manage %s: %s\n" % (command, error))
    return EXIT_FAILED
