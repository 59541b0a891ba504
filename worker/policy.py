"""Rate and retry policy: what to do with each answer, how long to wait, how fast to send.

Why not a retry library (stamina, tenacity)? They retry a callable on exceptions; here the decision
is over HTTP answers (status, ``Retry-After``), each attempt must pass the shared rate limiter, draw
on a run-wide retry budget and feed a circuit breaker, and every attempt's facts go into the task's
outcome. That is one pure function (``decide``, with ``refusal`` for the answers that stop a
whole run) plus three small stateful objects, kept here.
"""

from __future__ import annotations

import collections
import random
import time
from typing import NamedTuple, Protocol

import anyio

from worker.errors import HandshakeRefusedError, RequestTimeoutError, TransportError
from worker.models import CLOCK_REFUSED, HTML_PAGE, NO_SUCH_API, ApiResponse, Outcome

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
# Under an adaptive rate a throttled task backs off on at least this scale, whatever
# --backoff-base/--backoff-cap say for errors, so a cut still settling cannot use up its attempts.
PACED_THROTTLE_BASE = 0.25
PACED_THROTTLE_CAP = 4.0


class Decision(NamedTuple):
    """``outcome`` is final; None means retry after ``delay`` s. ``abort`` stops the run."""

    outcome: Outcome | None
    delay: float = 0.0
    abort: str | None = None


_DELETED, _ABSENT, _REJECTED, _FAILED = (
    Decision(Outcome.DELETED),
    Decision(Outcome.ABSENT),
    Decision(Outcome.REJECTED),
    Decision(Outcome.FAILED),
)
_STOPS = {
    reason: Decision(Outcome.NOT_ATTEMPTED, abort=reason)
    for reason in (
        "credentials_refused",
        "clock_skew",
        "api_not_found",
        "not_dcs_api",
        "redirected",
    )
}
# What no DCS endpoint answers a DELETE of a task with: the method refused (405), or not known
# to the server (501). A web server that is not DCS's API answers every task so.
_NOT_DCS_STATUS = frozenset({405, 501})


def refusal(answer: ApiResponse) -> str | None:
    """The stop reason an answer is for the whole run, whatever the task; None for most.

    A 401 (Huawei locks an AK/SK after repeated signature failures: never send another), which
    for a request date more than 15 minutes off is the clock's fault, not the keys'; the
    gateway's 404 for an API it does not have here, where no request reaches DCS at all; an
    answer no DCS endpoint gives (``not_dcs_api``): a 404 without an error code (DCS's own 404
    names one, and the gateway's too; a web server's page or an empty body does not, and made
    every task ``absent``, a success), a 405, a 501, or a 2xx that is a web page (DCS answers
    a DELETE with nothing: a login portal's page made every task ``deleted``); and a redirect,
    which no API endpoint answers (a website's address, a captive portal): it is not followed,
    so the signed request goes nowhere else. Whatever the task, every other one would get the
    same.
    """
    status, code = answer.status, answer.error_code
    if status == 401:
        return "clock_skew" if code in CLOCK_REFUSED else "credentials_refused"
    if status == 404 and code in NO_SUCH_API:
        return "api_not_found"
    if (
        (status == 404 and code is None)
        or status in _NOT_DCS_STATUS
        or (status < 300 and code == HTML_PAGE)
    ):
        return "not_dcs_api"
    if 300 <= status < 400:
        return "redirected"
    return None


def full_jitter_backoff(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Capped exponential backoff with full jitter: uniform(0, min(cap, base * 2**(attempt-1)))."""
    return rng.uniform(0.0, min(cap, base * 2.0 ** (attempt - 1)))


def decide(  # noqa: PLR0911 - one return a kind of answer
    answer: ApiResponse | TransportError,
    attempt: int,
    max_attempts: int,
    *,
    base: float,
    cap: float,
    max_retry_after: float,
    rng: random.Random,
    paced: bool = False,
) -> Decision:
    """The whole retry decision for one answer to attempt number ``attempt`` (1-based).

    ``paced``: an adaptive rate already slows the whole run on throttling, so a throttled task
    backs off briefly (full jitter, base >= 0.25 s, cap >= 4 s) instead of holding its slot 2-5 s.
    """
    if isinstance(answer, ApiResponse):
        status = answer.status
        if 200 <= status < 300 and answer.error_code is None:
            return _DELETED
        reason = refusal(answer)
        if reason is not None:
            return _STOPS[reason]
        if status == 404:
            # Also right after an earlier attempt timed out: that attempt may have deleted it.
            return _ABSENT
        if status not in RETRYABLE_STATUS:
            return _REJECTED
        if answer.retry_after is not None:
            delay = min(answer.retry_after, max_retry_after)
        elif status == 429 and paced:
            # The adaptive limiter slows the whole run; the task itself backs off only briefly
            # (holding its slot for 2-5 s would starve the limiter), but enough that a cut
            # still settling cannot burn all its attempts in a burst.
            delay = full_jitter_backoff(
                attempt, max(base, PACED_THROTTLE_BASE), max(cap, PACED_THROTTLE_CAP), rng
            )
        elif status == 429:
            # Huawei's FAQ: wait 2-5 s after a throttling answer.
            delay = rng.uniform(2.0, 5.0)
        else:
            delay = full_jitter_backoff(attempt, base, cap, rng)
    elif isinstance(answer, HandshakeRefusedError):
        # Refused before anything was sent, and so will every request be: stop, as on a 401.
        return Decision(Outcome.NOT_ATTEMPTED, abort=answer.abort)
    else:
        delay = full_jitter_backoff(attempt, base, cap, rng)
    if attempt >= max_attempts:
        return _FAILED
    return Decision(None, delay)


class Limiter(Protocol):
    """What the workers pace on: ``RateLimiter`` here, ``SharedRateLimiter`` across replicas."""

    rate: float

    async def acquire(self) -> float: ...


class GcraRate:
    """A rate and burst, and the GCRA emission interval and tolerance they give (seconds).
    Shared by the local limiter and the Redis one, so both pace by the same formula."""

    burst: int
    _interval: float = 0.0
    _tolerance: float = 0.0

    @property
    def rate(self) -> float:
        return self._rate

    @rate.setter
    def rate(self, value: float) -> None:
        self._rate = max(0.0, value)
        self._interval = 1.0 / self._rate if self._rate > 0 else 0.0
        self._tolerance = self._interval * (self.burst - 1)


class RateLimiter(GcraRate):
    """A GCRA (virtual-scheduling) limiter: ``rate`` per second with bursts of ``burst``.

    Each ``acquire`` reserves the next free slot and sleeps until it, so waiters are served in
    order with no polling. ``rate`` 0 means unlimited. The rate can change while running.
    """

    def __init__(
        self, rate: float, burst: int, clock: collections.abc.Callable[[], float] = time.monotonic
    ) -> None:
        self._clock = clock
        self._tat = 0.0
        self._paused_until = 0.0
        self.burst = max(1, burst)
        self.rate = rate

    def pause(self, seconds: float) -> None:
        """Hold every request for ``seconds`` (a throttling answer's ``Retry-After``)."""
        self._paused_until = max(self._paused_until, self._clock() + seconds)

    def reserve(self) -> float:
        """Take the next slot; return how long to wait for it (0 when it is free now)."""
        now = self._clock()
        if self._interval == 0.0:
            return max(0.0, self._paused_until - now)
        tat = max(self._tat, now, self._paused_until)
        self._tat = tat + self._interval
        return max(0.0, tat - self._tolerance - now)

    async def acquire(self) -> float:
        wait = self.reserve()
        if wait > 0:
            await anyio.sleep(wait)
        return wait


class RetryBudget:
    """A run-wide allowance of retries, in the manner of botocore's retry quota.

    It starts with ``capacity`` tokens; a retry spends one (a timeout two, as it held a slot the
    longest); each success refunds ``refund``, up to ``capacity``. When a retry cannot be paid the
    task ends ``failed``. Bound: requests <= tasks + capacity + refund x successes, so with the
    default refund of 1 retries can at most double the load of a half-healthy API, and in a full
    outage (no successes) they add at most ``capacity`` requests however long it lasts.
    """

    def __init__(self, capacity: float, refund: float = 1.0) -> None:
        self.capacity = capacity
        self.tokens = capacity
        self.refund = refund
        self.denied = 0

    def try_spend(self, error: ApiResponse | TransportError) -> bool:
        cost = 2.0 if isinstance(error, RequestTimeoutError) else 1.0
        if self.tokens < cost:
            self.denied += 1
            return False
        self.tokens -= cost
        return True

    def on_success(self) -> None:
        self.tokens = min(self.capacity, self.tokens + self.refund)


class CircuitBreaker:
    """Opens when transient failures (5xx, network) reach ``threshold`` of the last ``window``.

    Throttling (429) is not counted: it calls for slowing down, not for stopping.
    """

    def __init__(self, window: int, threshold: float) -> None:
        self.window = window
        self.threshold = threshold
        self._answers: collections.deque[bool] = collections.deque(maxlen=window)
        self._failures = 0
        self.opened = False

    def record(self, failed: bool) -> bool:
        """Record one answer; return True if the breaker is (now) open."""
        if len(self._answers) == self.window and self._answers[0]:
            self._failures -= 1
        self._answers.append(failed)
        self._failures += failed
        if len(self._answers) >= self.window and self._failures / self.window >= self.threshold:
            self.opened = True
        return self.opened

    @property
    def failure_ratio(self) -> float:
        return self._failures / len(self._answers) if self._answers else 0.0
