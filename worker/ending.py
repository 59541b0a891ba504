"""The end of a run: its report, the summary table, and the warnings a run that ended 0 may
still owe (no task in the input, none of the tasks existed, the outcomes file deleted under it).
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any

from worker.logs import GuardedStream, get_logger
from worker.models import EXIT_ABORTED, RunEnd
from worker.pipeline import Pipeline
from worker.report import RunStats, write_report
from worker.settings import Settings
from worker.shards import ShardFilter, unsharded
from worker.sources import BAD_INPUT, TaskSource
from worker.summary import summary_table

log = get_logger()


def announce_end(report: dict[str, Any], stream: IO[str] | None) -> None:
    _tell_no_task_read(report)
    _tell_nothing_to_retry(report)
    _tell_none_existed(report)
    log.info(
        "cleanup.run_finished",
        run_id=report["run_id"],
        exit_code=report["exit_code"],
        stop_reason=report["stop_reason"],
        outcomes={k: v for k, v in report["outcomes"].items() if v},
        requests=report["requests"],
        duration_s=report["duration_s"],
    )
    print(summary_table(report), file=GuardedStream(stream or sys.stderr), flush=True)


def end_unsent(
    settings: Settings,
    stats: RunStats,
    run_id: str,
    reason: str,
    detail: str,
    summary_stream: IO[str] | None = None,
) -> dict[str, Any]:
    """A run stopped before it read a task (its credentials remembered as refused, or the GET
    of a ``--processes`` parent or a dry run answered as no run may go on): the report (no
    task, the requests it sent) written and the summary shown as for any run, exit 3. Returns
    it."""
    stats.finished = time.time()
    extra = {"stop_detail": detail, "input_fully_read": False}
    report = stats.build_report(
        run_id=run_id,
        settings=settings.public_view(),
        exit_code=EXIT_ABORTED,
        stop_reason=reason,
        extra=extra,
    )
    save_report(settings, report)
    announce_end(report, summary_stream)
    return report


def tell_outcomes_deleted(settings: Settings, journal_kept: bool) -> None:
    """``--outcomes`` deleted during the run took its lines along, every write having
    succeeded: say so, and where the outcomes are still to be had."""
    again = (
        f"dcs-cleanup report --journal {settings.journal} --outcomes NEW_FILE writes them again"
        if journal_kept and settings.journal is not None
        else "the run's journal was temporary (no --journal), so only the report's counts remain"
    )
    log.warning(
        "cleanup.outcomes_deleted",
        path=str(settings.outcomes),
        detail=f"the file was deleted while the run wrote it, and its lines with it; {again}",
    )


def _tell_no_task_read(report: dict[str, Any]) -> None:
    """An input read to its end that held no task to send ends 0, as the contract says of
    skipped lines, with nothing else to tell it from a done job: a list step that wrote an
    empty file, or the wrong file given (every line bad input). Say so once, as a warning."""
    settings = report["settings"]
    source = settings.get("input")
    tasks = report["tasks"]
    if (
        source is None
        or settings.get("shard") is not None  # a shard of a small input may hold none
        or settings.get("shard_count") is not None
        or report["stop_reason"] is not None
        or not report["input_fully_read"]
        or tasks != report["outcomes"]["skipped"]
        or not set(report["skipped_reasons"]) <= BAD_INPUT
    ):
        return
    if tasks == 0:
        detail = "it holds no task lines (nothing, or blank and # comment lines only)"
    else:
        detail = f"all {tasks:,} of its lines were skipped as bad input: the wrong file?"
    log.warning("cleanup.input_held_no_tasks", input=source, detail=detail)


def _tell_nothing_to_retry(report: dict[str, Any]) -> None:
    """``--retry-failed`` over a journal whose tasks all ended: the summary's empty table alone
    did not say whether that was the journal or the run (say, a retry step in a CronJob that
    found nothing after a clean night)."""
    settings = report["settings"]
    if settings.get("retry_failed") and report["tasks"] == 0 and report["stop_reason"] is None:
        log.info(
            "cleanup.nothing_to_retry",
            journal=settings.get("journal"),
            detail="the journal holds no failed, not_attempted or unfinished task",
        )


def _tell_none_existed(report: dict[str, Any]) -> None:
    """Every task sent was ``absent`` (404) and none deleted: exit 0, a success by the contract,
    as for a job whose tasks were gone already. It is also all that IDs from another region or
    project than the run's get, which nothing else would tell. Say so once, as a warning."""
    counts = report["outcomes"]
    absent = counts["absent"]
    if (
        not absent
        or report["stop_reason"] is not None
        or counts["deleted"]
        or counts["rejected"]
        or counts["failed"]
    ):
        return
    settings = report["settings"]
    where = settings.get("endpoint") or f"--region {settings.get('region')}"
    log.warning(
        "cleanup.no_task_existed",
        absent=absent,
        endpoint=where,
        project_id=settings.get("project_id"),
        detail=(
            f"all {absent:,} tasks sent were absent (404) and none was deleted: gone already, "
            f"or the IDs are from another region or project than {where}"
        ),
    )


def save_report(settings: Settings, report: dict[str, Any]) -> None:
    """Write ``--report``; a failure now (disk full) is logged, not raised: every outcome is
    already in the journal, and the log line says how to render the report again from it (a
    temporary journal, without ``--journal``, is gone: then it says so)."""
    if settings.report is None:
        return
    try:
        write_report(settings.report, report)
    except OSError as exc:
        again = (
            f"dcs-cleanup report --journal {settings.journal} --report NEW_FILE"
            if settings.journal is not None
            else "not from this run: it had no --journal; its counts are in the summary"
        )
        log.error("cleanup.report_failed", path=str(settings.report), error=str(exc), again=again)


def build_report(
    settings: Settings,
    stats: RunStats,
    pipeline: Pipeline,
    end: RunEnd,
    run_id: str,
    source: TaskSource,
) -> dict[str, Any]:
    extra: dict[str, Any] = {
        "rate": {
            "final": pipeline.limiter.rate,
            "adaptive": pipeline.adaptive is not None,
            **(pipeline.adaptive.summary() if pipeline.adaptive is not None else {}),
            "quota_stated": None if (q := pipeline.quota_stated) is None else round(q, 2),
        },
    }
    if isinstance(source, ShardFilter):
        extra["shard"] = {
            "index": source.index,
            "count": source.count,
            "other_shards": source.other_shards,
        }
    inner = unsharded(source)
    queue = sys.modules.get("worker.queue")  # loaded only if a run used Redis
    if queue is not None and isinstance(inner, queue.RedisStreamSource):
        extra["queue"] = {
            "stream": inner.stream,
            "group": inner.group,
            "consumer": inner.consumer,
            "acked": inner.acked,
            "dead_lettered": inner.dead_lettered,
            "dead_letter_stream": inner.dead_letter,
            "trimmed": inner.trimmed,
        }
    budget, breaker = pipeline.budget, pipeline.breaker
    return stats.build_report(
        run_id=run_id,
        settings=settings.public_view(),
        exit_code=end.exit_code,
        stop_reason=end.stop_reason,
        extra={
            "stop_detail": pipeline.stop_detail,
            "input_fully_read": pipeline.input_fully_read,
            "retry_budget": {
                "capacity": budget.capacity,
                "remaining": round(budget.tokens, 2),
                "denied": budget.denied,
            },
            "breaker": {
                "window": breaker.window,
                "threshold": breaker.threshold,
                "opened": breaker.opened,
            },
            "journal": str(settings.journal) if settings.journal else None,
            **extra,
        },
    )
