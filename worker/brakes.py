"""The brakes: what a run reads from every answer besides its task's own outcome.

* **Pacing**: throttling slows the whole run, not just the throttled task. A 429 lowers the
  adaptive rate (``--rate 0``, or a ceiling), and its ``Retry-After`` pauses the shared limiter.
* **The circuit breaker**: when most of the last ``--breaker-window`` answers failed (5xx, no
  answer), the service is down; sending the rest would only fail them all.
* **A row of 403s** (``--forbidden-limit``): the account lacks the permission, and every task left
  would be refused the same way.

``check`` returns the abort it calls for, as (stop reason, detail); the pipeline stops the run.
"""

from __future__ import annotations

from worker.adaptive import AdaptiveRate
from worker.answers import stated_quota
from worker.errors import TransportError
from worker.models import ApiResponse
from worker.policy import CircuitBreaker, Limiter, RateLimiter
from worker.results import describe
from worker.settings import Settings


class Brakes:
    """Pacing, the breaker and the 403 row of one run (one process)."""

    __slots__ = (
        "_adaptive",
        "_breaker",
        "_forbidden_limit",
        "_limiter",
        "_max_pause",
        "_streak",
        "quota_stated",
    )

    def __init__(
        self,
        settings: Settings,
        limiter: Limiter,
        breaker: CircuitBreaker,
        adaptive: AdaptiveRate | None,
    ) -> None:
        self._limiter = limiter
        self._breaker = breaker
        self._adaptive = adaptive
        self._max_pause = settings.max_retry_after
        self._forbidden_limit = settings.forbidden_limit
        self._streak = 0  # HTTP 403 answers in a row
        # Requests a second the 429s state the account may send (Huawei's gateway says it), the
        # lowest if they state several (an API's, a user's, an app's limit): for the report and
        # summary, whether the run adapts or not.
        self.quota_stated: float | None = None

    def pace(self, answer: ApiResponse | TransportError, sent_at: float) -> None:
        """Throttling slows the whole run: the adaptive rate, and a Retry-After pause."""
        if not isinstance(answer, ApiResponse):
            return
        throttled = answer.status == 429
        quota = stated_quota(answer.error_msg) if throttled else None
        if quota is not None and (self.quota_stated is None or quota < self.quota_stated):
            self.quota_stated = quota
        if self._adaptive is not None:
            self._adaptive.on_answer(throttled, sent_at, quota)
        if throttled and answer.retry_after and isinstance(self._limiter, RateLimiter):
            self._limiter.pause(min(answer.retry_after, self._max_pause))

    def check(self, answer: ApiResponse | TransportError) -> tuple[str, str] | None:
        """Count the answer; the abort it calls for, if any. A 429 counts for neither the
        breaker nor the 403 row: throttling is paced, not an outage."""
        forbidden = None
        if isinstance(answer, ApiResponse):
            if answer.status == 429:
                return None
            if answer.status == 403 or self._streak:
                forbidden = self._watch_forbidden(answer)
            failed = answer.status >= 500
        else:
            failed = True
        breaker = self._breaker
        if breaker.record(failed) and forbidden is None:
            return (
                "circuit_open",
                f"{breaker.failure_ratio:.0%} of the last {breaker.window} answers failed; "
                f"the last: {describe(answer)}",
            )
        return forbidden

    def _watch_forbidden(self, answer: ApiResponse) -> tuple[str, str] | None:
        """``--forbidden-limit`` 403s in a row, none answered otherwise between them (a 5xx
        neither counts nor breaks the row)."""
        if answer.status != 403:
            if answer.status < 500:
                self._streak = 0
            return None
        self._streak += 1
        limit = self._forbidden_limit
        if limit and self._streak >= limit:
            return (
                "forbidden",
                f"{self._streak} answers in a row were {describe(answer)}: check the "
                "IAM permission dcs:task:delete and the project ID (--forbidden-limit 0 sends on)",
            )
        return None
