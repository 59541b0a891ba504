"""One rate limit for every replica: ``--shared-rate-key``. The GCRA of ``policy.RateLimiter``
kept in Redis, in a Lua script on the server's clock, so any number of processes and machines
together keep one rate however their clocks differ.
"""

from __future__ import annotations

import math
import time

import anyio
import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from worker.errors import AbortRun, ConfigError
from worker.logs import get_logger
from worker.policy import GcraRate
from worker.redis_client import PASSING, describe

log = get_logger()

# GCRA with reservation on the server's clock: returns how long the caller waits for its slot.
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.ceil(new_tat - now + tolerance) + 1000)
local wait = tat - tolerance - now
if wait < 0 then wait = 0 end
return tostring(wait)
"""


class SharedRateLimiter(GcraRate):
    """The GCRA limiter of ``policy.RateLimiter``, kept in Redis for every replica at once.

    Redis out of reach (a restart, a failover, a network blip) pauses sending until it answers
    again: the shared rate cannot be kept without it, and running over it would take the
    account's quota from whatever else uses it. So do the refusals that pass with time (out of
    memory, READONLY from a master just made a replica). One that will not pass (no permission for
    EVALSHA, a key on another Redis Cluster node) aborts the run instead: ``AbortRun``."""

    def __init__(self, client: aioredis.Redis, key: str, rate: float, burst: int) -> None:
        self._redis = client
        self._key = key
        self._script = client.register_script(_GCRA)
        self.burst = max(1, burst)
        self.rate = rate
        self._told = False  # an outage was told and its end not yet
        self._told_at = -math.inf

    async def check(self) -> None:
        """Take one slot now, before anything is sent: Redis must be reachable and the script
        allowed (else ``ConfigError``, exit 2)."""
        try:
            await self._reserve()
        except RedisError as exc:
            msg = (
                f"--shared-rate-key {self._key!r}: Redis refused the rate limiter: {describe(exc)}"
            )
            raise ConfigError(msg[:500]) from None

    async def acquire(self) -> float:
        if self._interval == 0.0:
            return 0.0
        paused = 0.0
        backoff = 0.5
        while True:
            try:
                wait = await self._reserve()
                break
            except ResponseError as exc:
                if not isinstance(exc, PASSING):
                    detail = f"the shared rate limiter: {describe(exc)}"
                    raise AbortRun("rate_limit_error", detail) from None
                error: RedisError = exc
            except RedisError as exc:
                error = exc
            if not self._told and time.monotonic() - self._told_at >= 60:
                # Once an outage (and a minute): stale pooled connections fail once each
                # after Redis comes back, which is no new outage to tell.
                self._told, self._told_at = True, time.monotonic()
                log.warning(
                    "cleanup.shared_rate_unavailable",
                    key=self._key,
                    error=str(error)[:200],
                    detail="sending paused until Redis answers: the shared rate needs it",
                )
            await anyio.sleep(backoff)
            paused += backoff
            backoff = min(backoff * 2, 5.0)
        if self._told:
            self._told = False
            log.info("cleanup.shared_rate_restored", key=self._key)
        if wait > 0:
            await anyio.sleep(wait)
        return paused + wait

    async def _reserve(self) -> float:
        """Reserve the next slot; seconds to wait for it."""
        args = [self._interval * 1000.0, self._tolerance * 1000.0]
        return float(await self._script(keys=[self._key], args=args)) / 1000.0
