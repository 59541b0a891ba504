"""One run at a time on a journal: ``RunLock``, an exclusive ``flock`` on ``<journal>.lock``."""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from worker.errors import ConfigError


class RunLock:
    """One run at a time on a journal: an exclusive ``flock`` on ``<journal>.lock``, holding
    the holder's pid. Two runs over one journal would each claim the other's pending tasks
    again and send every DELETE twice. The kernel drops the lock when its holder dies, however
    it dies; ``--processes`` children share their parent's (the descriptor is inherited)."""

    def __init__(self, journal: Path) -> None:
        self.journal = journal
        self.path = Path(f"{journal}.lock")
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            msg = f"--journal {self.journal}: cannot create its lock file: {exc.strerror}"
            raise ConfigError(msg) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.read(fd, 32).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                msg = (
                    f"--journal {self.journal}: another run (pid {holder}) is using "
                    "it; wait for it to end, or give this run a journal of its own"
                )
                raise ConfigError(msg) from None
            return self  # a filesystem without flock: run unguarded, as before
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the lock; the file stays (removing it would race)
            self._fd = None

    @staticmethod
    def holder(journal: Path) -> str | None:
        """The pid of the run holding ``journal``'s lock now, or None when none does (or this
        system cannot tell). Read from ``/proc/locks``, not by taking the lock: a reader that
        took it, even shared and for an instant, would turn a run starting then away."""
        try:
            st = os.stat(f"{journal}.lock")
            held = Path("/proc/locks").read_text(encoding="ascii", errors="replace")
        except OSError:
            return None  # no lock file (no run has held it), or not Linux
        ident = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
        for line in held.splitlines():
            fields = line.split()  # "3: FLOCK ADVISORY WRITE <pid> <maj:min:inode> 0 EOF"
            if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == ident:
                return fields[4]
        return None
