"""A real S3-compatible HTTP server for the tests: moto's standalone server (``moto_server``,
from ``moto[server]``) as a subprocess on a free loopback port, behind a TCP gate the outage
tests cut and restore.

No ``mock_aws``, nothing patched: boto3 talks HTTP to a server process, as it would to MinIO or
AWS. moto keeps its data in the process's memory, so an outage is simulated by the gate
(:class:`TcpGate`, a plain TCP relay on a port of its own): ``cut()`` drops every open
connection and refuses new ones, ``restore()`` lets them through again, to the same server
with the same data. :meth:`MotoServer.kill` / ``restart`` stop and start the process itself
(on the same port; its data is gone).

One server serves the session (``shared_server()``, stopped by ``stop_shared_server()`` at the
end); each test names a bucket or a key prefix of its own.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from support.cluster import free_port

#: dummy credentials: moto accepts any, and boto3 needs some
ACCESS_KEY = "lorebase-test"
SECRET_KEY = "lorebase-test-secret"
REGION = "us-east-1"


class MotoServer:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> MotoServer:
        exe = Path(sys.executable).with_name("moto_server")
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "moto.server"]
        self.proc = subprocess.Popen(
            [*cmd, "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, f"moto_server exited with {self.proc.returncode}"
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/moto-api/data.json", timeout=1).status_code == 200:
                    return self
            assert time.monotonic() < deadline, "moto_server did not answer"
            time.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def restart(self) -> MotoServer:
        """Kill and start again on the same port (moto's data lives in memory: it is gone)."""
        self.kill()
        return self.start()


class TcpGate:
    """A TCP relay ``127.0.0.1:<port>`` → ``upstream_port`` that can be cut and restored."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.open = True
        #: cut the gate once this many bytes went upstream (``cut_after``)
        self._budget: int | None = None
        self._reopen = False
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        threading.Thread(target=self._accept, daemon=True, name="tcp-gate").start()

    def cut(self) -> None:
        """Every open connection is closed mid-stream; new ones are closed at once (the client
        sees resets and closed connections until ``restore``)."""
        with self._lock:
            self.open = False
            conns, self._conns = self._conns, set()
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()

    def restore(self) -> None:
        with self._lock:
            self.open = True
            self._budget = None

    def cut_after(self, upstream_bytes: int, *, reopen: bool = False) -> None:
        """Cut the gate once ``upstream_bytes`` more bytes went to the server (in the middle
        of an upload, deterministically); with ``reopen``, only the connections open then are
        dropped (a blip: the client's next connections pass)."""
        with self._lock:
            self._budget = upstream_bytes
            self._reopen = reopen

    def close(self) -> None:
        self.cut()
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                passing = self.open
            if not passing:
                with contextlib.suppress(OSError):
                    client.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                    )
                client.close()  # a reset: the endpoint is down
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._conns.update((client, upstream))
            for a, b, up in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pipe, args=(a, b, up), daemon=True).start()

    def _spent(self, n: int) -> bool:
        """Count ``n`` bytes against the budget; True when it ran out (the gate is then cut)."""
        with self._lock:
            if self._budget is None:
                return False
            self._budget -= n
            out = self._budget <= 0
            reopen = self._reopen
        if out:
            self.cut()
            if reopen:
                self.restore()
        return out

    def _pipe(self, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        try:
            while data := src.recv(65536):
                if upstream and self._spent(len(data)):
                    return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
            with self._lock:
                self._conns.discard(src)
                self._conns.discard(dst)


def client(endpoint_url: str) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )


def create_bucket(endpoint_url: str, name: str | None = None) -> str:
    name = name or f"lbt-{uuid.uuid4().hex[:12]}"
    client(endpoint_url).create_bucket(Bucket=name)
    return name


def s3_settings(endpoint_url: str, bucket: str, prefix: str = "") -> dict[str, Any]:
    """The ``s3`` settings of a store on that server."""
    return {
        "endpoint_url": endpoint_url,
        "bucket": bucket,
        "region": REGION,
        "access_key_id": ACCESS_KEY,
        "secret_access_key": SECRET_KEY,
        "prefix": prefix,
    }


def s3_env(endpoint_url: str, bucket: str, prefix: str = "") -> dict[str, str]:
    """The same as ``LOREBASE_*`` variables, for worker and server processes."""
    env = {"LOREBASE_BLOB_STORE": "s3"}
    env.update(
        {f"LOREBASE_S3__{k.upper()}": str(v) for k, v in s3_settings(endpoint_url, bucket, prefix).items()}
    )
    return env


_shared: MotoServer | None = None
_shared_bucket: str | None = None
_shared_lock = threading.Lock()


def shared_server() -> tuple[str, str]:
    """(endpoint URL, bucket) of the session's server, started on first use."""
    global _shared, _shared_bucket
    with _shared_lock:
        if _shared is None:
            os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
            _shared = MotoServer().start()
            _shared_bucket = create_bucket(_shared.url, "lorebase-tests")
        assert _shared_bucket is not None
        return _shared.url, _shared_bucket


def stop_shared_server() -> None:
    global _shared, _shared_bucket
    with _shared_lock:
        if _shared is not None:
            _shared.kill()
        _shared, _shared_bucket = None, None
