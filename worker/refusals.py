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
key, a warning says so (once) and the run goes on as it would without it. A run without a Redis
may keep the same memory in a file (``--refusal-file``, ``refusal_file``), as the CronJob does.

The memory works from the first refusal on; runs that start together (a consumer Deployment
scaled out, the pods of an Indexed Job) would each send their first request before any marker
exists, and six of them with a wrong SK would lock it. So the first request with a set of
credentials goes one run at a time (``FirstRequestTurn``): a run takes the turn (a redis-py
``Lock`` on ``dcs-cleanup:first-request:<fingerprint>``, held at most the request's
``--timeout`` and a margin) or waits for the run holding it. That run's answer either refuses the
credentials (the marker: the waiting runs stop, nothing sent) or proves them (a 2xx, 403, 404...:
``dcs-cleanup:accepted-credentials:<fingerprint>`` for ``--refusal-memory`` seconds, and every
later run goes at once); an answer that proves neither (a 5xx, 429, none) passes the turn on. A
run whose credentials are proved waits for nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import socket
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from worker.errors import TransportError
from worker.logs import get_logger, mask
from worker.models import ApiResponse
from worker.policy import refusal as stop_reason
from worker.results import describe
from worker.settings import Settings
from worker.signer import Credentials

if TYPE_CHECKING:
    import redis.asyncio as aioredis
    from redis.asyncio.lock import Lock

log = get_logger()

KEY_PREFIX = "dcs-cleanup:refused-credentials:"
ACCEPTED_PREFIX = "dcs-cleanup:accepted-credentials:"
TURN_PREFIX = "dcs-cleanup:first-request:"
REDIS_TIMEOUT = 5.0  # seconds a command may take, the connection included
TURN_MARGIN = 5.0  # seconds the turn is held past the first request's --timeout
TURN_POLL = 0.2  # seconds between two looks of a run waiting for its turn
_FAILED = object()  # what a Redis command that failed gives back


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
    def now(cls, detail: str, run_id: str, seconds: float, credentials: Credentials) -> Refusal:
        """A refusal met now, remembered for ``seconds``; ``detail`` without the credentials
        (the gateway's words should never carry them, but they are masked all the same)."""
        secrets = [s for s in (credentials.ak, credentials.sk, credentials.security_token) if s]
        at = time.time()
        return cls(
            _utc(at), _utc(at + seconds), run_id, socket.gethostname(), mask(detail, secrets)[:500]
        )

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
        return cls.of(fields)

    @classmethod
    def of(cls, fields: dict[str, Any]) -> Refusal:
        """A marker's fields (a parsed marker, or an entry of a refusal file); others ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: str(v) for k, v in fields.items() if k in names and v is not None})


class RefusalMemory:
    """What the Redis at ``url`` knows of one set of credentials: the marker of their refusal,
    of their acceptance, and whose turn their first request is. One client, opened at the first
    command; after a command fails (a warning), the memory is off for the run."""

    def __init__(self, url: str, credentials: Credentials, seconds: float) -> None:
        self._url = url
        self.seconds = seconds
        self._credentials = credentials
        mark = fingerprint(credentials)
        self.key = KEY_PREFIX + mark
        self.accepted_key = ACCEPTED_PREFIX + mark
        self.turn_key = TURN_PREFIX + mark
        self.known: Refusal | None = None  # recalled or remembered by this run
        self.off = False  # a command failed: nothing more is asked of this Redis
        self._client: aioredis.Redis | None = None

    def __repr__(self) -> str:
        return f"RefusalMemory({self.key!r})"

    def clear_how(self) -> str:
        return f"delete the key (redis-cli DEL {self.key})"

    async def recalled(self) -> Refusal | None:
        """The marker's refusal, or None: not refused lately, or Redis could not say."""
        raw = await self.command("get", self.key)
        if isinstance(raw, str):
            self.known = Refusal.parse(raw)
            return self.known
        return None

    async def remember(self, detail: str, run_id: str) -> None:
        """Leave the marker: these credentials were refused now, for ``detail``. Not again for
        a refusal this run recalled or already left."""
        if self.known is not None:
            return
        self.known = Refusal.now(detail, run_id, self.seconds, self._credentials)
        value = json.dumps(dataclasses.asdict(self.known))
        if await self.command("set", self.key, value, px=self._ms()) is not _FAILED:
            await self.command("delete", self.accepted_key)
            said_remembered(self.key, self.seconds, "this Redis")

    async def accepted(self) -> bool:
        """True when a run's request with these credentials was answered lately, not refused."""
        reply = await self.command("exists", self.accepted_key)
        return reply is not _FAILED and bool(reply)

    async def vouch(self, run_id: str) -> None:
        """Leave the marker of accepted credentials: later runs need not wait their turn."""
        value = json.dumps({"accepted_at": _utc(time.time()), "run_id": run_id})
        await self.command("set", self.accepted_key, value, px=self._ms())

    def _ms(self) -> int:
        return max(1, round(self.seconds * 1000))

    async def command(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """One command (a method of redis-py's client) on the memory's client; ``_FAILED``
        when it fails."""
        return await self.call(name.upper(), lambda client: getattr(client, name)(*args, **kwargs))

    async def call(self, what: str, send: Callable[[aioredis.Redis], Awaitable[Any]]) -> Any:
        """``send(client)`` on the memory's client; ``_FAILED``, after a warning naming
        ``what``, when it fails (and for every call after that)."""
        from redis.exceptions import RedisError

        from worker import redis_client  # redis is imported only by runs that use it

        if self.off:
            return _FAILED
        try:
            with anyio.fail_after(REDIS_TIMEOUT):
                if self._client is None:
                    self._client = await redis_client.open_client(self._url)
                return await send(self._client)
        except (RedisError, OSError, TimeoutError) as exc:
            self.off = True
            error = redis_client.describe(exc) if isinstance(exc, RedisError) else repr(exc)
            said_unavailable(
                what,
                self.key,
                error,
                "this Redis",
                "grant its user GET, SET, EXISTS, DEL, EVALSHA and SCRIPT LOAD on the keys "
                "dcs-cleanup:*-credentials:* and dcs-cleanup:first-request:*",
            )
            return _FAILED

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with anyio.CancelScope(shield=True):
                await client.aclose()


class Memory(Protocol):
    """A refusal memory: in a Redis (``RefusalMemory``) or a file (``refusal_file``)."""

    key: str
    known: Refusal | None

    def clear_how(self) -> str: ...
    async def recalled(self) -> Refusal | None: ...
    async def remember(self, detail: str, run_id: str) -> None: ...
    async def aclose(self) -> None: ...


def said_remembered(key: str, seconds: float, where: str) -> None:
    """The log line of a refusal remembered under ``key``, in ``where``."""
    log.warning(
        "cleanup.credentials_remembered",
        key=key,
        seconds=seconds,
        detail=f"no run with these credentials and {where} sends a request until then",
    )


def said_unavailable(what: str, key: str, error: str, where: str, remedy: str) -> None:
    """The one warning of a memory that failed at ``what``: off for the rest of the run."""
    log.warning(
        "cleanup.refusal_memory_unavailable",
        command=what,
        key=key,
        error=error[:300],
        detail=(
            f"refused credentials are not remembered across runs through {where}; {remedy}, "
            "or give --refusal-memory 0"
        ),
    )


def memory_for(settings: Settings, credentials: Credentials) -> Memory | None:
    """The run's refusal memory: in the Redis of ``--redis`` (else ``--queue``), else in the
    file of ``--refusal-file``; none if ``--refusal-memory`` is 0 or the run has neither."""
    url = settings.redis or settings.queue
    if not settings.refusal_memory:
        return None
    if url is not None:
        return RefusalMemory(url, credentials, settings.refusal_memory)
    if (path := settings.refusal_path()) is not None:
        from worker.refusal_file import FileRefusalMemory

        return FileRefusalMemory(path, credentials, settings.refusal_memory)
    return None


async def refused_before(memory: Memory) -> Refusal | None:
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
            f"credentials go at once), wait until then, or {memory.clear_how()}"
        ),
    )
    return refusal


class Turn(Protocol):
    """The turn of a run's first request: ``wait`` before it, ``landed`` with its answer,
    ``aclose`` to give back a turn a stopped run still holds."""

    async def wait(self, stopped: anyio.Event) -> Refusal | None: ...
    async def landed(self, answer: ApiResponse | TransportError) -> None: ...
    async def aclose(self) -> None: ...


class SoloTurn:
    """The first request's turn with a memory in a file: no other run to wait for (a CronJob
    runs one pod at a time), but the refusal another run left meanwhile still stops this one,
    and the answer's refusal is remembered."""

    def __init__(self, memory: Memory, run_id: str) -> None:
        self._memory = memory
        self._run_id = run_id

    def __repr__(self) -> str:
        return f"SoloTurn({self._memory.key!r})"

    async def wait(self, stopped: anyio.Event) -> Refusal | None:
        return await refused_before(self._memory)

    async def landed(self, answer: ApiResponse | TransportError) -> None:
        if isinstance(answer, ApiResponse) and stop_reason(answer) == "credentials_refused":
            await self._memory.remember(describe(answer), self._run_id)

    async def aclose(self) -> None:
        """Nothing held."""


class FirstRequestTurn:
    """The turn of a run's first request among the runs with the same credentials and Redis
    (module docstring): ``wait`` before the request, ``landed`` with its answer. ``aclose``
    gives back a turn still held (a run stopped before its answer), so the next run goes."""

    def __init__(self, memory: RefusalMemory, run_id: str, timeout: float) -> None:
        self._memory = memory
        self._run_id = run_id
        self._hold = timeout + TURN_MARGIN
        self._lock: Lock | None = None  # the turn, while this run holds it

    def __repr__(self) -> str:
        return f"FirstRequestTurn({self._memory.turn_key!r})"

    async def wait(self, stopped: anyio.Event) -> Refusal | None:
        """Return when this run's first request may go (None: its turn, credentials already
        accepted, the memory off, or ``stopped`` set), or with the refusal that another run's
        first request met meanwhile: then nothing is to be sent."""
        memory = self._memory
        said = False
        while not stopped.is_set():
            refused = await refused_before(memory)
            if refused is not None:
                return refused
            # (Redis out of reach: both False, and the memory off for the run.)
            if await memory.accepted() or await self._take() or memory.off:
                return None
            if not said:
                said = True
                holder = await memory.command("get", memory.turn_key)
                log.info(
                    "cleanup.waiting_for_first_request",
                    by_run=holder if isinstance(holder, str) else None,
                    key=memory.turn_key,
                    detail=(
                        "another run with these credentials is sending its first request; this "
                        "run sends once it is answered, so a wrong AK/SK is refused once, not "
                        "once a run"
                    ),
                )
            with anyio.move_on_after(TURN_POLL):
                await stopped.wait()
        return None

    async def _take(self) -> bool:
        """Take the turn if no run holds it (SET NX PX, through redis-py's ``Lock``)."""

        def acquire(client: aioredis.Redis) -> Awaitable[bool]:
            lock = client.lock(
                self._memory.turn_key,
                timeout=self._hold,
                blocking=False,
                thread_local=False,
                raise_on_release_error=False,  # held past its time: it is gone anyway
            )
            self._lock = lock
            return lock.acquire(token=self._run_id)

        if await self._memory.call("SET", acquire) is True:
            return True
        self._lock = None
        return False

    async def landed(self, answer: ApiResponse | TransportError) -> None:
        """The first request's answer: credentials it refused are remembered, credentials it
        proved (an answer of DCS's past the signature check) are vouched for; then the turn
        goes to the next run."""
        if isinstance(answer, ApiResponse):
            reason = stop_reason(answer)
            if reason == "credentials_refused":
                await self._memory.remember(describe(answer), self._run_id)
            elif reason is None and answer.status < 500 and answer.status != 429:
                await self._memory.vouch(self._run_id)
        await self.aclose()

    async def aclose(self) -> None:
        """Give the turn back, if this run holds it (a Lua compare-and-delete: not a turn that
        has passed to another run)."""
        lock, self._lock = self._lock, None
        if lock is not None:
            with anyio.CancelScope(shield=True):
                await self._memory.call("EVALSHA", lambda _client: lock.release())


def _utc(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))
