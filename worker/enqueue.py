"""The producer: ``dcs-cleanup enqueue`` puts task IDs on the Redis stream that consumers
(``worker.queue``) read, one entry a task, in the format that module's docstring gives.

It adds in pipelined batches and records how far it got as it goes, so a Redis that fills up or
goes away part-way, or a signal, leaves a line to go on from (``--from-line``) and no task added
twice; with ``max_backlog`` it waits while the stream is that long, so feeding millions of IDs
keeps Redis's memory bounded while consumers trim.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from worker.errors import ConfigError
from worker.models import TaskRef, TaskResult
from worker.redis_client import (
    check_cluster_stream,
    check_reachable,
    clause,
    describe,
    open_client,
    unreachable,
)
from worker.settings import redact_url
from worker.sources import SourceItem


@dataclass
class Enqueued:
    """What ``enqueue`` did, kept up to date as it goes (a stop reads it): tasks added, bad
    lines (the first ``examples`` of them kept), the first line not yet handled, and, if Redis
    refused or went away part-way, the first line not added and why. ``last_line``: the last
    line read that held a task or a bad line."""

    next_line: int = 1
    last_line: int = 0
    added: int = 0
    bad: int = 0
    shown: list[TaskResult] = field(default_factory=list)
    stopped_at: int | None = None
    error: str | None = None


async def open_stream(url: str, stream: str, *, doing: str = "nothing was added") -> aioredis.Redis:
    """A client for the Redis at ``url``, checked before the input is read: a stream name a
    Redis Cluster cannot serve, a Redis not reachable or refusing the URL's user are exit 2
    (``ConfigError``). An input without IDs never spoke to Redis, so a wrong ``--queue``
    passed, exit 0, until the day it had some."""
    client = await open_client(url)
    try:
        check_cluster_stream(client, stream)
        try:
            await check_reachable(client)
        except RedisError as exc:
            msg = f"--queue {redact_url(url)}: {clause(unreachable(exc))}; {doing}"
            raise ConfigError(msg) from None
    except BaseException:
        with anyio.CancelScope(shield=True):
            await client.aclose()
        raise
    return client


async def enqueue(
    client: aioredis.Redis,
    stream: str,
    items: AsyncGenerator[list[SourceItem], None],
    done: Enqueued,
    *,
    message: str | None = None,
    examples: int = 100,
    max_backlog: int = 0,
    waiting: Callable[[int], None] | None = None,
) -> None:
    """XADD every valid task from ``done.next_line`` on, in pipelined batches, recording the
    progress in ``done``. Memory stays flat however many lines are bad. With ``max_backlog``,
    wait (calling ``waiting`` with the stream's length at each look) while the stream holds
    that many entries, so consumers keep Redis's memory bounded. A Redis error part-way stops
    it, naming the first line not added: the entries before it stay, so a second enqueue goes
    on from there. Cancelled (a signal), it stops between two pipelines, never inside one."""
    from_line = done.next_line
    async for batch in items:
        if batch:
            done.last_line = batch[-1].line
        refs: list[TaskRef] = []
        for item in batch:
            if item.line < from_line:
                continue
            if isinstance(item, TaskResult):
                done.bad += 1
                if len(done.shown) < examples:
                    done.shown.append(item)
            else:
                refs.append(item)
        while refs:
            chunk = refs
            try:
                if max_backlog:
                    chunk = refs[: await room_for(client, stream, max_backlog, waiting)]
                with anyio.CancelScope(shield=True):
                    async with client.pipeline(transaction=False) as pipe:
                        for ref in chunk:
                            pipe.xadd(stream, entry_fields(ref, message))
                        replies = await pipe.execute(raise_on_error=False)
            except RedisError as exc:
                done.stopped_at, done.error = chunk[0].line, describe(exc)
                return
            refused = [i for i, reply in enumerate(replies) if isinstance(reply, Exception)]
            done.added += len(chunk) - len(refused)
            if refused:
                done.stopped_at = chunk[refused[0]].line
                done.error = describe(replies[refused[0]])
                return
            done.next_line = chunk[-1].line + 1
            refs = refs[len(chunk) :]
        done.next_line = max(done.next_line, batch[-1].line + 1)


def entry_fields(ref: TaskRef, message: str | None) -> dict[Any, Any]:
    fields: dict[Any, Any] = {"task_id": ref.task_id, "project_id": ref.project_id}
    text = ref.message or message
    if text:
        fields["message"] = text
    return fields


async def room_for(
    client: aioredis.Redis,
    stream: str,
    max_backlog: int,
    waiting: Callable[[int], None] | None,
) -> int:
    """Wait until the stream holds fewer than ``max_backlog`` entries (consumers trim it);
    return how many more it may take."""
    while (length := int(await client.xlen(stream))) >= max_backlog:
        if waiting is not None:
            waiting(length)
        await anyio.sleep(0.5)
    return max_backlog - length
