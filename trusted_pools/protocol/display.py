"""Host-written text on an operator's terminal, and times as every
console and API answer shows them.

A compromised host chooses the reasons and names in what it reports (a
vTPM report is host-reported, not evidence). Before such text reaches a
terminal, its control characters are shown escaped: a carriage return
could hide a CONFLICT mark printed before it, an escape sequence could
rewrite the lines around it. Both consoles (``trusted-pools-manage`` and
``openstack trusted``) print host text through :func:`printable`.
"""

from __future__ import annotations

import datetime
from typing import Any


def printable(text: Any) -> str:
    """``text`` with every non-printable character backslash-escaped."""
    return "".join(c if c.isprintable() else c.encode(
        "unicode_escape").decode("ascii") for c in str(text))


def iso_time(value: Any) -> str | None:
    """A time as ISO 8601 UTC with a ``Z`` (how every answer shows
    times): from epoch seconds, a datetime (naive ones are UTC), or an ISO
    string (normalised). None stays None; anything else is ValueError."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError("not a time: %r" % (value,))
    if isinstance(value, (int, float)):
        value = datetime.datetime.fromtimestamp(value, datetime.timezone.utc)
    elif isinstance(value, str):
        value = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if not isinstance(value, datetime.datetime):
        raise ValueError("not a time: %r" % (value,))
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.timezone.utc)
    return value.astimezone(datetime.timezone.utc).isoformat().replace(
        "+00:00", "Z")
