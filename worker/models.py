"""Value objects the pipeline stages exchange: immutable named tuples and enums, never loose dicts.

Named tuples rather than frozen dataclasses: several are built for every task, and a frozen
dataclass's ``__init__`` (one ``object.__setattr__`` per field) costs about 2.5 times as much.
"""

from __future__ import annotations

import enum
import time
import uuid
from dataclasses import dataclass
from typing import NamedTuple


def new_run_id() -> str:
    """A run's ID: when it started (UTC, to the second) and 8 random hex digits."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:8]


class Outcome(enum.StrEnum):
    """What finally happened to one task (PRODUCT.md, "Outcomes")."""

    DELETED = "deleted"
    ABSENT = "absent"
    REJECTED = "rejected"
    FAILED = "failed"
    SKIPPED = "skipped"
    NOT_ATTEMPTED = "not_attempted"
    WOULD_DELETE = "would_delete"


SUCCESSES = frozenset({Outcome.DELETED, Outcome.ABSENT})
FAILURES = frozenset({Outcome.REJECTED, Outcome.FAILED})

# The exit codes of PRODUCT.md, and the stop reasons that end a run with exit 3 (aborted).
EXIT_OK, EXIT_FAILURES, EXIT_USAGE, EXIT_ABORTED, EXIT_INTERRUPTED = 0, 1, 2, 3, 4
ABORT_REASONS = frozenset(
    {
        "credentials_refused",
        "clock_skew",
        "api_not_found",
        "not_dcs_api",
        "redirected",
        "tls_untrusted",
        "tls_mismatch",
        "circuit_open",
        "forbidden",
        "max_deletes",
        "journal_error",
        "output_error",
        "input_error",
        "rate_limit_error",
    }
)


@dataclass(frozen=True, slots=True)
class RunEnd:
    """How a run ended: its exit code, and why it stopped early (None: it did not)."""

    exit_code: int
    stop_reason: str | None


class TaskRef(NamedTuple):
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


class TaskResult(NamedTuple):
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
    run_id: str | None = None  # set when read back from the journal; a run's writer adds its own

    def as_record(self) -> dict[str, object]:
        """The outcome line's fields, in a stable order (the ack token is internal; the run's
        ID is added by the writer)."""
        return {
            "task_id": self.task_id,
            "project_id": self.project_id,
            "outcome": self.outcome,  # a StrEnum: orjson and json write its value
            "status": self.status,
            "attempts": self.attempts,
            "error_code": self.error_code,
            "error_msg": self.error_msg,
            "request_id": self.request_id,
            "elapsed_ms": round(self.elapsed_ms, 3),
            "source": self.source,
            "line": self.line,
        }


# The gateway's 401 for a request date more than 15 minutes off (APIG: the older gateway's prefix).
CLOCK_REFUSED = frozenset({"APIGW.0303", "APIG.0303"})
CLOCK_LIMIT_S = 15 * 60  # the gateway refuses an X-Sdk-Date further than this from its clock
# The gateway's 404 for a path or method it has no API for (another service's endpoint, a region
# without the task center): not a task that is gone. Huawei's APIG error codes page.
NO_SUCH_API = frozenset({"APIGW.0101", "APIG.0101"})
# Not a server's code: the client's, for a 2xx answered with a web page (a login portal, a web
# server taking any method). DCS answers a DELETE with nothing, and its list with JSON.
HTML_PAGE = "HTML_PAGE"


class ApiResponse(NamedTuple):
    """One HTTP answer from the DCS API, with the error body already parsed (never raises)."""

    status: int
    error_code: str | None
    error_msg: str | None
    request_id: str | None
    retry_after: float | None
    elapsed_ms: float
