"""``?limit=N&marker=NAME`` paging of lists, and the ``next`` link."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from typing import Callable, Sequence, TypeVar

import webob

from trusted_pools.api import errors

T = TypeVar("T")


@dataclass(frozen=True)
class Page:
    limit: int
    marker: str | None


def page_of(params: dict[str, str], default_limit: int, max_limit: int
            ) -> Page:
    """Read limit and marker; a limit outside 1..max_limit is a 400."""
    limit = default_limit
    if "limit" in params:
        limit = int(params["limit"])
        if not 1 <= limit <= max_limit:
            raise errors.bad_request(
                "Invalid input for query/limit: %d is not between 1 and %d"
                % (limit, max_limit))
    return Page(min(limit, max_limit), params.get("marker"))


def cut(items: Sequence[T], key: Callable[[T], str], page: Page
        ) -> tuple[list[T], str | None]:
    """Items after the marker (sorted by ``key``), at most ``limit`` of
    them, and the marker of the next page (None on the last). An unknown
    marker is a 400: the client would otherwise restart from the top."""
    ordered = sorted(items, key=key)
    start = 0
    if page.marker is not None:
        keys = [key(item) for item in ordered]
        if page.marker not in keys:
            raise errors.bad_request(
                "Invalid input for query/marker: %s is not in the list"
                % page.marker, code="request.marker_not_found")
        start = keys.index(page.marker) + 1
    chunk = ordered[start:start + page.limit]
    more = start + page.limit < len(ordered)
    return chunk, (key(chunk[-1]) if more and chunk else None)


def links(request: webob.Request, next_marker: str | None
          ) -> list[dict[str, str]]:
    if next_marker is None:
        return []
    params = [(k, v) for k, v in request.GET.items() if k != "marker"]
    params.append(("marker", next_marker))
    href = "%s?%s" % (request.path_url, urllib.parse.urlencode(params))
    return [{"rel": "next", "href": href}]
