"""Finding an unknown quota: CUBIC rate control on throttling, as botocore's adaptive retry mode.

Huawei's API gateway throttles per account (HTTP 429, ``APIGW.0308``) at a rate the operator
rarely knows. On a throttle the shared rate drops to ``beta`` (0.7) of the rate the server
accepted over the last second (or of the rate being sent, if that is lower), then
grows back along the CUBIC curve ``C*(t-K)^3 + w_max`` — fast while far below the last known
ceiling, slow near it (where the quota is), then probing beyond it. Growth is capped at twice the
measured send rate so an idle period cannot build up a meaningless rate. Two refinements:

* a 429 answering a request sent before the last decrease had a second to take effect is
  ignored: it reports the old rate, so one burst of throttles causes one decrease, not one per
  request in flight;
* ``--rate`` is a ceiling (0: none); a ``Retry-After`` on a throttle also pauses the limiter.

Huawei's gateway also says the quota in a 429's message (``limit:12000,time:1 minute``,
``worker.answers.stated_quota``). Once it has, that quota (times ``QUOTA_MARGIN``, and this
process's share of it under ``--processes``) is a ceiling too: a throttle while sending above it
sets the rate straight to it, instead of to beta of what got through, and the probing never
passes it. Where 429s state several limits (an API's, a user's), the lowest holds. A throttle at
or under it (another client spending the same account's quota) cuts as before.
"""

from __future__ import annotations

import collections
import math
import time
from collections.abc import Callable

from worker.logs import get_logger
from worker.policy import Limiter

log = get_logger()

CUBIC_C = 0.4
CUBIC_BETA = 0.7
MIN_RATE = 0.5
# A cut needs time to show: the server's bucket refills only once we send below its rate.
DECREASE_SETTLE_S = 1.0
ACCEPTED_WINDOW_S = 1.0
_MEASURE_BUCKET_S = 0.5
_SMOOTHING = 0.8
QUOTA_MARGIN = 0.99  # of a stated quota: just under it, should the gateway count in windows


class AdaptiveRate:
    """Adjusts ``limiter.rate`` from answers: ``on_sent`` per request, ``on_answer`` per answer."""

    def __init__(
        self,
        limiter: Limiter,
        ceiling: float,
        clock: Callable[[], float] = time.monotonic,
        share: float = 1.0,
    ) -> None:
        """``share``: this process's part of the account's quota (``--processes``: 1/N)."""
        self._limiter = limiter
        self._ceiling = ceiling
        self._share = share
        self._quota = 0.0  # requests a second the gateway stated (0: none yet)
        self._held = 0.0  # the ceiling that quota makes for this process
        self._clock = clock
        now = clock()
        self._w_max = 0.0
        self._k = 0.0
        self._last_throttle = now
        self._last_decrease = -math.inf
        self._throttling_seen = False
        # Measured send rate: requests per 0.5 s bucket, smoothed.
        self._bucket_start = now
        self._bucket_count = 0
        self.measured = 0.0
        self.decreases = 0
        self.lowest = math.inf
        self._logged = limiter.rate
        self._answers: collections.deque[tuple[float, bool]] = collections.deque()

    def on_sent(self) -> float:
        """Count one request; return its send time (pass it back to ``on_answer``)."""
        now = self._clock()
        if self._bucket_count == 0 and self.measured == 0.0:
            # The first measurement starts with the first request, not when the run was set up:
            # a 429 within it cut from a send rate diluted by the set-up, which in a
            # ``--processes`` child (fork, journal, the first request alone) came to 15/s.
            self._bucket_start = now
        self._bucket_count += 1
        elapsed = now - self._bucket_start
        if elapsed >= _MEASURE_BUCKET_S:
            current = self._bucket_count / elapsed
            if self.measured == 0.0:
                self.measured = current
            else:
                self.measured = current * (1 - _SMOOTHING) + self.measured * _SMOOTHING
            self._bucket_start = now
            self._bucket_count = 0
        return now

    def on_answer(self, throttled: bool, sent_at: float, quota: float | None = None) -> None:
        """``quota``: requests a second a throttling answer stated, if it did."""
        now = self._clock()
        if throttled:
            if quota is not None and (not self._quota or quota < self._quota):
                self._take_quota(quota)  # the lowest limit stated is the one that binds
            if sent_at < self._last_decrease + DECREASE_SETTLE_S:
                return  # sent before the cut could take effect: not news
            self._answers.append((now, True))
            sending = self._sending_rate(now)
            current = self._limiter.rate or sending
            self._throttling_seen = True
            self._last_throttle = now
            self._last_decrease = now
            self.decreases += 1
            if self._held and current > self._held:
                self._w_max, self._k = self._held, 0.0  # held there: the ceiling caps growth
                self._set(self._held, "quota_stated")
                return
            base = max(min(sending, current, self._accepted_rate(now)), MIN_RATE)
            self._w_max = base
            self._k = (self._w_max * (1 - CUBIC_BETA) / CUBIC_C) ** (1 / 3)
            self._set(base * CUBIC_BETA, "throttled")
            return
        self._answers.append((now, False))
        if len(self._answers) > 8192:
            self._prune(now)
        if not self._throttling_seen:
            return  # no quota found yet: leave the configured rate (or none) alone
        t = now - self._last_throttle
        target = CUBIC_C * (t - self._k) ** 3 + self._w_max
        if self.measured > 0:
            target = min(target, 2 * self.measured)
        self._set(target, "probing")

    def _take_quota(self, quota: float) -> None:
        self._quota = quota
        self._held = quota * self._share * QUOTA_MARGIN
        log.info(
            "cleanup.quota_stated",
            quota_per_s=round(quota, 2),
            rate_at_most=round(self._held, 2),
            detail="the gateway's throttling answer states the account's quota; "
            + ("this run stays" if self._share == 1 else "this process keeps its share")
            + f" at or under {QUOTA_MARGIN:.0%} of it",
        )

    def _prune(self, now: float) -> None:
        while self._answers and self._answers[0][0] < now - ACCEPTED_WINDOW_S:
            self._answers.popleft()

    def _accepted_rate(self, now: float) -> float:
        """The rate the server let through over the last second, when it was clipping us
        (2% or more of the answers throttled); infinity when it tells nothing."""
        self._prune(now)
        total = len(self._answers)
        throttled = sum(1 for _, was_429 in self._answers if was_429)
        if total < 10 or throttled < 0.02 * total:
            return math.inf
        span = max(now - self._answers[0][0], 0.1)
        return (total - throttled) / span

    def _sending_rate(self, now: float) -> float:
        """The smoothed send rate; before the first full bucket, the partial one."""
        if self.measured > 0:
            return self.measured
        elapsed = now - self._bucket_start
        return self._bucket_count / elapsed if elapsed > 0 else 0.0

    def _set(self, rate: float, why: str) -> None:
        rate = max(MIN_RATE, rate)
        for cap in (self._ceiling, self._held):
            if cap > 0:
                rate = min(rate, cap)
        self._limiter.rate = rate
        self.lowest = min(self.lowest, rate)
        if why != "probing" or abs(rate - self._logged) > 0.1 * max(self._logged, 1.0):
            log.info(
                "cleanup.rate_changed",
                rate=round(rate, 1),
                reason=why,
                measured=round(self.measured, 1),
            )
            self._logged = rate

    def summary(self) -> dict[str, float | int | None]:
        return {
            "final": round(self._limiter.rate, 2),
            "lowest": None if self.lowest == math.inf else round(self.lowest, 2),
            "decreases": self.decreases,
            "ceiling": self._ceiling or None,
        }
