"""Dead letters: the entries a consumer settles as ``rejected``, ``failed`` or invalid
(``skipped`` as bad input) are copied to ``<stream>:dead`` with their outcome, in the same MULTI
as their acknowledgement, so an operator finds every task that needs a look in one stream. The
newest ``--dead-letter-maxlen`` are kept (0: all). On a Redis Cluster the two keys share a hash
slot (``worker.redis_client.check_cluster_stream``), so the MULTI runs on one node.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoPermissionError, OutOfMemoryError, RedisError

from worker.errors import InputError
from worker.logs import get_logger
from worker.models import Outcome, TaskResult
from worker.redis_client import as_text, dead_letter_key, unreachable
from worker.settings import MAX_MESSAGE
from worker.sources import BAD_INPUT

log = get_logger()
_COPIED = frozenset({Outcome.REJECTED, Outcome.FAILED, Outcome.SKIPPED})


class DeadLetters:
    """The dead-letter stream of one stream and group, and the settling of entries into it."""

    def __init__(self, client: aioredis.Redis, stream: str, group: str, maxlen: int) -> None:
        self.key = dead_letter_key(stream)
        self._redis = client
        self._stream = stream
        self._group = group
        self._maxlen = maxlen or None  # None: XADD without MAXLEN

    async def check_key(self) -> None:
        """Refuse to start when ``<stream>:dead`` holds something other than a stream: every
        dead letter would be refused (WRONGTYPE), found only at the first one, hours in."""
        try:
            kind = as_text(await self._redis.type(self.key))
        except NoPermissionError as exc:
            if "command" in str(exc):
                return  # an ACL for streams alone (+@stream) has no TYPE: a refused copy is named
            msg = (
                f"--queue: this Redis user may not use the dead-letter key {self.key!r} "
                f"({str(exc)[:100]}); grant it (ACL ~{self.key}) or read another --stream"
            )
            raise InputError(msg) from None
        except RedisError as exc:
            raise InputError(f"--queue: {unreachable(exc)}") from None
        if kind not in ("none", "stream"):
            msg = (
                f"--queue: the dead-letter key {self.key!r} holds a {kind}, not a stream; "
                "rename or delete it, or read another --stream"
            )
            raise InputError(msg)

    async def settle(self, settle: list[TaskResult], messages: Mapping[str, str | None]) -> int:
        """XACK, with the dead letters in the same MULTI; return how many were dead-lettered.
        ``messages``: each entry's own ``message`` by entry ID, kept in its dead letter.

        Redis out of memory refuses every command queued in a MULTI, XACK included, though a
        plain XACK (which frees memory) still goes through. Left unacknowledged, the entries
        would be reclaimed and re-sent for as long as memory stays short, and a drain would
        never end; so they are acknowledged, and the dead-letter copies that could not be
        written are named in a warning (their outcomes are in the journal and outcomes)."""
        acks = [r.ack for r in settle if r.ack]
        dead = [r for r in settle if _copied(r)]
        if not dead:
            await self._redis.xack(self._stream, self._group, *acks)
            return 0
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                for r in dead:
                    pipe.xadd(
                        self.key,
                        _fields(r, messages.get(r.ack or "")),
                        maxlen=self._maxlen,
                        approximate=False,  # exact: the newest N; dead letters are few
                    )
                pipe.xack(self._stream, self._group, *acks)
                # Each command's own answer: one refused inside the MULTI (WRONGTYPE, the key
                # changed under a running consumer) does not undo the others, the XACK included.
                replies = await pipe.execute(raise_on_error=False)
        except (OutOfMemoryError, NoPermissionError) as exc:
            # Refused whole at EXEC (memory short; an ACL taking the key away mid-run):
            # acknowledged alone, else reclaimed and refused again for ever.
            await self._redis.xack(self._stream, self._group, *acks)
            self._lost(dead, exc)
            return 0
        if isinstance(replies[-1], Exception):
            raise replies[-1]  # not acknowledged: left pending, reclaimed and re-sent
        # replies: one a dead letter, then the XACK's (checked above)
        answers = zip(dead, replies, strict=False)
        refused = [(r, reply) for r, reply in answers if isinstance(reply, Exception)]
        if refused:
            self._lost([r for r, _ in refused], refused[0][1])
        return len(dead) - len(refused)

    def _lost(self, results: list[TaskResult], error: Exception) -> None:
        """Name the entries acknowledged without the dead-letter copy Redis refused."""
        log.warning(
            "cleanup.queue_dead_letter_lost",
            stream=self.key,
            entries=len(results),
            task_ids=[r.task_id for r in results[:20]],
            error=str(error)[:200],
            detail="acknowledged without their dead-letter copies; "
            "their outcomes are in the journal, the outcomes file and the log",
        )


def _copied(result: TaskResult) -> bool:
    """Whether a settled entry is copied to the dead-letter stream: failures and bad entries."""
    return result.outcome in _COPIED and (
        result.outcome is not Outcome.SKIPPED or result.error_code in BAD_INPUT
    )


def _fields(result: TaskResult, message: str | None) -> dict[Any, Any]:
    fields: dict[Any, Any] = {
        "task_id": result.task_id,
        "project_id": result.project_id,
        "outcome": result.outcome.value,
        "status": "" if result.status is None else str(result.status),
        "attempts": str(result.attempts),
        "error_code": result.error_code or "",
        "error_msg": (result.error_msg or "")[:500],
        "request_id": result.request_id or "",
        "entry_id": result.ack or "",
        "at": f"{time.time():.3f}",
    }
    if message:  # the entry's own, as written (one too long for a DELETE: skipped, cut here)
        fields["message"] = message[:MAX_MESSAGE]
    return fields
