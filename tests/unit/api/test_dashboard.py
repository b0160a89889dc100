"""The dashboard's static files: served by the API without a token, only
the named files, with headers that keep the page to its own origin; the
data behind it still needs a token (the browser test drives the page,
tests/functional/api/test_dashboard_browser.py)."""

from __future__ import annotations

import pytest
import webob

from trusted_pools.api import dashboard


def test_page_and_assets_are_served_without_a_token(client):
    page = client.get("/dashboard/", persona=None)
    assert page.status_code == 200
    assert page.content_type == "text/html"
    assert b'src="dashboard.js"' in page.body
    for name, kind in (("dashboard.js", "text/javascript"),
                       ("dashboard.css", "text/css")):
        asset = client.get("/dashboard/" + name, persona=None)
        assert (asset.status_code, asset.content_type) == (200, kind)
        assert asset.body == dashboard.Dashboard().files[name]
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert "connect-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    # Nothing from elsewhere: no URL with a scheme in the files.
    for name in dashboard.FILES:
        body = dashboard.Dashboard().files[name]
        assert b"http://" not in body.replace(
            b"http://www.w3.org/2000/svg", b"") and b"https://" not in body


def test_bare_prefix_redirects_to_the_page():
    answer = webob.Request.blank("/dashboard").get_response(
        dashboard.Dashboard())
    assert answer.status_code == 301
    assert answer.headers["Location"].endswith("/dashboard/")


@pytest.mark.parametrize("path", [
    "/dashboard/../etc/passwd", "/dashboard/%2e%2e/app.py",
    "/dashboard/dashboard.py", "/dashboard/index.html/x",
    "/dashboard/__init__.py", "/dashboard//index.html"])
def test_only_the_named_files(client, path):
    assert client.get(path, persona=None).status_code == 404


def test_writes_are_refused(client):
    assert client.post("/dashboard/", {}, persona=None).status_code == 405


def test_the_data_still_needs_a_token(client):
    assert client.get("/v1/hosts", persona=None).status_code == 401
    assert client.get("/v1/hosts", persona="member").status_code == 403


def test_files_ship_inside_the_package():
    """What a wheel carries: the files are read through importlib from
    the package, never from the source tree."""
    import importlib.resources
    root = importlib.resources.files("trusted_pools.api") / "dashboard_files"
    assert sorted(p.name for p in root.iterdir()) == sorted(dashboard.FILES)


def test_files_are_tracked_so_pbr_packs_them():
    """pbr puts every file git tracks under the package into the sdist
    and the wheel (checked by hand: ``pip wheel .`` lists
    trusted_pools/api/dashboard_files/*); an untracked asset would be left
    out of the wheel while this checkout still works."""
    import pathlib
    import subprocess
    root = pathlib.Path(__file__).resolve().parents[3]
    tracked = subprocess.run(
        ["git", "-C", str(root), "ls-files", "trusted_pools/api/"
         "dashboard_files"], check=True, capture_output=True,
        text=True).stdout.split()
    assert sorted(pathlib.Path(p).name for p in tracked) == sorted(
        dashboard.FILES)
