"""A per-drive time and memory budget, enforced from outside the decoder.

A decoder stuck in a loop inside FFmpeg never returns to Python, and one that
allocates without bound takes its worker (and the node's other tasks) down with it:
nothing running in the same process can stop either. So a budgeted stage decodes its
drives in a child process (:class:`Sandbox`) it starts once and keeps for the next
drives, so imports and setup are paid once per worker, not per drive. The parent
waits for each answer with a deadline and reads the child's resident memory every
few milliseconds; past either budget it SIGKILLs the child, the drive is recorded
failed with the budget it exceeded, and the next drive gets a fresh child.

A child outlives its stage: when the stage is dropped (a job's end) the child goes back
to its process, and the process's next stage takes it and builds itself there anew
(:func:`_take`). A worker or a long-lived process that runs job after job (a test
session ran ~300) pays the child's ~1 s of imports once, not once a job. Only a child
started with the same interpreter, working folder and environment is taken (a job may
set a fault point or credentials in ``os.environ``), and a child left idle for
:data:`_IDLE_EXIT_S` ends itself, so an idle process does not hold a decoder's memory.

Memory is watched as resident set size (Linux ``/proc``; elsewhere only the time
budget holds), not capped with ``RLIMIT_AS``: address space is mostly reservations
(a malloc arena per thread, a stack per FFmpeg frame thread), which grow with the
machine's cores, not with what a drive holds, so a cap on it fails good drives on
big nodes. A child that dies on its own (a segfault in a native decoder) is started
again for the same drive ``retries`` times, as Ray retries a task whose worker died.

The child writes its data files and media to the lake itself and answers with the
drive's record (its add-actions), pickled over a socket pair; ``python -m
ingest.budget FD`` is its entry point.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import weakref
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

__all__ = ["Budget", "BudgetExceeded", "ItemFailed", "Sandbox", "end_idle"]

log = logging.getLogger(__name__)

_POLL_S = 0.02  # how often the parent reads the child's memory
_START_TIMEOUT_S = 300.0  # imports and setup of a child on a loaded node; not part of a drive's budget
_IDLE_EXIT_S = 120.0  # a child waiting this long for work ends itself
_IDLE_MARGIN_S = 10.0  # a parent never hands work to a child this close to ending itself
_IDLE_MAX = 4  # children a process keeps for its next stages (more: ended)
_GIB = 1 << 30


@dataclass(frozen=True)
class Budget:
    """What one drive may take: ``time_s`` plus ``time_per_gib_s`` for each GiB of its raw
    files (a long drive of many cameras needs longer than a short one), and at most
    ``memory_bytes`` resident in the process decoding it."""

    time_s: float
    time_per_gib_s: float
    memory_bytes: int

    def seconds_for(self, nbytes: int) -> float:
        return self.time_s + self.time_per_gib_s * nbytes / _GIB

    @staticmethod
    def describe_bytes(n: int) -> str:
        return f"{n / _GIB:g} GiB" if n >= _GIB else f"{n / (1 << 20):g} MiB"


class ItemFailed(Exception):
    """The item has no result: the message is its failure reason."""


class BudgetExceeded(ItemFailed):
    """The child was stopped past a budget, or died under the item on every try."""


def _rss_bytes(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()


class _Child:
    """A decoder process, our end of its socket, what it was started with (:func:`_spawn_key`)
    and whether an answer is owed (a child is never handed on while it owes one)."""

    def __init__(self, proc: subprocess.Popen[bytes], conn: Connection, key: tuple[Any, ...]):
        self.proc, self.conn, self.key = proc, conn, key
        self.busy = False
        self.idle_since = time.monotonic()

    def alive(self) -> bool:
        return self.proc.poll() is None and time.monotonic() - self.idle_since < _IDLE_EXIT_S - _IDLE_MARGIN_S


_idle: list[_Child] = []  # children no stage holds, newest last
_idle_lock = threading.Lock()


def _spawn_key() -> tuple[Any, ...]:
    """What a child inherits that a stage may depend on: interpreter, working folder and
    environment (pytest's ``PYTEST_CURRENT_TEST``, renamed every test phase, left out)."""
    env = tuple(sorted((k, v) for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"))
    return sys.executable, os.getcwd(), os.pathsep.join(p for p in sys.path if p), env


def _take(key: tuple[Any, ...]) -> _Child | None:
    """An idle child started like a new one would be, or None (ending those that ended
    themselves or soon will)."""
    with _idle_lock:
        stale = [c for c in _idle if not c.alive()]
        _idle[:] = [c for c in _idle if c not in stale]
        found = next((c for c in reversed(_idle) if c.key == key), None)
        if found is not None:
            _idle.remove(found)
    for child in stale:
        _close(child.proc, child.conn)
    return found


def _spawn(key: tuple[Any, ...]) -> _Child:
    ours, theirs = socket.socketpair()
    env = dict(os.environ)
    # The child imports what this process imports (a Ray worker's shipped code included).
    env["PYTHONPATH"] = key[2]
    proc = subprocess.Popen(
        [sys.executable, "-m", "ingest.budget", str(theirs.fileno())],
        pass_fds=(theirs.fileno(),),
        env=env,
        stdin=subprocess.DEVNULL,
    )
    theirs.close()
    return _Child(proc, Connection(ours.detach()), key)


def _release(child: _Child) -> None:
    """A stage let ``child`` go: kept for the process's next stage when it is alive and owes
    no answer (and there is room), ended otherwise."""
    if not child.busy and child.proc.poll() is None:
        child.idle_since = time.monotonic()
        with _idle_lock:
            _idle[:] = [c for c in _idle if c.proc.poll() is None]
            if len(_idle) < _IDLE_MAX:
                _idle.append(child)
                return
    _close(child.proc, child.conn)


def end_idle() -> int:
    """End the children kept for later stages (at exit, and for tests); returns how many."""
    with _idle_lock:
        ending, _idle[:] = list(_idle), []
    for child in ending:
        _close(child.proc, child.conn)
    return len(ending)


atexit.register(end_idle)


class Sandbox:
    """A child process that builds ``cls(*args)`` (then ``setup()``) and answers
    ``method(item)`` calls, each within a :class:`Budget`."""

    def __init__(self, cls: type, args: tuple[Any, ...], method: str = "process", retries: int = 2):
        self._build = (cls, args, method)
        self.retries = retries
        self._child: _Child | None = None
        self._finalizer: weakref.finalize | None = None

    # -- the child -------------------------------------------------------------------

    def _start(self) -> tuple[subprocess.Popen[bytes], Connection]:
        if self._child is not None and self._child.proc.poll() is None:
            return self._child.proc, self._child.conn
        self.close()
        key = _spawn_key()
        child = _take(key)
        if child is not None:
            try:
                return self._adopt(child)
            except (EOFError, OSError):  # it ended as we took it: start one
                _close(child.proc, child.conn)
        return self._adopt(_spawn(key))

    def _adopt(self, child: _Child) -> tuple[subprocess.Popen[bytes], Connection]:
        """Build this sandbox's stage in ``child`` and hold it until this sandbox is dropped."""
        child.busy = True
        child.conn.send(("build", self._build))
        if not child.conn.poll(_START_TIMEOUT_S):
            _close(child.proc, child.conn)
            raise ItemFailed(f"decoder process did not start within {_START_TIMEOUT_S:.0f} s")
        status, detail = child.conn.recv()
        if status != "ready":
            _close(child.proc, child.conn)
            raise ItemFailed(f"decoder process setup failed: {detail}")
        child.busy = False
        self._child = child
        self._finalizer = weakref.finalize(self, _release, child)
        return child.proc, child.conn

    def close(self) -> None:
        """End the child (past a budget, or dead): the next item gets a fresh one."""
        if self._finalizer is not None:
            self._finalizer.detach()
        if self._child is not None:
            _close(self._child.proc, self._child.conn)
        self._child = self._finalizer = None

    # -- one item --------------------------------------------------------------------

    def run(self, item: Any, budget: Budget, nbytes: int = 0) -> Any:
        """``method(item)`` in the child; :class:`BudgetExceeded` past the budget or when
        the child died under the item on every try, :class:`ItemFailed` when it raised."""
        seconds = budget.seconds_for(nbytes)
        died = ""
        for _ in range(self.retries + 1):
            try:
                return self._once(item, seconds, budget.memory_bytes)
            except _ChildDied as exc:
                died = str(exc)
                log.warning("decoder process died under %r: %s", item, died)
        raise BudgetExceeded(f"crashed its worker {self.retries + 1} times (decoder process {died})")

    def _once(self, item: Any, seconds: float, memory: int) -> Any:
        proc, conn = self._start()
        assert self._child is not None
        self._child.busy = True
        with contextlib.suppress(OSError):  # it died: the poll below says how
            conn.send(("item", item))
        deadline = time.monotonic() + seconds
        while True:
            try:
                ready = conn.poll(_POLL_S)
            except (EOFError, OSError):
                ready = False
            if ready:
                try:
                    status, payload = conn.recv()
                except (EOFError, OSError):
                    status, payload = "died", None
                if status != "died":
                    self._child.busy = False
                if status == "ok":
                    return payload
                if status == "memory":
                    self.close()
                    raise BudgetExceeded(f"exceeded memory budget {Budget.describe_bytes(memory)}")
                if status == "error":
                    log.warning("decoder process raised: %s", payload)
                    # The exception's type only: its message may quote the drive's bytes (the log has it all).
                    kind = str(payload).strip().splitlines()[-1].split(":", 1)[0]
                    raise ItemFailed(f"{kind} while decoding (the worker log has the traceback)")
            if proc.poll() is not None:
                code = proc.returncode
                self.close()
                raise _ChildDied(f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit {code}")
            rss = _rss_bytes(proc.pid)
            if memory and rss is not None and rss > memory:
                self.close()
                raise BudgetExceeded(f"exceeded memory budget {Budget.describe_bytes(memory)}")
            if time.monotonic() > deadline:
                self.close()
                raise BudgetExceeded(f"exceeded time budget {seconds:.0f} s")


class _ChildDied(Exception):
    pass


def _close(proc: subprocess.Popen[bytes], conn: Connection) -> None:
    try:
        conn.close()
    finally:
        _kill(proc)


def _die_with_parent() -> None:
    """SIGKILL this child when the process that started it dies (Linux): a worker killed
    while its child spins in C must not leave the spinning child behind."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def _serve(fd: int) -> None:
    """Answer ``("build", (cls, args, method))`` (a stage, built anew for each sandbox that
    takes this process) and ``("item", item)`` until the parent's end closes, or nothing
    came for :data:`_IDLE_EXIT_S`."""
    _die_with_parent()
    conn = Connection(fd)
    call: Any = None
    while True:
        try:
            if not conn.poll(_IDLE_EXIT_S):
                return
            kind, payload = conn.recv()
        except (EOFError, OSError):
            return
        if kind == "build":
            call = None
            try:
                cls, args, method = payload
                stage = cls(*args)
                stage.setup()
                call = getattr(stage, method)
            except Exception as exc:
                conn.send(("failed", f"{type(exc).__name__}: {exc}"))
                return
            conn.send(("ready", None))
            continue
        try:
            conn.send(("ok", call(payload)))
        except MemoryError:
            conn.send(("memory", None))
            return
        except Exception as exc:
            conn.send(("error", "".join(traceback.format_exception(exc))))


if __name__ == "__main__":
    _serve(int(sys.argv[1]))
