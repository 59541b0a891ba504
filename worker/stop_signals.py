"""One stop, told from a request to stop now: the first SIGTERM/SIGINT/SIGHUP lets requests in
flight finish within ``--grace``; a later one cancels them. Shared by a run (``runner``) and a
``--processes`` parent (``supervise``), and kept apart from the latter so that a run's start-up
does not import what only the parent needs.
"""

from __future__ import annotations

import signal
import time

from worker.logs import get_logger

log = get_logger()
# One stop can reach a process twice: sent to its process group (or cgroup: systemd's
# KillMode=control-group) and forwarded by a wrapper (``timeout``; ``uv run``, 200 ms later) or
# by a --processes parent. A second signal this soon after the first is that stop delivered
# twice; a later one asks to stop now.
SAME_STOP_S = 0.5


class StopSignals:
    """Tells a signal asking again (stop now) from the first one delivered twice."""

    def __init__(self) -> None:
        self._first: float | None = None

    def take(self, signum: int, grace: float, now: float | None = None) -> bool:
        """Log the signal (which came at ``now``, monotonic); True when it asks to stop now."""
        name = signal.Signals(signum).name
        now = time.monotonic() if now is None else now
        if self._first is None:
            self._first = now
            log.warning("cleanup.signal_received", signal=name, grace_s=grace)
            return False
        if now - self._first < SAME_STOP_S:
            log.info(
                "cleanup.signal_repeated",
                signal=name,
                detail="taken for the first one delivered twice; send it again to stop now",
            )
            return False
        log.warning("cleanup.signal_received_again", signal=name, action="stop now")
        return True
