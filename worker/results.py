"""One task's outcome as the run records it (``TaskResult``): from the last answer to its
request (``make_result``, which also logs a failure), for a task the run stopped before
sending (``unsent``) or one the journal passed over (``skip``); and an answer in a few words
for logs and abort details (``describe``).
"""

from __future__ import annotations

import time

from worker.errors import TransportError
from worker.logs import debug_enabled, get_logger
from worker.models import FAILURES, ApiResponse, Outcome, TaskRef, TaskResult
from worker.policy import refusal

log = get_logger()


def make_result(
    ref: TaskRef,
    outcome: Outcome,
    last: ApiResponse | TransportError | None,
    attempts: int,
    started: float,
    note: str | None = None,
) -> TaskResult:
    status = code = msg = request_id = None
    if isinstance(last, ApiResponse):
        status, code, msg, request_id = (
            last.status,
            last.error_code,
            last.error_msg,
            last.request_id,
        )
    elif isinstance(last, TransportError):
        code, msg = last.kind, last.detail
    if note:
        msg = f"{msg} ({note})" if msg else note
    result = TaskResult(
        task_id=ref.task_id,
        project_id=ref.project_id,
        outcome=outcome,
        status=status,
        attempts=attempts,
        error_code=code,
        error_msg=msg,
        request_id=request_id,
        elapsed_ms=(time.perf_counter() - started) * 1000.0,
        source=ref.source,
        line=ref.line,
        ack=ref.ack,
    )
    if outcome in FAILURES:
        log.warning(
            "cleanup.task_" + outcome.value,
            task_id=ref.task_id,
            project_id=ref.project_id,
            status=status,
            attempts=attempts,
            error_code=code,
            error_msg=msg,
            request_id=request_id,
        )
    elif debug_enabled():
        log.debug(
            "cleanup.task_done",
            task_id=ref.task_id,
            outcome=outcome.value,
            status=status,
            attempts=attempts,
        )
    return result


def unsent(ref: TaskRef, reason: str | None) -> TaskResult:
    return TaskResult(
        task_id=ref.task_id,
        project_id=ref.project_id,
        outcome=Outcome.NOT_ATTEMPTED,
        error_code=reason,
        source=ref.source,
        line=ref.line,
        ack=ref.ack,
    )


def skip(ref: TaskRef, reason: str) -> TaskResult:
    text = {
        "duplicate": "duplicate of an earlier line",
        "already_done": "an earlier run already ended it deleted or absent",
    }.get(reason, reason)
    return TaskResult(
        task_id=ref.task_id,
        project_id=ref.project_id,
        outcome=Outcome.SKIPPED,
        error_code=reason,
        error_msg=f"{ref.source}:{ref.line}: {text}",
        source=ref.source,
        line=ref.line,
        ack=ref.ack,
    )


def log_retry(ref: TaskRef, attempt: int, delay: float, last: ApiResponse | TransportError) -> None:
    log.debug(
        "cleanup.retry_scheduled",
        task_id=ref.task_id,
        attempt=attempt,
        wait_for=round(delay, 3),
        cause=describe(last),
    )


def describe(answer: ApiResponse | TransportError | None) -> str:
    if answer is None:
        return "none"
    if isinstance(answer, TransportError):
        return str(answer)
    text = f"HTTP {answer.status} {answer.error_code or ''}".strip()
    said = _STOP_SAYS.get(refusal(answer) or "")
    if said is not None:
        text += f": {answer.error_msg or 'an empty body'}{said}"
    return text


IS_IT_DCS = "is it DCS's (https://dcs.REGION.myhuaweicloud.com)?"
# What follows the answer's own message for the answers that stop a whole run (``refusal``).
# clock_skew: the signature's time, not the key, which the client's message already says with
# how far off the clock is; said before anyone rotates a good AK/SK.
_STOP_SAYS = {
    "credentials_refused": (
        "; credentials refused: check CLOUD_SDK_AK and CLOUD_SDK_SK, and for temporary"
        " credentials CLOUD_SDK_SECURITY_TOKEN and its expiry"
    ),
    "clock_skew": "",
    "api_not_found": f"; the gateway has no such API at this endpoint: {IS_IT_DCS}",
    "not_dcs_api": f"; the endpoint does not answer as DCS's API does: {IS_IT_DCS}",
    "redirected": f"; an API endpoint does not redirect its calls: {IS_IT_DCS}",
}
