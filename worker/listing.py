"""``dcs-cleanup list``: the task center's tasks, paged through ListCenterTask, as an input for
``run``: one ID a line, or one JSON object a line (``run`` reads both).

Pages are offset-based, so tasks deleted while the list is read shift the pages under it and some
would be missed: write the list to a file first, then run it. The list ends at the answers'
``task_count`` (or, without one, at an empty page), never at a page shorter than asked: a gateway
may hold pages to fewer tasks than ``limit`` names. Each page is retried like a DELETE
(429 with Retry-After or 2-5 s, 5xx and network errors with jittered backoff); a page that cannot
be had stops the list with exit 3, since a part of a list passed on as the whole would be wrong.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

import anyio

from worker.client import DcsClient
from worker.errors import ConfigError, TransportError
from worker.logs import drop_lost_stream, get_logger
from worker.models import EXIT_ABORTED, EXIT_OK, ApiResponse, new_run_id
from worker.policy import decide, refusal
from worker.preflight import check_files
from worker.refusals import memory_for, refused_before
from worker.results import describe
from worker.settings import Settings
from worker.signer import Signer

log = get_logger()
TIME = re.compile(r"\d{14}")  # yyyyMMddHHmmss, UTC, as the list API takes it


def end_time_for(older_than_days: float, now: datetime | None = None) -> str:
    """The ``end_time`` that keeps tasks created more than ``older_than_days`` days ago."""
    moment = (now or datetime.now(UTC)) - timedelta(days=older_than_days)
    return moment.strftime("%Y%m%d%H%M%S")


def _is_time(value: str) -> bool:
    """yyyyMMddHHmmss and a real moment: a month 13 or a 31 November is not sent."""
    if not TIME.fullmatch(value):
        return False
    try:
        datetime.strptime(value, "%Y%m%d%H%M%S")
    except ValueError:
        return False
    return True


@dataclass
class Listed:
    """What ``list_tasks`` did, kept up to date as it goes (a stop reads it): tasks listed,
    tasks written, the last answer's ``task_count``, and the refusal of the credentials that
    stopped it, if one did."""

    listed: int = 0
    written: int = 0
    task_count: int | None = None
    refused: str | None = None


class ListFailed(Exception):  # noqa: N818 - a stop with its message, like AbortRun
    """A page could not be had: credentials refused, or an error that retries did not cure."""

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason  # why a whole run would stop for that answer (``refusal``)


async def list_remembering(
    settings: Settings, signer: Signer, out: TextIO, *, done: Listed, **filters: Any
) -> int:
    """``list_tasks`` with the run's refusal memory (``refusals``): credentials remembered as
    refused send nothing (exit 3), and credentials the list's request is refused for are
    remembered, so a nightly list and run with a wrong SK send one refused request, not one
    a night."""
    check_files([("--refusal-file", settings.refusal_path())], None)  # run's: check_outputs
    memory = memory_for(settings, settings.credentials())
    if memory is None:
        return await list_tasks(settings, signer, out, done=done, **filters)
    try:
        if await refused_before(memory) is not None:
            return EXIT_ABORTED
        code = await list_tasks(settings, signer, out, done=done, **filters)
        if done.refused is not None:
            await memory.remember(done.refused, "list-" + new_run_id())
        return code
    finally:
        await memory.aclose()


class _Progress:
    """A ``cleanup.list_progress`` line every ``interval`` seconds: a list of a million tasks
    pages for minutes, and its log said nothing until the end."""

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._next = time.monotonic() + interval

    def tell(self, done: Listed) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self._interval
        log.info(
            "cleanup.list_progress",
            listed=done.listed,
            written=done.written,
            task_count=done.task_count,
        )


async def list_tasks(
    settings: Settings,
    signer: Signer,
    out: TextIO,
    *,
    fmt: str = "ids",
    statuses: Collection[str] = (),
    names: Collection[str] = (),
    start_time: str | None = None,
    end_time: str | None = None,
    page_size: int = 1000,
    done: Listed | None = None,
) -> int:
    """Write every task that matches, page by page, counting in ``done``; the exit code."""
    project = settings.project_id
    if project is None:
        raise ConfigError("list needs --project-id")
    for name, value in (("--start-time", start_time), ("--end-time", end_time)):
        if value is not None and not _is_time(value):
            raise ConfigError(f"{name} {value!r}: give a real time as yyyyMMddHHmmss, in UTC")
    if start_time is not None and end_time is not None and start_time > end_time:
        msg = f"--start-time {start_time} is after the end time {end_time}: no task is between"
        raise ConfigError(msg)
    wanted_status = {s.upper() for s in statuses}
    wanted_name = {n.lower() for n in names}
    # What the filtered fields held, so a filter that matched nothing (a typo, a status
    # spelt another way) can say what there was. Bounded: a few values each in practice.
    seen: dict[str, Counter[str]] = {"status": Counter(), "name": Counter()}
    rng = random.Random()
    done = done if done is not None else Listed()
    offset = 0
    first: int | None = None  # the first page's task_count
    lowest: int | None = None  # and the lowest since
    progress = _Progress(settings.progress_interval)
    async with DcsClient(settings.base_url(), signer, concurrency=1, timeout=settings.timeout) as c:
        while True:
            try:
                page, done.task_count = await _page(
                    c, settings, project, offset, page_size, start_time, end_time, rng
                )
            except ListFailed as exc:
                log.error("cleanup.list_failed", offset=offset, listed=done.listed, error=str(exc))
                done.refused = str(exc) if exc.reason == "credentials_refused" else None
                return EXIT_ABORTED
            count = done.task_count
            if count is not None:
                first = count if first is None else first
                lowest = count if lowest is None else min(lowest, count)
            chosen = [
                task
                for task in page
                if (not wanted_status or str(task.get("status", "")).upper() in wanted_status)
                and (not wanted_name or str(task.get("name", "")).lower() in wanted_name)
            ]
            try:
                out.writelines(
                    task["id"] + "\n" if fmt == "ids" else json.dumps(task) + "\n"
                    for task in chosen
                )
                out.flush()
            except OSError as exc:  # a full disk, a closed pipe (list | head)
                drop_lost_stream(out)  # so that no flush at exit tries it again
                log.error("cleanup.list_failed", offset=offset, error=f"cannot write: {exc}")
                return EXIT_ABORTED
            if wanted_status or wanted_name:
                _tally(seen, page)
            done.written += len(chosen)
            done.listed += len(page)
            offset += len(page)
            if not page or (done.task_count is not None and offset >= done.task_count):
                break
            progress.tell(done)
    log.info(
        "cleanup.list_finished",
        listed=done.listed,
        written=done.written,
        task_count=done.task_count,
        project_id=project,
    )
    if first is not None and lowest is not None and lowest < first:
        _tell_count_fell(first, lowest)
    if done.listed and not done.written and (wanted_status or wanted_name):
        log.warning(
            "cleanup.list_filter_matched_nothing",
            status=sorted(statuses) or None,
            name=sorted(names) or None,
            statuses_seen=dict(seen["status"].most_common(_SEEN)),
            names_seen=dict(seen["name"].most_common(_SEEN)),
        )
    return EXIT_OK


def _tell_count_fell(first: int, lowest: int) -> None:
    """Tasks went while the list paged through them (a run deleting from this very list, fed
    by a pipe): pages are by offset, so every task deleted before the offset moved the rest
    back a place, and as many may never have been on a page. Say so: the list looks whole."""
    log.warning(
        "cleanup.list_count_fell",
        first_task_count=first,
        lowest_task_count=lowest,
        detail=(
            f"the task count fell by {first - lowest:,} while listing (tasks deleted meanwhile: "
            "by a run reading this list?); paging by offset may have passed over as many "
            "tasks, so list again once the deletes are done"
        ),
    )


_SEEN = 20  # values of a field the warning names, the commonest first
_SEEN_CAP = 1000  # distinct values of a field counted at most


def _tally(seen: dict[str, Counter[str]], page: list[dict[str, Any]]) -> None:
    for field, counts in seen.items():
        for task in page:
            value = str(task.get(field, ""))[:100]
            if value in counts or len(counts) < _SEEN_CAP:
                counts[value] += 1


async def _page(
    client: DcsClient,
    settings: Settings,
    project: str,
    offset: int,
    limit: int,
    start_time: str | None,
    end_time: str | None,
    rng: random.Random,
) -> tuple[list[dict[str, Any]], int | None]:
    """One page of tasks and the answer's ``task_count`` (None if it has no number), retried
    as a DELETE would be; ``ListFailed`` if it cannot be had."""
    attempt = 0
    while True:
        attempt += 1
        body: list[bytes] = []
        answer: ApiResponse | TransportError
        try:
            answer = await client.list_tasks(
                project, offset, limit, start_time=start_time, end_time=end_time, body=body
            )
        except TransportError as exc:
            answer = exc
        if (
            isinstance(answer, ApiResponse)
            and 200 <= answer.status < 300
            and answer.error_code is None  # else a web page (HTML_PAGE): not a list
        ):
            return _tasks(body[0] if body else b"", offset)
        decision = decide(
            answer,
            attempt,
            settings.max_attempts,
            base=settings.backoff_base,
            cap=settings.backoff_cap,
            max_retry_after=settings.max_retry_after,
            rng=rng,
        )
        if decision.outcome is not None:  # refused (401, other 4xx), or out of attempts
            why = refusal(answer) if isinstance(answer, ApiResponse) else None
            raise ListFailed(_why(answer, attempt), why)
        log.warning("cleanup.list_retry", offset=offset, attempt=attempt, delay_s=decision.delay)
        await anyio.sleep(decision.delay)


def _tasks(raw: bytes, offset: int) -> tuple[list[dict[str, Any]], int | None]:
    try:
        answer = json.loads(raw)
        tasks = answer["tasks"]
    except (ValueError, KeyError, TypeError) as exc:
        msg = f"the page at offset {offset} is not a task list ({type(exc).__name__}: {exc})"
        raise ListFailed(msg[:300]) from None
    if not isinstance(tasks, list) or not all(
        isinstance(t, dict) and isinstance(t.get("id"), str) for t in tasks
    ):
        msg = f"the page at offset {offset} is not a task list: no list of tasks with an id"
        raise ListFailed(msg)
    try:  # a string in the API's answers ("task_count": "42")
        count: int | None = int(answer.get("task_count"))
    except (TypeError, ValueError):
        count = None
    return tasks, count


def _why(answer: ApiResponse | TransportError, attempts: int) -> str:
    if isinstance(answer, TransportError):
        return f"{answer} (after {attempts} attempt(s))"
    if refusal(answer) is not None:  # the key, the clock, no such API, not DCS's, a redirect
        text = describe(answer)
    else:
        text = f"HTTP {answer.status} {answer.error_code or ''} {answer.error_msg or ''}".strip()
    return f"{text} (after {attempts} attempt(s))"
