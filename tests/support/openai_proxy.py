"""A loopback proxy in front of an OpenAI-compatible server (Infinity in the tests) that records
every request's arrival and answers what a test queues instead of forwarding: 429 with a
``Retry-After``, 401, 500 … in OpenAI's error shape, or vectors of another dimension.

Usage::

    with OpenAIProxy(infinity_url) as base_url:
        proxy.fail(429, "Rate limit reached", retry_after="2")  # the next request only
        ...  # then assert on proxy.arrivals (time.time() of each POST /embeddings)
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

import httpx


@dataclass(frozen=True)
class Fault:
    status: int
    message: str
    headers: dict[str, str]
    kind: str


@dataclass
class Arrival:
    at: float  # time.time()
    inputs: int
    answered: int  # the status sent back


@dataclass
class _State:
    faults: list[Fault] = field(default_factory=list)
    #: answer every request with this fault (after the queued ones), until cleared
    always: Fault | None = None
    #: cut the vectors to this many dimensions (a "changed model" behind the same name)
    truncate: int | None = None
    arrivals: list[Arrival] = field(default_factory=list)


class OpenAIProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.state = _State()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._client = httpx.Client(timeout=60)
        self.base_url = ""

    # -- what the tests queue -------------------------------------------------------------------
    def fail(
        self,
        status: int,
        message: str,
        *,
        retry_after: str | None = None,
        times: int = 1,
        kind: str = "server_error",
    ) -> None:
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        with self._lock:
            self.state.faults += [Fault(status, message, headers, kind)] * times

    def fail_always(self, status: int, message: str, *, kind: str = "invalid_request_error") -> None:
        with self._lock:
            self.state.always = Fault(status, message, {}, kind)

    def truncate(self, dims: int | None) -> None:
        with self._lock:
            self.state.truncate = dims

    @property
    def arrivals(self) -> list[Arrival]:
        with self._lock:
            return list(self.state.arrivals)

    # -- serving --------------------------------------------------------------------------------
    def _answer(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
        try:
            payload = json.loads(body)
            inputs = len(payload.get("input") or [])
        except ValueError:
            inputs = 0
        with self._lock:
            fault = self.state.faults.pop(0) if self.state.faults else self.state.always
            truncate = self.state.truncate
            arrival = Arrival(time.time(), inputs, 0)
            self.state.arrivals.append(arrival)
        if fault is not None:
            error = {"error": {"message": fault.message, "type": fault.kind, "param": None, "code": None}}
            arrival.answered = fault.status
            return fault.status, fault.headers, json.dumps(error).encode()
        upstream = self._client.post(
            f"{self.upstream}/embeddings", content=body, headers={"Content-Type": "application/json"}
        )
        arrival.answered = upstream.status_code
        content = upstream.content
        if truncate is not None and upstream.status_code == 200:
            data: dict[str, Any] = upstream.json()
            for row in data["data"]:
                row["embedding"] = row["embedding"][:truncate]
            content = json.dumps(data).encode()
        return upstream.status_code, {}, content

    def __enter__(self) -> str:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if not self.path.rstrip("/").endswith("/embeddings"):
                    status, headers, content = 404, {}, b'{"error": {"message": "not found"}}'
                else:
                    status, headers, content = proxy._answer(body)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(content)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(content)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        return self.base_url

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        self._client.close()
