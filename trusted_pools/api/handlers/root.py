"""``GET /`` and ``GET /v1``: the version documents (no authentication:
clients discover versions before they have a token)."""

from __future__ import annotations

from typing import Any

import webob

from trusted_pools.api import microversion


def v1(request: webob.Request) -> dict[str, Any]:
    return {"id": "v1", "status": "CURRENT",
            "min_version": str(microversion.MIN),
            "max_version": str(microversion.MAX),
            "links": [{"rel": "self",
                       "href": request.host_url + request.script_name
                       + "/v1"}]}


def versions(request: webob.Request) -> dict[str, Any]:
    return {"versions": [v1(request)]}
