"""A stand-in for an Odoo 17 server, which cannot run here (Odoo is not on PyPI): it answers Odoo's
external JSON-RPC (POST <url>/jsonrpc, "common.authenticate", "object.execute_kw") from a script of
recorded answers per (model, method), in order, and keeps every call it was asked. An unscripted
call fails the test. `served` puts it behind a real local HTTP server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

DATABASE = "prod"
LOGIN = "gateway@example.com"
KEY = "api-key"
UID = 2


class FakeOdoo:
    def __init__(self, answers: dict[tuple[str, str], list[Any]]) -> None:
        self.answers = {key: list(values) for key, values in answers.items()}
        self.calls: list[tuple[str, str, list[Any], dict[str, Any]]] = []
        self.lock = threading.Lock()

    def script(self, answers: dict[tuple[str, str], list[Any]]) -> None:
        """Adds answers after those still queued."""
        with self.lock:
            for key, values in answers.items():
                self.answers.setdefault(key, []).extend(values)

    def answer(self, body: dict[str, Any]) -> dict[str, Any]:
        params = body["params"]
        with self.lock:
            if (params["service"], params["method"]) == ("common", "authenticate"):
                assert params["args"] == [DATABASE, LOGIN, KEY, {}]
                return {"jsonrpc": "2.0", "id": body["id"], "result": UID}
            assert (params["service"], params["method"]) == ("object", "execute_kw")
            database, uid, key, model, method, args, kwargs = params["args"]
            assert (database, uid, key) == (DATABASE, UID, KEY)
            self.calls.append((model, method, args, kwargs))
            queued = self.answers.get((model, method))
            assert queued, f"unscripted Odoo call {model}.{method}{args}"
            result = queued.pop(0)
        if isinstance(result, dict) and "code" in result and "data" in result:
            return {"jsonrpc": "2.0", "id": body["id"], "error": result}
        return {"jsonrpc": "2.0", "id": body["id"], "result": result}

    def handle(self, request: httpx.Request) -> httpx.Response:
        """For httpx.MockTransport: the server is https://odoo.example."""
        assert request.url == "https://odoo.example/jsonrpc"
        return httpx.Response(200, json=self.answer(json.loads(request.content)))

    def methods(self) -> list[tuple[str, str]]:
        return [(model, method) for model, method, _, _ in self.calls]

    def call(self, model: str, method: str) -> tuple[list[Any], dict[str, Any]]:
        """The one call of model.method (fails if there were several)."""
        ((args, kwargs),) = [(a, k) for m, meth, a, k in self.calls if (m, meth) == (model, method)]
        return args, kwargs

    def calls_of(self, model: str, method: str) -> list[tuple[list[Any], dict[str, Any]]]:
        return [(a, k) for m, meth, a, k in self.calls if (m, meth) == (model, method)]

    def left(self) -> list[tuple[str, str]]:
        return [key for key, values in self.answers.items() if values]


@contextmanager
def served(fake: FakeOdoo) -> Iterator[str]:
    """A real HTTP server on a free local port answering as `fake`; yields its base URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            assert self.path == "/jsonrpc"
            try:
                content = json.dumps(fake.answer(json.loads(body))).encode()
            except AssertionError as exc:  # an unscripted call: Odoo's error envelope, and the test sees it
                content = json.dumps(
                    {"jsonrpc": "2.0", "id": None, "error": {"code": 200, "message": f"fake Odoo: {exc}", "data": {}}}
                ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
