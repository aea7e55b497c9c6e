"""Worker processes forked from a warm interpreter, so a test does not pay for their imports.

A ``lorebase worker`` process spends its first seconds importing: lorebase, SQLAlchemy and
Celery (~2.5 s of CPU), then torch, transformers and sentence-transformers when it embeds its
first batch (~8 s). The fault suite, the crash tests and the scaled-mode suites start a few
hundred such processes, and on two cores those imports were a third of their time.

The zygote is one process per test session that imports all of that once, starts no thread,
and then forks on request. Each child makes itself a session leader (a process group of its
own, as ``start_new_session`` does), takes the environment and the stderr file of the request
and runs the real command, ``lorebase.cli.main``'s Typer app, with the given arguments: the
same code as ``python -m lorebase.cli.main worker …``, in a real process of its own that the
test kills, signals and waits for like any other. Only the imports are shared, copy-on-write;
nothing has run yet when the child is forked (no settings read, no connection, no model, no
Python thread; the zygote refuses to serve if an import started one).

``spawn(args, env, ForkedProcess)`` returns a ``ForkedProcess`` with the part of ``subprocess.Popen`` the
tests use (``pid``, ``poll``, ``wait``, ``returncode``, ``send_signal``, ``kill``,
``terminate``, ``stderr``). The zygote reaps its children and reports their exit codes, in
Popen's convention (negative: killed by that signal). ``LOREBASE_TEST_ZYGOTE=0`` turns it off;
``available()`` is False then, or when the zygote could not start, and callers use Popen.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any, TypeVar

ENABLED = os.environ.get("LOREBASE_TEST_ZYGOTE", "1") != "0"
#: what a worker process imports on its way (the first embedding batch included)
PRELOAD = (
    "lorebase.cli.main",
    "lorebase.assembly",
    "lorebase.jobs.celery_executor",
    "lorebase.jobs.rq_executor",
    "lorebase.adapters.stores.pgvector",
    "psycopg",
    "sentence_transformers",
)


# -- the zygote process ---------------------------------------------------------------------------
def _python_threads() -> int:
    """Python threads of this process. (numpy's and scipy's OpenBLAS start a native pool at
    import; OpenBLAS stops and restarts it around a fork by itself.)"""
    return threading.active_count()


def _run_child(request: dict[str, Any], own_fds: tuple[int, ...]) -> None:
    """In the forked child: become the requested command; never returns."""
    code = 1
    try:
        os.setsid()
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in own_fds:  # the zygote's: its event stream and wake-up pipe
            os.close(fd)
        devnull = os.open(os.devnull, os.O_RDWR)
        err = os.open(request["stderr"], os.O_WRONLY | os.O_APPEND)
        os.dup2(devnull, 0)
        os.dup2(err if request.get("stdout_too") else devnull, 1)
        os.dup2(err, 2)
        os.close(devnull)
        os.close(err)
        os.environ.clear()
        os.environ.update(request["env"])
        from lorebase.cli.main import app
        from lorebase.settings import get_settings

        get_settings.cache_clear()
        sys.argv = ["lorebase", *request["args"]]
        try:
            app(args=request["args"], prog_name="lorebase")
            code = 0
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def serve() -> None:
    """The zygote's loop: one JSON request per line on stdin, one JSON event per line on stdout."""
    import importlib

    # the event stream is a descriptor of its own: whatever an import prints goes to stderr
    events = os.dup(1)
    os.dup2(2, 1)
    out = os.fdopen(events, "w")
    for name in PRELOAD:
        importlib.import_module(name)
    if _python_threads() != 1:  # forking with other threads running is not safe: callers use Popen
        why = f"{_python_threads()} Python threads after the imports"
        out.write(json.dumps({"ready": False, "why": why}) + "\n")
        out.flush()
        return
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    out.write(json.dumps({"ready": True}) + "\n")
    out.flush()
    stdin = sys.stdin.buffer
    pending = b""
    while True:
        try:
            readable, _, _ = select.select([stdin.fileno(), wake_r], [], [])
        except InterruptedError:
            continue
        if wake_r in readable:
            os.read(wake_r, 4096)
        while True:  # reap every child that ended
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            out.write(json.dumps({"exited": pid, "code": os.waitstatus_to_exitcode(status)}) + "\n")
            out.flush()
        if stdin.fileno() in readable:
            chunk = os.read(stdin.fileno(), 65536)
            if not chunk:
                return  # the test session ended
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                request = json.loads(line)
                pid = os.fork()
                if pid == 0:
                    _run_child(request, (wake_r, wake_w, events))
                out.write(json.dumps({"started": request["id"], "pid": pid}) + "\n")
                out.flush()


# -- the test side --------------------------------------------------------------------------------
class ForkedProcess:
    """A process the zygote forked: the part of Popen the tests use."""

    def __init__(self, zygote: Zygote, pid: int, stderr_path: str, *, keep_log: bool = False) -> None:
        self._zygote = zygote
        self.pid = pid
        self.returncode: int | None = None
        self.stderr_path = stderr_path
        self._keep_log = keep_log
        self.stderr: IO[bytes] | None = open(stderr_path, "rb")  # noqa: SIM115  # read as a pipe would be

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self._zygote.exit_code(self.pid)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        code = self._zygote.wait_exit(self.pid, timeout)
        if code is None:
            raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout or 0)
        self.returncode = code
        return code

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def __del__(self) -> None:
        if self.stderr is not None:
            self.stderr.close()
        if not self._keep_log:
            with contextlib.suppress(OSError):
                os.unlink(self.stderr_path)


P = TypeVar("P", bound=ForkedProcess)


class Zygote:
    def __init__(self) -> None:
        here = Path(__file__).resolve()
        self._proc = subprocess.Popen(
            [sys.executable, str(here)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": os.pathsep.join([str(here.parent.parent), *sys.path])},
        )
        assert self._proc.stdout is not None and self._proc.stdin is not None
        first = json.loads(self._proc.stdout.readline() or b'{"ready": false, "why": "it exited"}')
        self.ready = bool(first.get("ready"))
        self.why = first.get("why")
        self._lock = threading.Condition()
        self._exits: dict[int, int] = {}
        self._started: dict[int, int] = {}
        self._next = 0
        if self.ready:
            threading.Thread(target=self._read_events, name="zygote-events", daemon=True).start()

    def _read_events(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            event = json.loads(line)
            with self._lock:
                if "started" in event:
                    self._started[event["started"]] = event["pid"]
                else:
                    self._exits[event["exited"]] = event["code"]
                self._lock.notify_all()
        with self._lock:
            self.ready = False
            self._lock.notify_all()

    def spawn(self, args: list[str], env: dict[str, str], cls: type[P], *, log: Path | None = None) -> P:
        """Fork ``lorebase ARGS`` with ``env``. Its stderr goes to a temporary file, or stdout and
        stderr both to ``log`` when given (which the caller keeps)."""
        if log is None:
            fd, stderr_path = tempfile.mkstemp(prefix="lorebase-worker-", suffix=".log")
            os.close(fd)
        else:
            stderr_path = str(log)
            Path(stderr_path).touch()
        with self._lock:
            request_id, self._next = self._next, self._next + 1
        request = {
            "id": request_id,
            "args": args,
            "env": env,
            "stderr": stderr_path,
            "stdout_too": log is not None,
        }
        assert self._proc.stdin is not None
        with self._lock:
            self._proc.stdin.write(json.dumps(request).encode() + b"\n")
            self._proc.stdin.flush()
            if not self._lock.wait_for(lambda: request_id in self._started or not self.ready, 30):
                raise RuntimeError("the zygote did not fork the worker in 30 s")
            if request_id not in self._started:
                raise RuntimeError("the zygote exited")
            pid = self._started.pop(request_id)
        return cls(self, pid, stderr_path, keep_log=log is not None)

    def exit_code(self, pid: int) -> int | None:
        with self._lock:
            return self._exits.get(pid)

    def wait_exit(self, pid: int, timeout: float | None) -> int | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while pid not in self._exits:
                left = None if deadline is None else deadline - time.monotonic()
                if (left is not None and left <= 0) or not self.ready:
                    return self._exits.get(pid)
                self._lock.wait(left)
            return self._exits[pid]

    def close(self) -> None:
        if self._proc.poll() is None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()


_zygote: Zygote | None = None
_zygote_lock = threading.Lock()


def get() -> Zygote | None:
    """The session's zygote, started on first use; None when it is off or could not start."""
    global _zygote
    if not ENABLED:
        return None
    with _zygote_lock:
        if _zygote is None:
            _zygote = Zygote()
            if not _zygote.ready:
                print(f"zygote unavailable ({_zygote.why}); workers start as new processes", file=sys.stderr)
        return _zygote if _zygote.ready else None


def close() -> None:
    global _zygote
    with _zygote_lock:
        if _zygote is not None:
            _zygote.close()
            _zygote = None


if __name__ == "__main__":
    serve()
