"""Fault injection for the fault suite (``tests/faults``): inert unless ``LOREBASE_FAULTS`` is set.

Crash-safety claims are only worth what the crashes they survived. The suite kills real worker
processes at chosen points of the code (after a vector write and before the job is marked done,
for example), which a signal sent from outside cannot aim at. A *point* is a name in the code;
``LOREBASE_FAULTS`` arms some of them for one process::

    LOREBASE_FAULTS="embed.after_batch=kill@2,heartbeat=block,parse.poison=MARKER"

* ``NAME=kill`` SIGKILLs the process the first time ``point(NAME)`` runs; ``kill@N`` on the
  N-th time (1-based), so a crash can land in the middle of a run; with
  ``LOREBASE_FAULTS_KILL=group``, its whole process group (a Celery worker and its pool);
* ``NAME=sleep:SECONDS`` makes every pass through the point that slow (a slow parser, a slow
  disk), so that a test can act while a job is surely in flight;
* ``heartbeat=block``: the process stops renewing leases (alive but cut off);
* ``parse.poison=MARKER``: a parser process given a document that contains ``MARKER`` dies, as a
  native parser library crashing on a hostile file would.

Reading an unset variable is the whole cost in production. The variable is read when a point
runs, so spawned children (the parse pool) inherit it.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter

ENV = "LOREBASE_FAULTS"
#: ``group``: a ``kill`` ends the whole process group (the suite starts each worker in a group of
#: its own), so a Celery worker dies with its pool processes, as when its host dies
KILL_SCOPE_ENV = "LOREBASE_FAULTS_KILL"
_hits: Counter[str] = Counter()
_lock = threading.Lock()


def armed() -> dict[str, str]:
    """The armed points and their actions (empty when the variable is unset)."""
    raw = os.environ.get(ENV, "")
    if not raw:
        return {}
    out = {}
    for item in raw.split(","):
        name, _, action = item.strip().partition("=")
        if name:
            out[name] = action
    return out


def point(name: str) -> None:
    """A named place where an armed ``kill`` fault ends the process (see the module doc)."""
    action = armed().get(name)
    if action is None:
        return
    if action.startswith("sleep:"):
        time.sleep(float(action.partition(":")[2]))
        return
    if not action.startswith("kill"):
        return
    _, _, nth = action.partition("@")
    with _lock:
        _hits[name] += 1
        hit = _hits[name]
    if hit == (int(nth) if nth else 1):
        if os.environ.get(KILL_SCOPE_ENV) == "group":
            os.killpg(os.getpgid(0), signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)


def blocked(name: str) -> bool:
    """True when ``name`` is armed with ``block`` (the caller skips what it would do)."""
    return armed().get(name) == "block"


def poison(data: bytes) -> None:
    """Die like a crashing native parser when ``data`` carries the armed poison marker."""
    marker = armed().get("parse.poison")
    if marker and marker.encode() in data:
        os.kill(os.getpid(), signal.SIGKILL)
