"""Refused credentials remembered in a file, for runs that have no Redis (``--refusal-file``).

The shipped CronJob has no Redis: a wrong SK sent one refused signature a night, from its
``list`` init container, and Huawei locks an AK/SK after five in a row. With a file on the volume
that keeps the journal, the first refusal is remembered there and later nights send nothing
(exit 3) until ``--refusal-memory`` has passed, the credentials change or the file is deleted.

The file holds one JSON object: each set of credentials refused lately, by fingerprint (never
the credentials themselves), with what ``refusals.Refusal`` says of it. It is replaced whole
(a temporary file renamed over it), so a reader never sees half of it. Runs that share it on one
machine need no turn for their first request as runs sharing a Redis do: a CronJob runs one pod
at a time, and its ``list`` and ``run`` run one after the other.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from worker.logs import get_logger
from worker.refusals import Refusal, fingerprint, said_remembered, said_unavailable
from worker.signer import Credentials

log = get_logger()


class FileRefusalMemory:
    """What the file at ``path`` knows of one set of credentials. A file that cannot be read or
    written gives one warning, and the memory is off for the run."""

    def __init__(self, path: Path, credentials: Credentials, seconds: float) -> None:
        """``path`` checked before (``preflight.check_outputs``, or ``list``'s own check)."""
        self.path = path
        self.seconds = seconds
        self._credentials = credentials
        self._mark = fingerprint(credentials)
        self.key = f"{path} {self._mark}"
        self.known: Refusal | None = None  # recalled or remembered by this run
        self.off = False

    def __repr__(self) -> str:
        return f"FileRefusalMemory({self.key!r})"

    def clear_how(self) -> str:
        return f"delete the file {self.path}"

    async def recalled(self) -> Refusal | None:
        """The refusal the file remembers for these credentials, or None."""
        entry = self._entries().get(self._mark)
        if not isinstance(entry, dict):
            return None
        self.known = Refusal.of(entry)
        return self.known

    async def remember(self, detail: str, run_id: str) -> None:
        """Remember that these credentials were refused now, unless this run already knows."""
        if self.known is not None or self.off:
            return
        self.known = Refusal.now(detail, run_id, self.seconds, self._credentials)
        entries = self._entries()
        entries[self._mark] = dataclasses.asdict(self.known)
        try:
            _replace(self.path, json.dumps(entries, indent=1, sort_keys=True) + "\n")
        except OSError as exc:
            self._unusable("write", exc)
            return
        said_remembered(self.key, self.seconds, "this file")

    async def aclose(self) -> None:
        """Nothing held between calls."""

    def _entries(self) -> dict[str, Any]:
        """The file's refusals still remembered (none when the memory is off or the file is
        not there yet)."""
        if self.off:
            return {}
        try:
            raw: Any = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            self._unusable("read", exc)
            return {}
        if not isinstance(raw, dict):
            self._unusable("read", ValueError("not a JSON object"))
            return {}
        now = time.time()
        return {k: v for k, v in raw.items() if _until(v) > now}

    def _unusable(self, what: str, exc: Exception) -> None:
        self.off = True
        remedy = "give --refusal-file a path this run may read and write"
        said_unavailable(what, self.key, str(exc), "this file", remedy)


def _until(entry: Any) -> float:
    """When an entry's memory ends (0: now, for one that says no time)."""
    try:
        return datetime.fromisoformat(str(entry["until"])).timestamp()
    except (TypeError, KeyError, ValueError):
        return 0.0


def _replace(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` whole: a temporary file beside it, renamed over it."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())  # on the disk before its name is, so a crash leaves one whole
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
