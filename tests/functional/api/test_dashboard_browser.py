"""The dashboard in a real browser: Debian's Chromium, headless, driven by
Playwright (its own browser downloads are never used), against
trusted-pools-api serving a real pool over HTTP: swtpm hosts booted from
real event logs with their agents, a conductor on the real RabbitMQ,
SQLite, and the API's whole pipeline behind keystonemiddleware (tokens
from its AuthTokenFixture, see tests/api_fixtures.py). The page gets the
token as a user would pass it and reads the API itself.

A missing Chromium or Playwright fails the test, saying what to install.
Screenshots are kept under the directory the test prints
(``$TP_TEST_ARTEFACTS/dashboard``, by default under the system's temporary
directory, ``trusted-pools-artefacts/dashboard``).
"""

from __future__ import annotations

import base64
import datetime
import os
import pathlib
import socketserver
import tempfile
import threading
from typing import Any, Iterator
from urllib.parse import quote
from wsgiref import simple_server

import pytest

from tests import swtpm_pool as swtpm_pool_mod
from tests.api_fixtures import Client, auth_tokens  # noqa: F401
from tests.api_fixtures import pool_with_api
from tests.pool_harness import ek_sha256, honest_tampered_log
from trusted_pools.db import api as db_api

pytestmark = [pytest.mark.swtpm, pytest.mark.rabbitmq, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
TIMEOUT_MS = 20000
#: Verdicts put in the first host's past: more than the page's plot takes
#: (200), so its history pages.
HISTORY_PAST = 230


def _browser_parts() -> Any:
    """Playwright's sync API, or a failure naming what is missing."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail("Debian's chromium is missing (%s): run tools/"
                    "bootstrap.sh or apt-get install chromium" % CHROMIUM)
    try:
        from playwright import sync_api
    except ImportError:
        pytest.fail("playwright (PyPI) is missing: pip install -r "
                    "test-requirements.txt (it drives the system "
                    "Chromium; no browser download is needed)")
    return sync_api


class _QuietHandler(simple_server.WSGIRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


class _ThreadingServer(socketserver.ThreadingMixIn,
                       simple_server.WSGIServer):
    daemon_threads = True


def serve(application: Any) -> tuple[str, Any]:
    """trusted-pools-api's pipeline on a real HTTP port (127.0.0.1)."""
    server = simple_server.make_server(
        "127.0.0.1", 0, application, server_class=_ThreadingServer,
        handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return "http://127.0.0.1:%d" % server.server_address[1], server


@pytest.fixture
def artefacts() -> pathlib.Path:
    # Not pytest's tmp_path: pytest removes old ones while other runs go on.
    root = pathlib.Path(os.environ.get("TP_TEST_ARTEFACTS")
                        or pathlib.Path(tempfile.gettempdir())
                        / "trusted-pools-artefacts") / "dashboard"
    root.mkdir(parents=True, exist_ok=True)
    print("dashboard screenshots in %s" % root)
    return root


@pytest.fixture
def served_pool(tmp_path, rabbit_conf, swtpm_pool, swtpm_ca,
                auth_tokens) -> Iterator:  # noqa: F811
    """Three hosts (the third booted an unapproved kernel), attested under
    a golden policy captured from the first, the API on HTTP."""
    sync_api = _browser_parts()
    pool, application = pool_with_api(tmp_path, rabbit_conf, swtpm_pool,
                                      swtpm_ca, 3, tamper=(2,))
    url, server = serve(application)
    try:
        api = Client(application)
        for host in pool.hosts:
            assert api.post("/v1/hosts", {
                "name": host.name, "ek_sha256": ek_sha256(host.tpm)}
                ).status_code == 201
        # A long past for the first host (older than anything the
        # conductor will judge): its history takes more than one page.
        first = pool.db.get_host_by_name(pool.hosts[0].name).id
        start = datetime.datetime.now(datetime.timezone.utc) - \
            datetime.timedelta(hours=2)
        pool.db.add_verdicts([db_api.NewVerdict(
            host_id=first, status="trusted" if i % 50 else "unknown",
            level=3 if i % 50 else 0, issued_at=start + datetime.timedelta(
                seconds=10 * i), expires_at=start + datetime.timedelta(
                seconds=10 * i + 30)) for i in range(HISTORY_PAST)])
        boot = api.post("/v1/hosts/%s/capture" % pool.hosts[0].name
                        ).json["policies"]["measured_boot"]
        assert api.post("/v1/policies", {
            "name": "golden", "kind": "measured_boot", "body": boot}
            ).status_code == 201
        assert api.put("/v1/groups/default/policies/golden",
                       {"version": None}).status_code == 200
        for host in pool.hosts:
            assert api.post("/v1/hosts/%s/attest" % host.name
                            ).status_code == 200
        pool.wait_for(lambda latest: [latest[h.name].status
                                      for h in pool.hosts]
                      == ["trusted", "trusted", "untrusted"])
        # A vTPM key: released to the first host, refused to the
        # tampered one (both recorded); what placement-sync reports it
        # did to the tampered host.
        secret = api.post("/v1/secrets", {
            "payload": base64.b64encode(b"k" * 32).decode(),
            "secret_type": "symmetric"}, persona="member"
            ).json["secret"]["id"]
        assert api.get("/v1/secrets/%s?host=%s" % (
            secret, pool.hosts[0].name), persona="member").status_code \
            == 200
        assert api.get("/v1/secrets/%s?host=%s" % (
            secret, pool.hosts[2].name), persona="member").status_code \
            in (403, 409)
        assert api.post("/v1/distrust-actions", {"actions": [{
            "host": pool.hosts[2].name, "action": "disable_compute",
            "outcome": "done", "detail": "nova-compute disabled",
            "items": [["svc-7", "disabled"]], "status": "untrusted"}]},
            version="trusted-pools 1.4").status_code == 201
        yield sync_api, pool, api, url
    finally:
        server.shutdown()
        server.server_close()
        pool.close()


def reboot_into_unapproved_kernel(pool: Any, host: Any) -> None:
    """The host reboots into a kernel the policy does not allow, and its
    firmware logs it honestly."""
    source = host.source_log.read_bytes()
    event = swtpm_pool_mod.kernel_event_index(source)
    host.tampered_event = event
    host.event_log_path.write_bytes(honest_tampered_log(source, event))
    pool.reboot(host)


def test_dashboard_shows_the_pool_live_in_chromium(served_pool, artefacts):
    sync_api, pool, api, url = served_pool
    good, turning, tampered = pool.hosts
    expect = sync_api.expect
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM,
                                             headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(TIMEOUT_MS)
            console_errors: list[str] = []
            page.on("console", lambda m: console_errors.append(m.text)
                    if m.type == "error" else None)
            page.goto(url + "/dashboard/#token=reader")

            # The pool at a glance: the tampered host untrusted, with the
            # reason its verdict gives, problems listed first.
            row = page.locator('tr[data-host="%s"]' % tampered.name)
            expect(row).to_have_attribute("data-status", "untrusted")
            expect(row).to_contain_text("not allowed by policy 'golden'")
            expect(page.locator('[data-count="untrusted"] b')).to_have_text(
                "1")
            expect(page.locator('[data-count="trusted"] b')).to_have_text(
                "2")
            # Problems first: stale, unknown, untrusted, no verdict, trusted.
            shown = page.eval_on_selector_all(
                "tbody tr[data-host]", "rows => rows.map("
                "r => r.dataset.status)")
            rank = ["stale", "unknown", "untrusted", "none", "trusted"]
            assert len(shown) == 3 and shown == sorted(shown, key=rank.index)
            # The token left the address bar for the tab's storage.
            assert "token" not in page.url
            page.screenshot(path=str(artefacts / "pool.png"), full_page=True)

            # A host turning untrusted appears without a reload: the
            # marker set in this document survives, the row changes.
            page.evaluate("window.__sameDocument = 'yes'")
            reboot_into_unapproved_kernel(pool, turning)
            assert api.post("/v1/hosts/%s/attest" % turning.name
                            ).json["verdict"]["status"] == "untrusted"
            turned = page.locator('tr[data-host="%s"]' % turning.name)
            expect(turned).to_have_attribute("data-status", "untrusted")
            expect(turned).to_contain_text("not allowed by policy 'golden'")
            expect(page.locator('[data-count="untrusted"] b')).to_have_text(
                "2")
            assert page.evaluate("window.__sameDocument") == "yes"

            # The host's page: verdict, level, reasons and its history
            # plot (one point per verdict, the last ones untrusted).
            turned.locator("a").click()
            expect(page.locator("#host-status")).to_have_text("untrusted")
            expect(page.locator("#host-reasons")).to_contain_text(
                "not allowed by policy 'golden'")
            points = page.locator("svg.history circle.point")
            expect(points.first).to_be_visible()
            assert points.count() >= 2
            assert page.locator(
                "svg.history circle.status-trusted").count() >= 1
            assert page.locator(
                "svg.history circle.status-untrusted").count() >= 1
            # vTPMs: what the API answers for this host, never made up:
            # "not available" when it has no such path, its error when it
            # refuses, its data otherwise.
            vtpms = page.locator("#vtpms")
            expect(vtpms).to_be_visible()
            answer = api.get("/v1/hosts/%s/vtpms" % turning.name,
                             persona="reader",
                             headers={"OpenStack-API-Version":
                                      "trusted-pools latest"})
            unavailable = vtpms.locator('[data-unavailable="true"]')
            if answer.status_code == 404 and answer.json["errors"][0][
                    "code"] == "trusted-pools.resource.not_found":
                expect(unavailable).to_have_count(1)
            elif answer.status_code >= 400:
                expect(vtpms.locator(".error")).to_contain_text(
                    str(answer.status_code))
            else:
                expect(unavailable).to_have_count(0)
                expect(vtpms.locator(".error")).to_have_count(0)
            page.screenshot(path=str(artefacts / "host.png"),
                            full_page=True)

            # Its key releases and refusals, and what was done to it:
            # nothing yet (the API's answer, not a made-up table).
            expect(page.locator("#host-key-releases")).to_contain_text(
                "None.")
            expect(page.locator("#host-distrust-actions")).to_contain_text(
                "None reported.")

            # Key releases and refusals: both answers, newest first,
            # with the refusal's reason.
            page.locator('nav a[href="#/key-releases"]').click()
            refused_row = page.locator('#key-releases tr[data-outcome='
                                       '"refused"]')
            expect(refused_row).to_have_attribute("data-host",
                                                  tampered.name)
            expect(refused_row).to_contain_text("not_trusted")
            expect(page.locator('#key-releases tr[data-outcome='
                                '"released"]')).to_have_attribute(
                "data-host", good.name)
            expect(page.locator('[data-count="refused"] b')).to_have_text(
                "1")
            page.screenshot(path=str(artefacts / "key-releases.png"),
                            full_page=True)

            # Distrust actions as placement-sync reported them.
            page.locator('nav a[href="#/distrust"]').click()
            action = page.locator("#distrust-actions tr[data-host]")
            expect(action).to_have_count(1)
            expect(action).to_contain_text("disable_compute")
            expect(action).to_contain_text("svc-7: disabled")

            # Attack: a compromised compute host holds Nova's service
            # credentials. It stores a secret whose owner is markup and
            # asks for it in a made-up host name that is markup too: the
            # refusal is recorded with both, and the page must show them
            # as text, never run or render them.
            evil_owner = '<img src=x onerror="window.__xss=1">'
            made_up = '"><svg><script>window.__xss=2;<b>x'
            evil = api.post("/v1/secrets", {
                "payload": base64.b64encode(b"e" * 32).decode(),
                "secret_type": "symmetric", "owner": evil_owner},
                persona="service").json["secret"]["id"]
            assert api.get("/v1/secrets/%s?host=%s" % (
                evil, quote(made_up, safe="")), persona="service"
                ).status_code in (403, 409)
            page.locator('nav a[href="#/key-releases"]').click()
            forged = page.locator("#key-releases tr[data-host]").filter(
                has_text=evil_owner)
            expect(forged).to_have_count(1)
            expect(forged).to_contain_text(made_up)
            expect(forged).to_contain_text("not_registered")
            assert page.locator("#view img, #view script, #view svg b"
                                ).count() == 0
            assert page.evaluate("window.__xss") is None

            # A long history pages: the plot shows the newest 200
            # verdicts, "Older" the rest, "Newest" comes back.
            page.goto(url + "/dashboard/#/hosts/" + good.name)
            points = page.locator("svg.history circle.point")
            expect(points).to_have_count(200)
            page.locator('[data-page="older"]').click()
            expect(page.locator('[data-page="newest"]')).to_be_visible()
            older = page.locator("svg.history circle.point")
            expect(older.first).to_be_visible()
            # The rest of its past (the cycle keeps adding new verdicts
            # on top, so the second page holds at least the synthetic
            # ones beyond 200, at most everything beyond 200).
            history_total = len(pool.db.verdict_history(
                pool.db.get_host_by_name(good.name).id, limit=1000))
            assert HISTORY_PAST - 200 <= older.count() <= \
                history_total - 200, (older.count(), history_total)
            assert page.locator("svg.history circle.status-unknown"
                                ).count() >= 1
            expect(page.locator('[data-page="older"]')).to_have_count(0)
            page.screenshot(path=str(artefacts / "host-older.png"),
                            full_page=True)
            page.locator('[data-page="newest"]').click()
            expect(points).to_have_count(200)

            # The tampered host's page: the key refused to it and the
            # action reported on it.
            page.goto(url + "/dashboard/#/hosts/" + tampered.name)
            expect(page.locator("#host-key-releases tr[data-outcome="
                                '"refused"]')).to_have_count(1)
            expect(page.locator("#host-distrust-actions")).to_contain_text(
                "disable_compute")

            page.locator('nav a[href="#/policies"]').click()
            expect(page.locator("#view table").first).to_contain_text(
                "golden")
            expect(page.locator('tr[data-group="default"]')).to_contain_text(
                "golden")
            # No script error; the only failed load is a section's 404
            # (an API this deployment does not have, shown as such).
            assert [m for m in console_errors if "status of 404" not in m
                    ] == [], console_errors

            # A tenant's member (no system reader role): the API refuses,
            # and the page shows the refusal.
            other = browser.new_page()
            other.set_default_timeout(TIMEOUT_MS)
            other.goto(url + "/dashboard/#token=member")
            expect(other.locator("#error")).to_contain_text("403")
            expect(other.locator("#forbidden")).to_be_visible()
            assert other.locator("tbody tr").count() == 0
            other.screenshot(path=str(artefacts / "forbidden.png"))
        finally:
            browser.close()
    for name in ("pool.png", "host.png", "forbidden.png",
                 "key-releases.png", "host-older.png"):
        assert (artefacts / name).stat().st_size > 1000
    print("screenshots: %s" % ", ".join(
        str(artefacts / n) for n in ("pool.png", "host.png",
                                     "forbidden.png")))
