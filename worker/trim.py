"""Trimming a Redis stream: removing the entries that every consumer group has read and
acknowledged (XTRIM MINID), which XACK alone does not. A queue consumer (``worker.queue``) trims
every few seconds of work and when drained; ``--keep-acked`` turns it off.
"""

from __future__ import annotations

import math
import time
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from worker.logs import get_logger
from worker.redis_client import PASSING, as_text

log = get_logger()
HELD_LAG = 1000  # entries another group has not read or acked when its hold on the floor is told
HELD_TELL_EVERY = 3600.0  # seconds between two warnings of one group's hold


class StreamTrimmer:
    """One consumer's trims of its stream, and its warnings about a group holding them back."""

    def __init__(
        self, client: aioredis.Redis, stream: str, group: str, *, keep_acked: bool = False
    ) -> None:
        self._redis = client
        self.stream = stream
        self.group = group
        self._keep_acked = keep_acked
        self._acked_at_trim = 0
        self._told_held: dict[str, float] = {}  # group -> when its hold on the floor was told
        self.trimmed = 0

    async def trim(self, acked: int) -> None:
        """Remove the entries that every consumer group of the stream has read and acknowledged.

        ACK does not delete an entry: without this a long-lived stream keeps every task it ever
        carried (some 90 bytes each), which fills a small DCS instance. The floor is the oldest
        entry any group still needs: its oldest pending one, or the first it has not read. A
        group that reads nothing (stale, or made for another reader) holds the floor down; a
        reader without a group (XREAD, XRANGE) is not seen at all, hence ``--keep-acked``."""
        if self._keep_acked or acked == self._acked_at_trim:
            return
        self._acked_at_trim = acked
        try:
            floor, holder = await self._floor()
            if floor is None:
                return
            removed = int(await self._redis.xtrim(self.stream, minid=floor, approximate=False))
        except ResponseError as exc:
            if isinstance(exc, PASSING):
                self._acked_at_trim = -1  # the next trim tries again
                return
            # No permission (an ACL without XTRIM/XINFO), or a Redis before 6.2 (no MINID).
            self._keep_acked = True
            log.warning(
                "cleanup.queue_trim_off",
                stream=self.stream,
                error=str(exc)[:200],
                detail="acknowledged entries stay in the stream; trim it with XTRIM MINID",
            )
            return
        except RedisError as exc:  # unreachable for now: the next trim catches up
            self._acked_at_trim = -1
            log.debug("cleanup.queue_trim_failed", stream=self.stream, error=str(exc)[:200])
            return
        self.trimmed += removed
        if removed:
            log.debug("cleanup.queue_trimmed", stream=self.stream, entries=removed, below=floor)
        self._tell_held(holder)

    def _tell_held(self, holder: dict[str, Any] | None) -> None:
        """Warn (once an hour a group) when another group, far behind, holds the trim floor:
        the stream then keeps every entry after its position, however many this group acks."""
        if holder is None:
            return
        name, lag = as_text(holder["name"]), holder.get("lag")
        if name == self.group:
            return
        lag = None if lag is None else int(lag)  # Redis 7; None when it cannot tell
        pending = int(holder.get("pending") or 0)
        # Entries read and never acknowledged (a reader that does not XACK) hold the floor as
        # entries not read do.
        if (lag or 0) + pending < HELD_LAG:
            return
        now = time.monotonic()
        if now - self._told_held.get(name, -math.inf) < HELD_TELL_EVERY:
            return
        self._told_held[name] = now
        log.warning(
            "cleanup.queue_trim_held",
            stream=self.stream,
            group=name,
            lag=lag,
            pending=pending,
            detail=(
                f"group {name} has not read or not acknowledged these entries, so the stream "
                f"keeps them and every entry after them; if nothing reads through the group: "
                f"XGROUP DESTROY {self.stream} {name}"
            ),
        )

    async def _floor(self) -> tuple[str | None, dict[str, Any] | None]:
        """The ID below which no consumer group of the stream needs an entry (or None), and
        the XINFO GROUPS entry of the group that needs it."""
        floor: tuple[int, int] | None = None
        holder: dict[str, Any] | None = None
        groups: Any = await self._redis.xinfo_groups(self.stream)
        for group in groups:
            needed = _after(as_text(group["last-delivered-id"]))
            if int(group.get("pending") or 0):
                summary: Any = await self._redis.xpending(self.stream, group["name"])
                if summary.get("min"):
                    needed = min(needed, _stream_id(as_text(summary["min"])))
            if floor is None or needed < floor:
                floor, holder = needed, group
        return (None if floor is None else f"{floor[0]}-{floor[1]}"), holder


def _stream_id(entry_id: str) -> tuple[int, int]:
    """A stream entry ID (``ms-seq``) as a pair that sorts like the IDs do."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _after(entry_id: str) -> tuple[int, int]:
    """The smallest stream ID above ``entry_id``."""
    ms, seq = _stream_id(entry_id)
    return (ms, seq + 1) if seq < 2**64 - 1 else (ms + 1, 0)
