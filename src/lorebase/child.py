"""What every child process lorebase spawns does first: end with its parent, and step back on the CPU.

Two kinds of children exist: the parse processes (``pipeline/isolated.py``) and the worker process
of ``lorebase serve`` (``assembly.WorkerChild``). Both wait on a pipe whose other end their parent
holds, so neither would notice on its own that the parent was killed (SIGKILL, the OOM killer):
without :func:`end_with_parent` they would run on, holding leases and CPU, with nobody to answer.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
import time

_PR_SET_PDEATHSIG = 1


def end_with_parent(parent: int, *, kill_at_once: bool = False) -> None:
    """End this process once ``parent`` (the process that started it) is gone.

    A thread looks every second. ``kill_at_once`` also asks Linux to SIGKILL this process the
    moment its parent ends (``PR_SET_PDEATHSIG``), for a child that must not go on working for
    that second: a worker process would otherwise finish a job step that a restarted server is
    about to reclaim. The kernel sends it when the parent's *thread* that spawned this process
    ends, so only a child spawned by a thread that lives as long as its parent may ask for it."""
    if kill_at_once and sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent is already gone (it died before the line above)
        os._exit(0)
    threading.Thread(target=_watch, args=(parent,), name="parent-watch", daemon=True).start()


def _watch(parent: int) -> None:
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(0)


def lower_priority(niceness: int) -> None:
    """Raise this process's nice value by ``niceness`` (lower its CPU priority). Threads created
    afterwards inherit it, the model runtimes' thread pools included; nothing happens where it is
    not permitted or not a POSIX system."""
    if niceness > 0:
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, 0, os.getpriority(os.PRIO_PROCESS, 0) + niceness)
