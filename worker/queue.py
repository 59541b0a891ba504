"""Redis Streams: the queue source, a consumer group's reader (``run --queue``).

Entry format (upstream systems may ``XADD`` it directly)::

    XADD dcs-cleanup:tasks * task_id <id> [project_id <project>] [message <text>]

A consumer reads through a consumer group and acknowledges an entry only after the task's final
outcome is in its journal. ``rejected``, ``failed`` and invalid (``skipped``) entries are copied
to the dead-letter stream (``<stream>:dead``) with their outcome in the same MULTI as the ack;
``not_attempted`` entries are left pending so another consumer reclaims them (XAUTOCLAIM) once
they have been idle ``--claim-idle`` seconds, which is also how a dead consumer's work is taken
over. Entries that every consumer group of the stream has read and acknowledged are trimmed away
(XTRIM MINID, every ``TRIM_EVERY`` seconds of work and when drained), so a long-lived stream does
not keep every task it ever carried; ``--keep-acked`` leaves them. A consumer leaves the group
when it ends with nothing pending, and consumers silent for ``FORGET_IDLE`` seconds with nothing
pending (killed, their entries reclaimed) are forgotten.

The producer is ``worker.enqueue``; the trims, ``worker.trim``; the dead letters and the MULTI that
acknowledges with them, ``worker.dead_letters``; the rate limit shared through
Redis, ``worker.shared_rate``; the client they all use, ``worker.redis_client``. On a Redis
Cluster every command here names one key, or two in one hash slot (the stream and its
dead-letter stream), so the cluster client runs each on the node serving it, the MULTI included.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from typing import Any

import anyio
import redis.asyncio as aioredis
from redis.exceptions import NoPermissionError, OutOfMemoryError, RedisError, ResponseError

from worker.dead_letters import DeadLetters
from worker.errors import InputError
from worker.logs import get_logger
from worker.models import Outcome, TaskResult
from worker.redis_client import as_text, check_cluster_stream, describe, unreachable
from worker.sources import IdValidator, SourceItem, check_task, skipped
from worker.trim import StreamTrimmer

log = get_logger()
BLOCK_MS = 1000
TRIM_EVERY = 10.0  # seconds between two trims of a stream while entries are being acknowledged
FORGET_IDLE = 3600.0  # seconds a consumer with nothing pending stays in the group, silent


def _no_task_id(fields: dict[str, str]) -> str:
    """Why an entry without a ``task_id`` is skipped, naming the fields it has (an upstream
    system that wrote ``taskId`` or ``id`` is told so), a few and short."""
    if "task_id" in fields:
        return "entry's task_id is empty"
    names = [repr(as_text(name)[:40]) for name in list(fields)[:8]]
    more = ", ..." if len(fields) > len(names) else ""
    return f"entry has no task_id field (its fields: {', '.join(names) or 'none'}{more})"


class RedisStreamSource:
    """A ``TaskSource`` over a Redis stream consumer group."""

    def __init__(
        self,
        client: aioredis.Redis,
        stream: str,
        group: str,
        consumer: str,
        default_project: str | None,
        validator: IdValidator,
        *,
        until_empty: bool,
        claim_idle: float,
        keep_acked: bool = False,
        dead_letter_maxlen: int = 0,
        batch: int = 256,
        message: str | None = None,
    ) -> None:
        self.name = f"redis:{stream}"
        self.finite = False
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self._redis = client
        self._default_project = default_project
        self._validator = validator
        self._until_empty = until_empty
        self._claim_idle_ms = int(claim_idle * 1000)
        self._batch = batch
        self._message = message
        # Entries delivered to this consumer and not yet settled, each with its own message (a
        # dead letter keeps it, so that redrive puts the entry back as it was written).
        self._held: dict[str, str | None] = {}
        self._unacked: list[TaskResult] = []  # settled here, their XACK not yet taken by Redis
        self._last_claim = 0.0
        self._dead = DeadLetters(client, stream, group, dead_letter_maxlen)
        self.dead_letter = self._dead.key
        self._trimmer = StreamTrimmer(client, stream, group, keep_acked=keep_acked)
        self._last_trim = time.monotonic()
        self.acked = 0
        self.dead_lettered = 0

    @property
    def trimmed(self) -> int:
        """Entries this consumer's trims removed from the stream."""
        return self._trimmer.trimmed

    async def ensure_group(self) -> None:
        check_cluster_stream(self._redis, self.stream)
        try:
            await self._redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            # Out of memory, Redis refuses XGROUP CREATE before it sees the group is there.
            if "BUSYGROUP" not in str(exc) and not (
                isinstance(exc, OutOfMemoryError) and await self._group_exists()
            ):
                msg = f"--queue: cannot create group {self.group!r}: {describe(exc)}"
                raise InputError(msg) from None
        except RedisError as exc:
            raise InputError(f"--queue: {unreachable(exc)}") from None
        await self._check_may_ack()
        await self._dead.check_key()

    async def _check_may_ack(self) -> None:
        """Refuse to start when this Redis user may not XACK (an ACL without it): every entry
        would be read, its task deleted, and the entry left pending for others to send again.
        Acknowledging ``0-0``, which nothing holds, asks Redis without changing anything."""
        try:
            await self._redis.xack(self.stream, self.group, "0-0")
        except NoPermissionError as exc:
            msg = (
                f"--queue: this Redis user may not acknowledge entries ({str(exc)[:100]}); "
                "grant it XACK (ACL +xack, or +@stream)"
            )
            raise InputError(msg) from None
        except RedisError as exc:
            raise InputError(f"--queue: {unreachable(exc)}") from None

    async def look(self) -> dict[str, float] | None:
        """The stream's length, the group's lag (NaN when Redis cannot tell) and pending
        entries, and the dead-letter stream's length; None if Redis does not answer in 2 s."""
        try:
            with anyio.fail_after(2):
                length = int(await self._redis.xlen(self.stream))
                dead = int(await self._redis.xlen(self.dead_letter))
                group = await self._group_info()
        except (RedisError, TimeoutError):
            return None
        # No group (yet): every entry is undelivered.
        state: dict[str, float] = {"length": length, "lag": length, "pending": 0, "dead": dead}
        if group is not None:
            lag = group.get("lag")
            state["lag"] = math.nan if lag is None else int(lag)
            state["pending"] = int(group.get("pending") or 0)
        return state

    def counts(self) -> dict[str, int]:
        return {"acked": self.acked, "dead_lettered": self.dead_lettered, "trimmed": self.trimmed}

    async def _group_info(self) -> dict[str, Any] | None:
        """This group's entry of XINFO GROUPS (pending, lag, ...); None if the stream has no
        such group. A stream that is not there is Redis's ``ResponseError``."""
        groups: Any = await self._redis.xinfo_groups(self.stream)
        return next((g for g in groups if as_text(g["name"]) == self.group), None)

    async def _group_exists(self) -> bool:
        try:
            return await self._group_info() is not None
        except ResponseError:  # no such stream
            return False

    async def batches(self) -> AsyncGenerator[list[SourceItem], None]:
        await self.ensure_group()
        backoff = 0.5
        while True:
            try:
                if self._unacked:
                    await self._ack_again()
                entries = await self._reclaim()
                if not entries:
                    entries = await self._read_new()
                drained = not entries and self._until_empty and await self._drained()
            except RedisError as exc:
                if str(exc).startswith("NOGROUP") and await self._group_made_again():
                    continue
                # Redis restarting or unreachable: nothing is lost (entries stay in the stream).
                log.warning("cleanup.queue_unavailable", error=str(exc)[:200], retry_in=backoff)
                await anyio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            backoff = 0.5
            if drained or time.monotonic() - self._last_trim >= TRIM_EVERY:
                await self._tidy()
            if entries:
                yield [self._item(entry_id, fields) for entry_id, fields in entries]
            elif drained:
                return

    async def _group_made_again(self) -> bool:
        """The stream or its group is gone: a Redis restarted without persistence, a flush, a
        failover to a replica that lacked it. Waiting would never bring it back (``enqueue``
        makes the stream, not the group), so make the group again, from the stream's start.
        False if Redis cannot be reached to do it (the caller backs off)."""
        try:
            await self._redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            return "BUSYGROUP" in str(exc)  # another consumer made it first
        except RedisError:
            return False
        log.warning(
            "cleanup.queue_group_recreated",
            stream=self.stream,
            group=self.group,
            detail="the stream or its consumer group was gone; made again from the stream's start",
        )
        return True

    async def _read_new(self) -> list[tuple[str, dict[str, str]]]:
        reply: Any = await self._redis.xreadgroup(
            self.group, self.consumer, {self.stream: ">"}, count=self._batch, block=BLOCK_MS
        )
        entries: list[tuple[str, dict[str, str]]] = []
        for _stream, items in reply or []:
            entries.extend((entry_id, fields or {}) for entry_id, fields in items)
        return entries

    async def _reclaim(self) -> list[tuple[str, dict[str, str]]]:
        """Take over entries other consumers (alive or dead) left idle past ``--claim-idle``."""
        now = time.monotonic()
        if now - self._last_claim < min(5.0, self._claim_idle_ms / 2000):
            return []
        self._last_claim = now
        reply: Any = await self._redis.xautoclaim(
            self.stream, self.group, self.consumer, self._claim_idle_ms, "0-0", count=self._batch
        )
        claimed = [(entry_id, fields) for entry_id, fields in reply[1] if fields is not None]
        # Our own slow entries may come back too: they are still being worked on here.
        fresh = [(entry_id, fields) for entry_id, fields in claimed if entry_id not in self._held]
        if fresh:
            log.info("cleanup.queue_reclaimed", stream=self.stream, entries=len(fresh))
        return fresh

    async def _drained(self) -> bool:
        """True when the group has no undelivered entries and none pending (anyone's)."""
        info = await self._group_info()
        if info is None:
            return True
        lag = info.get("lag")
        return int(info.get("pending") or 0) == 0 and (lag is None or int(lag) == 0)

    async def _tidy(self) -> None:
        """Every ``TRIM_EVERY`` seconds and when drained: trim, and forget the consumers that
        died without leaving (kill -9, a node lost) once their entries were reclaimed and they
        have been silent for ``FORGET_IDLE`` seconds."""
        self._last_trim = time.monotonic()
        await self._trimmer.trim(self.acked)
        with contextlib.suppress(RedisError):
            forgotten = await self._forget_consumers(
                lambda c: int(c.get("idle") or 0) >= FORGET_IDLE * 1000
            )
            if forgotten:
                log.info("cleanup.queue_consumers_forgotten", group=self.group, consumers=forgotten)

    def _item(self, entry_id: str, fields: dict[str, str]) -> SourceItem:
        self._held[entry_id] = fields.get("message") or None
        source = f"{self.stream}/{entry_id}"
        task_id = as_text(fields.get("task_id", ""))
        project = as_text(fields.get("project_id") or "") or self._default_project
        if not task_id:
            return skipped("", project or "", source, 0, "bad_line", _no_task_id(fields), entry_id)
        message = fields.get("message") or self._message
        return check_task(self._validator, task_id, project, source, 0, message, entry_id)

    async def acknowledge(self, results: Sequence[TaskResult]) -> None:
        """XACK settled entries; dead-letter the failed and invalid ones in the same MULTI."""
        settle = [r for r in results if r.ack and r.outcome is not Outcome.NOT_ATTEMPTED]
        for r in results:
            if r.ack and r.outcome is Outcome.NOT_ATTEMPTED:
                self._held.pop(r.ack, None)  # left pending: another consumer reclaims it
        if not settle:
            return
        try:
            dead = await self._dead.settle(settle, self._held)
        except RedisError as exc:
            # Pending still, and held here: acknowledged again before the next read, once
            # Redis takes it (``_ack_again``). Should this consumer die first, another one
            # reclaims them and sends them again (404 -> absent).
            log.warning(
                "cleanup.queue_ack_failed",
                entries=len(settle),
                error=str(exc)[:200],
                detail="acknowledged again once Redis takes it",
            )
            self._unacked.extend(settle)
            return
        self._settled(settle, dead)

    async def _ack_again(self) -> None:
        """Acknowledge the entries whose XACK failed (Redis restarting, a failover, a permission
        taken away a while). Left alone they stay pending for good: this consumer does not
        reclaim what it holds, and a drain would wait for them for ever. A RedisError goes to
        the read loop, which backs off and calls again."""
        # Taken off first: the sink may add more while this one waits on Redis.
        settle, self._unacked = self._unacked, []
        try:
            dead = await self._dead.settle(settle, self._held)
        except RedisError:
            self._unacked[:0] = settle
            raise
        self._settled(settle, dead)
        log.info("cleanup.queue_acked_again", entries=len(settle))

    def _settled(self, settle: list[TaskResult], dead: int) -> None:
        for r in settle:
            if r.ack:
                self._held.pop(r.ack, None)
        self.acked += len(settle)
        self.dead_lettered += dead

    async def aclose(self) -> None:
        """Leave the group if nothing is pending here (else others reclaim it), and close."""
        with anyio.move_on_after(2), contextlib.suppress(RedisError):
            await self._forget_consumers(lambda c: as_text(c["name"]) == self.consumer)
        await self._redis.aclose()

    async def _forget_consumers(self, which: Callable[[dict[str, Any]], bool]) -> int:
        """XGROUP DELCONSUMER each consumer ``which`` picks that has nothing pending.

        Every pod or process is a consumer of its own name, and the group keeps each one for
        ever: months of restarts and rollouts leave thousands. One with entries pending is
        kept, as deleting it would drop them; they are reclaimed first."""
        consumers: Any = await self._redis.xinfo_consumers(self.stream, self.group)
        gone = 0
        for consumer in consumers:
            if int(consumer.get("pending") or 0) == 0 and which(consumer):
                await self._redis.xgroup_delconsumer(self.stream, self.group, consumer["name"])
                gone += 1
        return gone
