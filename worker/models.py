"""Value objects the pipeline stages exchange: frozen dataclasses and enums, never loose dicts."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Outcome(enum.StrEnum):
    """What finally happened to one task (PRODUCT.md, "Outcomes")."""

    DELETED = "deleted"
    ABSENT = "absent"
    REJECTED = "rejected"
    FAILED = "failed"
    SKIPPED = "skipped"
    NOT_ATTEMPTED = "not_attempted"
    WOULD_DELETE = "would_delete"

    @property
    def is_success(self) -> bool:
        return self in (Outcome.DELETED, Outcome.ABSENT)

    @property
    def is_failure(self) -> bool:
        return self in (Outcome.REJECTED, Outcome.FAILED)


@dataclass(frozen=True, slots=True)
class TaskRef:
    """One task read from a source, before it is sent.

    ``line`` is the 1-based line (or entry number) in ``source``; ``ack`` is an opaque token a
    queue source uses to acknowledge the entry once its outcome is recorded.
    """

    task_id: str
    project_id: str
    source: str
    line: int
    message: str | None = None
    ack: str | None = None


@dataclass(frozen=True, slots=True)
class TaskResult:
    """The final record of one task: one line of the outcomes file, one row of the journal."""

    task_id: str
    project_id: str
    outcome: Outcome
    status: int | None = None
    attempts: int = 0
    error_code: str | None = None
    error_msg: str | None = None
    request_id: str | None = None
    elapsed_ms: float = 0.0
    source: str = ""
    line: int = 0
    ack: str | None = None

    def as_record(self) -> dict[str, object]:
        """The outcome line's fields, in a stable order (the ack token is internal)."""
        return {
            "task_id": self.task_id,
            "project_id": self.project_id,
            "outcome": self.outcome.value,
            "status": self.status,
            "attempts": self.attempts,
            "error_code": self.error_code,
            "error_msg": self.error_msg,
            "request_id": self.request_id,
            "elapsed_ms": round(self.elapsed_ms, 3),
            "source": self.source,
            "line": self.line,
        }


@dataclass(frozen=True, slots=True)
class ApiResponse:
    """One HTTP answer from the DCS API, with the error body already parsed (never raises)."""

    status: int
    error_code: str | None
    error_msg: str | None
    request_id: str | None
    retry_after: float | None
    elapsed_ms: float
