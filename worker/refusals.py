"""Credentials the gateway refused, remembered in Redis so that no restart sends them again.

Huawei locks an AK/SK after five refused signatures in a row, for every program that uses it. A
run stops at its first 401 (exit 3), but whatever restarts it sends the same credentials again: a
consumer Deployment's kubelet restarts each replica (CrashLoopBackOff: several starts in the first
minutes), a Job retries, a cron comes round. A run that has a Redis (``--queue`` or ``--redis``)
therefore leaves a marker there when its credentials are refused, for ``--refusal-memory``
seconds, and a run that finds the marker of its credentials stops before it sends anything (exit
3), saying when, by whom and why they were refused and how to clear it.

Credentials are known there by a fingerprint (SHA-256 of them, cut to 128 bits), never by
themselves; changed credentials (a Secret set right) have another fingerprint and go at once.
Redis is a help here, not a need: when it cannot be reached, or its user may not GET or SET the
key, a warning says so and the run goes on as it would without it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import socket
import time
from typing import Any

import anyio

from worker.logs import get_logger, mask
from worker.settings import Settings
from worker.signer import Credentials

log = get_logger()

KEY_PREFIX = "dcs-cleanup:refused-credentials:"
REDIS_TIMEOUT = 5.0  # seconds the marker's GET or SET may take, the connection included


def fingerprint(credentials: Credentials) -> str:
    """128 bits of SHA-256 over the AK, SK and security token: the same for the same
    credentials, another for any change, and no way back to them."""
    parts = (credentials.ak, credentials.sk, credentials.security_token or "")
    digest = hashlib.sha256("\0".join(("dcs-task-cleanup refused", *parts)).encode())
    return digest.hexdigest()[:32]


@dataclasses.dataclass(frozen=True, slots=True)
class Refusal:
    """What a marker says: when the credentials were refused and until when that is
    remembered (UTC, ISO 8601), by which run on which host, and the answer."""

    refused_at: str | None = None
    until: str | None = None
    run_id: str | None = None
    host: str | None = None
    detail: str | None = None

    def describe(self) -> str:
        """In words, for the report of a run it stops."""
        by = f" by run {self.run_id}" if self.run_id else ""
        on = f" on {self.host}" if self.host else ""
        when = f" at {self.refused_at}" if self.refused_at else ""
        return f"remembered as refused{when}{by}{on}: {self.detail or 'no detail'}"

    @classmethod
    def parse(cls, raw: str) -> Refusal:
        """A marker's value; one not written by this program still counts, its text the
        detail."""
        try:
            fields: Any = json.loads(raw)
        except ValueError:
            fields = None
        if not isinstance(fields, dict):
            return cls(detail=raw[:300])
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: str(v) for k, v in fields.items() if k in names and v is not None})


class RefusalMemory:
    """The marker of one set of credentials in the Redis at ``url``."""

    def __init__(self, url: str, credentials: Credentials, seconds: float) -> None:
        self._url = url
        self._seconds = seconds
        self._secrets = [s for s in (credentials.ak, credentials.sk) if s]
        self._secrets += [credentials.security_token] if credentials.security_token else []
        self.key = KEY_PREFIX + fingerprint(credentials)

    def __repr__(self) -> str:
        return f"RefusalMemory({self.key!r})"

    async def recalled(self) -> Refusal | None:
        """The marker's refusal, or None: not refused lately, or Redis could not say."""
        raw = await self._redis("get", self.key)
        return Refusal.parse(raw) if isinstance(raw, str) else None

    async def remember(self, detail: str, run_id: str) -> None:
        """Leave the marker: these credentials were refused now, for ``detail``."""
        detail = mask(detail, self._secrets)  # the gateway's words should never carry them
        now = time.time()
        marker = Refusal(
            _utc(now), _utc(now + self._seconds), run_id, socket.gethostname(), detail[:500]
        )
        value = json.dumps(dataclasses.asdict(marker))
        ms = max(1, round(self._seconds * 1000))
        if await self._redis("set", self.key, value, px=ms) is not None:
            log.warning(
                "cleanup.credentials_remembered",
                key=self.key,
                seconds=self._seconds,
                detail="no run with these credentials and this Redis sends a request until then",
            )

    async def _redis(self, command: str, *args: Any, **kwargs: Any) -> Any:
        """One command on a client of its own; None, after a warning, when it fails."""
        from redis.exceptions import RedisError

        from worker import redis_client  # redis is imported only by runs that use it

        client = None
        try:
            with anyio.fail_after(REDIS_TIMEOUT):
                client = await redis_client.open_client(self._url)
                return await getattr(client, command)(*args, **kwargs)
        except (RedisError, OSError, TimeoutError) as exc:
            error = redis_client.describe(exc) if isinstance(exc, RedisError) else repr(exc)
            log.warning(
                "cleanup.refusal_memory_unavailable",
                command=command.upper(),
                key=self.key,
                error=error[:300],
                detail=(
                    "refused credentials are not remembered across runs through this Redis; "
                    "grant its user GET and SET on the key, or give --refusal-memory 0"
                ),
            )
            return None
        finally:
            if client is not None:
                with anyio.CancelScope(shield=True):
                    await client.aclose()


def memory_for(settings: Settings, credentials: Credentials) -> RefusalMemory | None:
    """The run's refusal memory: in the Redis of ``--redis`` (else ``--queue``), unless
    ``--refusal-memory`` is 0 or the run has no Redis."""
    url = settings.redis or settings.queue
    if url is None or not settings.refusal_memory:
        return None
    return RefusalMemory(url, credentials, settings.refusal_memory)


async def refused_before(memory: RefusalMemory) -> Refusal | None:
    """The refusal these credentials are remembered for, if any: then it is said (an error
    naming when, by whom, why, and how to go on), and nothing is to be sent."""
    refusal = await memory.recalled()
    if refusal is None:
        return None
    log.error(
        "cleanup.credentials_refused_before",
        refused_at=refusal.refused_at,
        until=refusal.until,
        by_run=refusal.run_id,
        by_host=refusal.host,
        refused_for=refusal.detail,
        key=memory.key,
        detail=(
            "the gateway refused these credentials lately and Huawei locks an AK/SK after five "
            "refused signatures, so nothing is sent: set CLOUD_SDK_AK/CLOUD_SDK_SK right (other "
            "credentials go at once), wait until then, or delete the key "
            f"(redis-cli DEL {memory.key})"
        ),
    )
    return refusal


def _utc(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))
