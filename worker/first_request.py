"""A run's first request, and what goes before it.

Credentials remembered as refused (``refusals``, in a Redis or a ``--refusal-file``) stop a run
before it sends anything. A probe, one signed ListCenterTask GET (the dry run's; a
``--processes`` parent's, before it forks), goes in its turn among the runs with the same
credentials and Redis, as the pipeline's own first DELETE does (``turn_for``; with a file, a
turn of its own), and an answer that would stop a run stops it there. Either turn remembers
the first request's refusal.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import IO, Any, NamedTuple

import anyio

from worker.client import DcsClient
from worker.ending import end_unsent
from worker.errors import TransportError
from worker.logs import get_logger
from worker.models import EXIT_ABORTED, EXIT_USAGE, ApiResponse
from worker.policy import refusal
from worker.refusals import (
    FirstRequestTurn,
    Memory,
    Refusal,
    RefusalMemory,
    SoloTurn,
    Turn,
    memory_for,
    refused_before,
)
from worker.report import RunStats
from worker.results import describe
from worker.settings import Settings
from worker.signer import Signer

log = get_logger()


class Stop(NamedTuple):
    """How a run a probe stopped ends: the exit code (3 with a report, as any run stopped
    before its first DELETE; 2 without, as a configuration error), why, and in words."""

    exit_code: int
    reason: str
    detail: str


def _stops_the_run(answer: ApiResponse) -> str | None:
    """The stop reason, if a probe's answer is one that stops a whole run (``refusal``): then
    it is said."""
    reason = refusal(answer)
    if reason is not None:
        log.error(
            f"cleanup.{reason}",
            error_code=answer.error_code,
            error_msg=answer.error_msg,
            request_id=answer.request_id,
            detail=describe(answer),
        )
    return reason


async def _first_request(
    turn: Turn | None, send: Callable[[], Awaitable[ApiResponse]]
) -> ApiResponse | TransportError | Refusal:
    """A run's first request (a probe), in its turn among the runs with its credentials and
    Redis (``refusals.FirstRequestTurn``): the answer, why there was none, or the refusal that
    another run's first request met meanwhile (then nothing is sent)."""
    if turn is not None and (refused := await turn.wait(anyio.Event())) is not None:
        return refused
    try:
        answer: ApiResponse | TransportError = await send()
    except TransportError as exc:
        answer = exc
    except BaseException:  # no answer to wait for (a client refused to start, a stop)
        if turn is not None:
            await turn.aclose()  # the next run goes now, not when the turn lapses
        raise
    if turn is not None:
        await turn.landed(answer)  # refused credentials remembered, proved ones vouched for
    return answer


async def _checked(
    turn: Turn | None, send: Callable[[], Awaitable[ApiResponse]], stats: RunStats
) -> Stop | ApiResponse | TransportError:
    """A probe's first request, in its turn (counted in ``stats`` if sent): how the run ends
    for it (the credentials' refusal met while waiting, or an answer that stops a run, said),
    else the answer or why there was none."""
    answer = await _first_request(turn, send)
    if isinstance(answer, Refusal):
        return Stop(EXIT_ABORTED, "credentials_refused", answer.describe())
    stats.on_answer(answer)
    if isinstance(answer, ApiResponse) and (reason := _stops_the_run(answer)) is not None:
        return Stop(EXIT_ABORTED, reason, describe(answer))
    return answer


async def probe(
    client: DcsClient, settings: Settings, turn: Turn | None, stats: RunStats
) -> Stop | None:
    """Dry run: one signed ListCenterTask GET checks endpoint and credentials. None: fine;
    else how the run ends (no answer: exit 2)."""
    project = settings.project_id
    if project is None:
        return None
    checked = await _checked(turn, lambda: client.list_tasks(project), stats)
    if isinstance(checked, Stop):
        return checked
    if isinstance(checked, TransportError):
        log.error("cleanup.endpoint_unreachable", endpoint=settings.base_url(), error=str(checked))
        return Stop(EXIT_USAGE, "endpoint_unreachable", str(checked))
    log.info("cleanup.dry_run_probe", status=checked.status, error_code=checked.error_code)
    return None


async def parent_ended_first(settings: Settings, run_id: str, stats: RunStats) -> bool:
    """A ``--processes`` parent, before it forks: ``ended_before_sending`` with its GET. True:
    the run ended there (exit 3; its report written)."""
    memory = memory_for(settings, settings.credentials())
    try:
        return await ended_before_sending(settings, run_id, stats, memory, probe=True) is not None
    finally:
        if memory is not None:
            await memory.aclose()


async def ended_before_sending(
    settings: Settings,
    run_id: str,
    stats: RunStats,
    memory: Memory | None,
    *,
    probe: bool,
    summary_stream: IO[str] | None = None,
) -> dict[str, Any] | None:
    """What goes before a run's first DELETE; the report of a run it stops (exit 3), or None.

    The refusal memory (``refusals``): credentials remembered as refused stop the run. With
    ``probe`` (a ``--processes`` parent, before it forks), one signed ListCenterTask GET: each
    child's first request goes alone, but N children still sent N refused signatures for a
    wrong AK/SK (Huawei locks one after five), or N requests to an endpoint that is not DCS's,
    where an answer that stops a run now stops it here. Any other answer (a 403 for want of
    ``dcs:task:list``, a 5xx, none at all) is left to the children, which retry. The GET is
    counted in ``stats``, the run's. A run it stops writes its report and summary, no task read.
    """
    refused = await refused_before(memory) if memory is not None else None
    if refused is not None:
        detail = refused.describe()
        return end_unsent(settings, stats, run_id, "credentials_refused", detail, summary_stream)
    project = settings.project_id
    if not probe or project is None:
        return None
    turn = turn_of(memory, run_id, settings.timeout) if memory is not None else None
    checked = await _checked(turn, lambda: _first_get(settings, project), stats)
    if not isinstance(checked, Stop):  # any other answer, or none: left to the children
        return None
    return end_unsent(settings, stats, run_id, checked.reason, checked.detail, summary_stream)


async def _first_get(settings: Settings, project: str) -> ApiResponse:
    """One signed ListCenterTask GET on a client of its own (``TransportError`` if no answer)."""
    signer = Signer(settings.credentials())
    async with DcsClient(
        settings.base_url(), signer, concurrency=1, timeout=settings.timeout
    ) as client:
        return await client.list_tasks(project)


def turn_of(memory: Memory, run_id: str, timeout: float) -> Turn:
    """The turn of a run's first request: among the runs sharing its Redis, or (a file
    memory) a turn of its own, whose answer is remembered all the same."""
    if isinstance(memory, RefusalMemory):
        return FirstRequestTurn(memory, run_id, timeout)
    return SoloTurn(memory, run_id)


def turn_for(
    memory: Memory | None, run_id: str, timeout: float, stack: AsyncExitStack
) -> Turn | None:
    """The turn of the run's first request, if it has a refusal memory; the memory's client,
    and a turn a stopped run did not give back, are closed with ``stack``."""
    if memory is None:
        return None
    stack.push_async_callback(memory.aclose)
    turn = turn_of(memory, run_id, timeout)
    stack.push_async_callback(turn.aclose)
    return turn
