"""What the v1 commands share: argument types, column formats, paging."""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from typing import Any

from cliff import columns
from osc_lib import exceptions

#: The policy kinds the API takes.
POLICY_KINDS = ("measured_boot", "runtime")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not an integer" % text)
    if value < 1:
        raise argparse.ArgumentTypeError("%d is not 1 or more" % value)
    return value


def iso_time(text: str) -> str:
    """argparse type: an ISO 8601 time (checked here so a typo is named
    before anything is sent); passed on as written."""
    try:
        datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            "%r is not an ISO 8601 time (e.g. 2025-01-31T12:00:00Z)" % text)
    return text


def add_paging(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--limit", type=positive_int, metavar="<count>",
        help="Show at most this many %s (default: all, fetched page by "
             "page)" % what)
    parser.add_argument(
        "--marker", metavar="<name>",
        help="Start after the %s of this name" % what.rstrip("s"))


class JsonColumn(columns.FormattableColumn):
    """Nested JSON: indented in tables, the value itself for -f json."""

    def human_readable(self) -> str:
        return json.dumps(self._value, indent=2, sort_keys=True)

    def machine_readable(self) -> Any:
        return self._value


class LinesColumn(columns.FormattableColumn):
    """A list of sentences (reasons): one a line in tables."""

    def human_readable(self) -> str:
        return "\n".join(str(item) for item in self._value or [])

    def machine_readable(self) -> Any:
        return list(self._value or [])


class AssignedVersionColumn(columns.FormattableColumn):
    """An assignment's version; null means the group follows the newest."""

    def human_readable(self) -> str:
        return "latest" if self._value is None else str(self._value)

    def machine_readable(self) -> Any:
        return self._value


def show_columns(resource: dict[str, Any],
                 formatters: dict[str, type] | None = None
                 ) -> tuple[tuple[str, ...], tuple[Any, ...]]:
    """(columns, values) of one resource for a ShowOne, keys sorted."""
    formatters = formatters or {}
    names = tuple(sorted(resource))
    return names, tuple(formatters[n](resource[n]) if n in formatters
                        else resource[n] for n in names)


def read_json_file(path: str) -> Any:
    """The JSON document in ``path`` (``-`` reads standard input)."""
    try:
        if path == "-":
            return json.load(sys.stdin)
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except OSError as error:
        raise exceptions.CommandError("Cannot read %s: %s"
                                      % (path, error.strerror or error))
    except ValueError as error:
        raise exceptions.CommandError("%s is not valid JSON: %s"
                                      % (path, error))


def write_json(data: Any, path: str | None, stdout: Any) -> None:
    """Write ``data`` as indented JSON to ``path``, or to ``stdout``."""
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    if path is None:
        stdout.write(text)
        return
    try:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
    except OSError as error:
        raise exceptions.CommandError("Cannot write %s: %s"
                                      % (path, error.strerror or error))


def printable(text: Any) -> str:
    """Host-written text with every non-printable character shown
    escaped, so a compromised host's reason cannot rewrite the terminal.
    The same rule as ``trusted_pools.protocol.display.printable``, written
    here because the client plugin loads nothing of the project outside
    ``trusted_pools.osc`` (tests/unit/osc/test_imports.py)."""
    return "".join(c if c.isprintable() else c.encode(
        "unicode_escape").decode("ascii") for c in str(text))


def add_json_format(parser: argparse.ArgumentParser) -> None:
    """``-f/--format json`` on a command whose answer is not a table (the
    same flag every ``openstack trusted`` command takes)."""
    parser.add_argument("-f", "--format", dest="formatter", default=None,
                        choices=("json",),
                        help="json: print what was done as one JSON "
                             "object (default: print nothing)")


def done_json(args: argparse.Namespace, stdout: Any,
              result: dict[str, Any]) -> None:
    """With ``-f json``, print ``result``; silent otherwise (OSC's
    convention for commands that change something and show nothing)."""
    if getattr(args, "formatter", None) == "json":
        write_json(result, None, stdout)
