"""The parent's watch over ``--processes`` children: signals forwarded, children reaped, their
log lines relayed above a progress bar; and a child's death with its parent.

The parent forwards SIGTERM/SIGINT/SIGHUP to every child (children have their own process
group, so a terminal's Ctrl-C reaches them once, through the parent) and, if it fails itself
while children run, stops them (SIGTERM) and waits for them. A child asks the kernel for a
SIGTERM when its parent dies (``PR_SET_PDEATHSIG`` on Linux), so a killed parent never leaves
orphans sending requests.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import sys
import time
from typing import Any

from worker.logs import get_logger, route_lines, write_line
from worker.models import EXIT_INTERRUPTED
from worker.progress import ProcessesProgress
from worker.settings import Settings
from worker.stop_signals import StopSignals

log = get_logger()
PR_SET_PDEATHSIG = 1
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def die_with_parent() -> None:
    """Linux: SIGTERM this process when the parent dies (kill -9 included)."""
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(EXIT_INTERRUPTED)


class Supervisor:
    """The parent's side: forwards SIGTERM/SIGINT to the children and reaps them. If the parent
    itself fails while children run, they are told to stop (SIGTERM) and waited for."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._pids: dict[int, int] = {}
        self._alive: set[int] = set()
        self._stops = StopSignals()
        self._signals: list[tuple[int, float]] = []  # caught, not yet logged: (signal, when)
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Supervisor:
        self._previous = {sig: signal.signal(sig, self._forward) for sig in FORWARDED}
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            if exc_type is not None:
                for pid in self._alive:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGTERM)
                for pid in self._alive:
                    with contextlib.suppress(ChildProcessError):
                        os.waitpid(pid, 0)
        finally:
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)

    def add(self, pid: int, index: int) -> None:
        self._pids[pid] = index
        self._alive.add(pid)

    def _forward(self, signum: int, frame: object) -> None:
        """Forward the signal now; ``wait``'s loop logs it. Logged here, in the handler, it
        waited for ever on the log's lock when it interrupted a line being written, and the
        children never heard of it. Each child tells for itself whether it asks again: it
        may have had it directly too."""
        del frame
        self._signals.append((signum, time.monotonic()))
        for pid in self._alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def _log_signals(self) -> None:
        while self._signals:
            signum, when = self._signals.pop(0)
            self._stops.take(signum, self._settings.grace, when)

    def wait(self, progress: ProcessesProgress, relay: LogRelay) -> dict[int, int]:
        """Reap every child, showing progress and its log lines meanwhile; exit codes by
        process index."""
        codes: dict[int, int] = {}
        try:
            while self._alive:
                self._log_signals()
                pid, status = os.waitpid(-1, os.WNOHANG)
                if pid == 0:
                    progress.tick()
                    relay.pump(0.05)
                    continue
                if pid in self._alive:
                    self._alive.discard(pid)
                    codes[self._pids[pid]] = os.waitstatus_to_exitcode(status)
            relay.drain()
        finally:
            self._log_signals()
            progress.close()
        return codes


class LogRelay:
    """Children's log lines, printed by the parent while it draws a bar on a terminal.

    A child writing to the terminal itself would put its line at the end of the bar. With a bar,
    each child sends its whole lines down a pipe of its own instead, and the parent prints them
    through its own logs, above the bar. Without a bar (``count`` 0) nothing changes: children
    write their lines straight to the shared stdout, one ``write`` a line."""

    def __init__(self, count: int) -> None:
        pipes = [os.pipe() for _ in range(count)]
        self._reads = [read_end for read_end, _ in pipes]
        self._writes = [write_end for _, write_end in pipes]
        self._partial: dict[int, bytes] = {}  # open read end -> the part of a line read so far

    def __enter__(self) -> LogRelay:
        return self

    def __exit__(self, *exc: object) -> None:
        # Closed before the children are waited for on a failure: a child blocked on a full
        # pipe gets EPIPE and writes its lines to its own stdout from then on.
        for fd in (*self._reads, *self._writes):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._reads, self._writes, self._partial = [], [], {}

    def in_child(self, index: int) -> None:
        """In child ``index``, just forked: route its log lines into its pipe."""
        if not self._writes:
            return
        out = self._writes[index]
        for fd in (*self._reads, *self._writes):
            if fd != out:
                os.close(fd)
        self._reads, self._writes = [], [out]

        def send(line: str) -> None:
            data = (line + "\n").encode("utf-8", "replace")
            try:
                while data:
                    data = data[os.write(out, data) :]
            except OSError:  # the parent stopped reading: print it here from now on
                route_lines(None)
                write_line(data.decode("utf-8", "replace").rstrip("\n"))

        route_lines(send)

    def children_started(self) -> None:
        """In the parent, after the forks: keep only the read ends."""
        for fd in self._writes:
            os.close(fd)
        self._writes = []
        self._partial = dict.fromkeys(self._reads, b"")

    def pump(self, timeout: float) -> None:
        """Print the whole lines that arrive within ``timeout`` seconds (or just wait it)."""
        if not self._partial:
            time.sleep(timeout)
            return
        ready, _, _ = select.select(list(self._partial), [], [], timeout)
        for fd in ready:
            chunk = os.read(fd, 1 << 16)
            *lines, rest = (self._partial[fd] + chunk).split(b"\n")
            for line in lines:
                write_line(line.decode("utf-8", "replace"))
            if chunk:
                self._partial[fd] = rest
            else:  # its child has exited
                if rest:
                    write_line(rest.decode("utf-8", "replace"))
                del self._partial[fd]

    def drain(self) -> None:
        """Print what the children wrote before they exited (they all have)."""
        while self._partial:
            self.pump(1.0)
