"""``dcs-cleanup redrive``: dead letters back on the stream, once what failed them is mended.

A consumer copies the entries it settles as ``failed`` (retries outlasted: an outage, a quota)
or ``rejected`` to ``<stream>:dead`` (``worker.dead_letters``), and a run of the stream never
reads them again. This puts the chosen ones (``failed`` by default) back on the stream as new
entries (``task_id``, ``project_id``, and the ``message`` the entry was written with, else
``--message``), then deletes their dead letters: in pages, each added by one pipeline and its
dead letters deleted once Redis took every XADD, so a failure or a signal between two steps
leaves a task on both (re-sent, it comes back ``absent``), never on neither.
It reads the dead letters there were when it started, not those the tasks it re-added may
come to make. Invalid entries (``skipped``) are never re-added: they would be skipped again.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import anyio
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from worker.enqueue import entry_fields, room_for
from worker.models import TaskRef
from worker.redis_client import as_text, dead_letter_key, describe
from worker.report import failure_reason

PAGE = 500


@dataclass
class Redriven:
    """What a redrive did (or, dry, would do), kept up to date as it goes (a stop reads it):
    dead letters re-added, counted by outcome and by ``outcome error_code``; how many the dead
    letter stream held when it began; the error Redis stopped it with."""

    added: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    held: int = 0
    error: str | None = None


async def redrive(
    client: aioredis.Redis,
    stream: str,
    outcomes: Collection[str],
    done: Redriven,
    *,
    dry_run: bool = False,
    message: str | None = None,
    max_backlog: int = 0,
    waiting: Callable[[int], None] | None = None,
    limit: int | None = None,
) -> None:
    """Re-add the dead letters of ``stream`` whose outcome is one of ``outcomes`` (the oldest
    ``limit`` of them, if given: a few first, to watch them go through), recording the
    progress in ``done``. A Redis error stops it (``done.error``); what was re-added stays
    re-added. Cancelled (a signal), it stops between two pages' steps, never inside one."""
    dead = dead_letter_key(stream)
    try:
        newest: Any = await client.xrevrange(dead, count=1)
        if not newest:
            return
        done.held = int(await client.xlen(dead))
        end, start = as_text(newest[0][0]), "-"
        while True:
            page: Any = await client.xrange(dead, min=start, max=end, count=PAGE)
            if not page:
                return
            start = "(" + as_text(page[-1][0])
            chosen = [(as_text(i), f) for i, f in page if f.get("outcome") in outcomes]
            if limit is not None:
                chosen = chosen[: limit - done.added]
            if chosen and not dry_run:
                await _move(client, stream, dead, chosen, message, max_backlog, waiting, done)
            if dry_run:
                _count(done, chosen)
            if done.error is not None or (limit is not None and done.added >= limit):
                return
    except RedisError as exc:
        done.error = describe(exc)


async def _move(
    client: aioredis.Redis,
    stream: str,
    dead: str,
    chosen: list[tuple[str, dict[str, str]]],
    message: str | None,
    max_backlog: int,
    waiting: Callable[[int], None] | None,
    done: Redriven,
) -> None:
    """Re-add ``chosen``, then delete the dead letters of those Redis took (up to the first it
    refused, which stops the redrive)."""
    while chosen:
        part = chosen
        if max_backlog:
            part = chosen[: await room_for(client, stream, max_backlog, waiting)]
        with anyio.CancelScope(shield=True):
            async with client.pipeline(transaction=False) as pipe:
                for _, fields in part:
                    ref = TaskRef(
                        fields.get("task_id", ""),
                        fields.get("project_id", ""),
                        "",
                        0,
                        fields.get("message") or None,  # the entry's own, over --message
                    )
                    pipe.xadd(stream, entry_fields(ref, message))
                replies = await pipe.execute(raise_on_error=False)
            refused = [n for n, reply in enumerate(replies) if isinstance(reply, Exception)]
            taken = part[: refused[0]] if refused else part
            _count(done, taken)  # on the stream now, whether or not their dead letters go
            if taken:
                await client.xdel(dead, *(entry for entry, _ in taken))
        if refused:
            done.error = describe(replies[refused[0]])
            return
        chosen = chosen[len(part) :]


def _count(done: Redriven, letters: list[tuple[str, dict[str, str]]]) -> None:
    done.added += len(letters)
    for _, fields in letters:
        outcome = fields.get("outcome", "")
        done.outcomes[outcome] += 1
        why = failure_reason(fields.get("error_code"), fields.get("status"))
        done.reasons[f"{outcome} {why}"] += 1
