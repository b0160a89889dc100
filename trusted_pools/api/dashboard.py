"""``GET /dashboard/``: the operators' web page, served by trusted-pools-api
itself from files inside the package (no second server, no CDN, no
internet: everything it loads comes from here).

The page is static and carries no data: it is served without
authentication, and its script reads the same v1 API with the token the
user gives it (``X-Auth-Token``), so every number it shows passed
keystonemiddleware and the API's policy rules like any other client's.

Only the files named in :data:`FILES` are served (no path from the request
ever reaches the file system), with a Content-Security-Policy that allows
scripts, styles and requests from this origin only: an injected string in
a host's reasons cannot run as script even if the page rendered it as
HTML (it does not: it sets text).

Why hand-written: three small files (HTML, one vanilla ES module, CSS)
and an SVG plot drawn by that script do what the dashboard needs; a
front-end build chain or a charting library would be a second supply
chain in a security product for one page.
"""

from __future__ import annotations

import importlib.resources
from typing import Callable, Iterable

import webob
import webob.dec

#: URL prefix of the dashboard.
PREFIX = "/dashboard"

#: Served name -> content type (the only files served).
FILES = {
    "index.html": "text/html; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}

_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; "
        "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; "
        "base-uri 'none'; form-action 'self'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    # Small files; a new release must show at once.
    "Cache-Control": "no-cache",
}


def _read(name: str) -> bytes:
    return importlib.resources.files(__package__).joinpath(
        "dashboard_files", name).read_bytes()


def is_dashboard(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


class Dashboard:
    """The WSGI application of ``/dashboard`` and ``/dashboard/<file>``."""

    def __init__(self) -> None:
        # Read once: the files are part of the installed package.
        self.files = {name: _read(name) for name in FILES}

    @webob.dec.wsgify
    def __call__(self, request: webob.Request) -> webob.Response:
        if request.method not in ("GET", "HEAD"):
            return webob.Response(status=405, headerlist=[
                ("Allow", "GET, HEAD")])
        path = request.path_info
        if path == PREFIX:
            # Relative URLs in the page resolve under the slash.
            return webob.Response(status=301, headerlist=[
                ("Location", request.script_name + PREFIX + "/")])
        name = path[len(PREFIX) + 1:] or "index.html"
        if name not in self.files:
            return webob.Response(status=404, content_type="text/plain",
                                  charset="utf-8",
                                  body=b"No such dashboard file\n")
        response = webob.Response(status=200, headerlist=[])
        response.content_type = FILES[name].split(";")[0]
        response.charset = "utf-8"
        response.body = self.files[name]
        for header, value in _SECURITY_HEADERS.items():
            response.headers[header] = value
        return response


def app() -> Callable[[dict, Callable], Iterable[bytes]]:
    return Dashboard()
