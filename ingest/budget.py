"""A per-drive time and memory budget, enforced from outside the decoder.

A decoder stuck in a loop inside FFmpeg never returns to Python, and one that
allocates without bound takes its worker (and the node's other tasks) down with it:
nothing running in the same process can stop either. So a budgeted stage decodes its
drives in a child process (:class:`Sandbox`) it starts once and keeps for the next
drives, so imports and setup are paid once per worker, not per drive. The parent
waits for each answer with a deadline and reads the child's resident memory every
few milliseconds; past either budget it SIGKILLs the child, the drive is recorded
failed with the budget it exceeded, and the next drive gets a fresh child.

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

import logging
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
import weakref
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

__all__ = ["Budget", "BudgetExceeded", "ItemFailed", "Sandbox"]

log = logging.getLogger(__name__)

_POLL_S = 0.02  # how often the parent reads the child's memory
_START_TIMEOUT_S = 300.0  # imports and setup of a child on a loaded node; not part of a drive's budget
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


class Sandbox:
    """A child process that builds ``cls(*args)`` (then ``setup()``) and answers
    ``method(item)`` calls, each within a :class:`Budget`."""

    def __init__(self, cls: type, args: tuple[Any, ...], method: str = "process", retries: int = 2):
        self._build = (cls, args, method)
        self.retries = retries
        self._proc: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._finalizer: weakref.finalize | None = None

    # -- the child -------------------------------------------------------------------

    def _start(self) -> tuple[subprocess.Popen[bytes], Connection]:
        if self._proc is not None and self._conn is not None and self._proc.poll() is None:
            return self._proc, self._conn
        self.close()
        ours, theirs = socket.socketpair()
        env = dict(os.environ)
        # The child imports what this process imports (a Ray worker's shipped code included).
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        proc = subprocess.Popen(
            [sys.executable, "-m", "ingest.budget", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            env=env,
            stdin=subprocess.DEVNULL,
        )
        theirs.close()
        conn = Connection(ours.detach())
        self._proc, self._conn = proc, conn
        self._finalizer = weakref.finalize(self, _close, proc, conn)
        conn.send(self._build)
        if not conn.poll(_START_TIMEOUT_S):
            self.close()
            raise ItemFailed(f"decoder process did not start within {_START_TIMEOUT_S:.0f} s")
        status, detail = conn.recv()
        if status != "ready":
            self.close()
            raise ItemFailed(f"decoder process setup failed: {detail}")
        return proc, conn

    def close(self) -> None:
        if self._finalizer is not None:
            self._finalizer()
        self._proc = self._conn = self._finalizer = None

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
        conn.send(item)
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
    _die_with_parent()
    conn = Connection(fd)
    cls, args, method = conn.recv()
    try:
        stage = cls(*args)
        stage.setup()
        call = getattr(stage, method)
    except Exception as exc:
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", None))
    while True:
        try:
            item = conn.recv()
        except EOFError:
            return
        try:
            conn.send(("ok", call(item)))
        except MemoryError:
            conn.send(("memory", None))
            return
        except Exception as exc:
            conn.send(("error", "".join(traceback.format_exception(exc))))


if __name__ == "__main__":
    _serve(int(sys.argv[1]))
