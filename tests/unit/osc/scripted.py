"""A scripted trusted-pools-api on 127.0.0.1 for the plugin's unit tests:
it records every request and answers with what the test sets."""

from __future__ import annotations

import http.server
import json
import threading
import urllib.parse
from typing import Any, Callable, Iterator

import pytest

__all__ = ["Recorded", "Reply", "ScriptedAPI", "api", "json_reply"]

Reply = tuple[int, dict[str, str], bytes]


class Recorded:
    def __init__(self, method: str, path: str, headers: dict[str, str],
                 body: bytes) -> None:
        self.method = method
        split = urllib.parse.urlsplit(path)
        self.path = split.path
        self.query = dict(urllib.parse.parse_qsl(split.query))
        self.headers = headers
        self.body = json.loads(body) if body else None


class ScriptedAPI:
    """An HTTP server whose answers come from ``self.answer(request)``."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.answer: Callable[[Recorded], Reply] = lambda r: (
            200, {}, b"{}")
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                request = Recorded(self.command, self.path,
                                   dict(self.headers.items()),
                                   self.rfile.read(length))
                api.requests.append(request)
                status, headers, body = api.answer(request)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                                      Handler)
        self.url = "http://127.0.0.1:%d/" % self.server.server_port

    def paths(self) -> list[str]:
        return [r.path for r in self.requests]


def json_reply(status: int, body: Any,
               headers: dict[str, str] | None = None) -> Reply:
    return (status, {"Content-Type": "application/json", **(headers or {})},
            json.dumps(body).encode())


@pytest.fixture
def api() -> Iterator[ScriptedAPI]:
    scripted = ScriptedAPI()
    thread = threading.Thread(target=scripted.server.serve_forever,
                              daemon=True)
    thread.start()
    try:
        yield scripted
    finally:
        scripted.server.shutdown()
        scripted.server.server_close()


