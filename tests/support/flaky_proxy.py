"""A loopback HTTP/1.1 proxy in front of a real server that loses answers and cuts streams on
purpose, for the client's retry and resume tests (the network failing, not a mock of it).

Each request is forwarded to the upstream server as it came (body, headers, ``Idempotency-Key``
and ``Last-Event-ID`` included) and recorded with its answer. A :class:`Fault` matching a
request changes what the client gets:

* ``drop_answer``: the server runs the request to its end, then the client's connection is
  closed without a byte of the answer (a response lost on the way back);
* ``cut_after_events=N``: a ``text/event-stream`` answer is relayed event by event and the
  connection closed in the middle of the chunked body after the N-th event.
"""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx

HOP_BY_HOP = {"host", "content-length", "transfer-encoding", "connection", "accept-encoding", "keep-alive"}


@dataclass
class Fault:
    method: str
    path_prefix: str
    drop_answer: bool = False
    cut_after_events: int | None = None
    times: int = 1


@dataclass
class Exchange:
    method: str
    target: str
    headers: dict[str, str]
    status: int | None = None
    response_headers: dict[str, str] = field(default_factory=dict)
    response_body: bytes = b""
    faulted: bool = False


class FlakyProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.faults: list[Fault] = []
        self.exchanges: list[Exchange] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                proxy._handle(self.connection, self.rfile)

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def fault(self, method: str, path_prefix: str, **kind: int | bool) -> Fault:
        rule = Fault(method, path_prefix, **kind)  # type: ignore[arg-type]
        with self._lock:
            self.faults.append(rule)
        return rule

    def seen(self, method: str, path_prefix: str) -> list[Exchange]:
        return [e for e in self.exchanges if e.method == method and e.target.startswith(path_prefix)]

    def _take_fault(self, method: str, target: str) -> Fault | None:
        with self._lock:
            for rule in self.faults:
                if rule.times > 0 and rule.method == method and target.startswith(rule.path_prefix):
                    rule.times -= 1
                    return rule
        return None

    def _handle(self, conn: socket.socket, rfile) -> None:  # type: ignore[no-untyped-def]
        line = rfile.readline().decode("latin-1").strip()
        if not line:
            return
        method, target, _ = line.split(" ", 2)
        headers: dict[str, str] = {}
        while (raw := rfile.readline().decode("latin-1")) not in ("\r\n", "\n", ""):
            name, _, value = raw.partition(":")
            headers[name.strip().lower()] = value.strip()
        body = _read_body(rfile, headers)
        exchange = Exchange(method, target, headers)
        with self._lock:
            self.exchanges.append(exchange)
        rule = self._take_fault(method, target)
        exchange.faulted = rule is not None
        forward = {k: v for k, v in headers.items() if k not in HOP_BY_HOP}
        with (
            httpx.Client(timeout=httpx.Timeout(60, read=120)) as client,
            client.stream(method, self.upstream + target, headers=forward, content=body) as answer,
        ):
            exchange.status = answer.status_code
            exchange.response_headers = dict(answer.headers)
            if rule is not None and rule.drop_answer:
                exchange.response_body = answer.read()
                conn.shutdown(socket.SHUT_RDWR)  # the server did the work; its answer is lost
                return
            head = [f"HTTP/1.1 {answer.status_code} {answer.reason_phrase}"]
            head += [f"{k}: {v}" for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP]
            head += ["Transfer-Encoding: chunked", "Connection: close", "", ""]
            conn.sendall("\r\n".join(head).encode("latin-1"))
            cut = rule.cut_after_events if rule is not None else None
            pending, events = b"", 0
            for data in answer.iter_raw():
                exchange.response_body += data
                if cut is None:
                    _chunk(conn, data)
                    continue
                pending += data
                while b"\n\n" in pending:
                    message, pending = pending.split(b"\n\n", 1)
                    _chunk(conn, message + b"\n\n")
                    if message.startswith(b"id:") or b"\nid:" in message:
                        events += 1
                        if events >= cut:
                            conn.shutdown(socket.SHUT_RDWR)  # mid-body: no closing chunk
                            return
            if pending:
                _chunk(conn, pending)
            conn.sendall(b"0\r\n\r\n")

    def start(self) -> FlakyProxy:
        threading.Thread(target=self.server.serve_forever, name="flaky-proxy", daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _chunk(conn: socket.socket, data: bytes) -> None:
    if data:
        conn.sendall(f"{len(data):x}\r\n".encode() + data + b"\r\n")


def _read_body(rfile, headers: dict[str, str]) -> bytes:  # type: ignore[no-untyped-def]
    if "content-length" in headers:
        return rfile.read(int(headers["content-length"]))
    if headers.get("transfer-encoding", "").lower() != "chunked":
        return b""
    out = b""
    while True:
        size = int(rfile.readline().strip().split(b";")[0], 16)
        if size == 0:
            rfile.readline()
            return out
        out += rfile.read(size)
        rfile.readline()


@contextmanager
def flaky_proxy(upstream: str) -> Iterator[FlakyProxy]:
    proxy = FlakyProxy(upstream).start()
    try:
        yield proxy
    finally:
        proxy.stop()
