"""Host-written text on an operator's terminal.

A compromised host chooses the reasons and names in what it reports (a
vTPM report is host-reported, not evidence). Before such text reaches a
terminal, its control characters are shown escaped: a carriage return
could hide a CONFLICT mark printed before it, an escape sequence could
rewrite the lines around it. Both consoles (``trusted-pools-manage`` and
``openstack trusted``) print host text through :func:`printable`.
"""

from __future__ import annotations

from typing import Any


def printable(text: Any) -> str:
    """``text`` with every non-printable character backslash-escaped."""
    return "".join(c if c.isprintable() else c.encode(
        "unicode_escape").decode("ascii") for c in str(text))
