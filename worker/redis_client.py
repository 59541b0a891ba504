"""The Redis client that the queue, the enqueue and the shared rate use: one node or, when the
node says so, a Redis Cluster (``open_client``); and Redis's errors in words an operator can act
on (``describe``, ``unreachable``).

On a Redis Cluster (``open_client`` tells one by its ``INFO``) the cluster client sends each
command to the node serving its key; ``check_cluster_stream`` refuses a stream whose dead-letter
stream would fall in another hash slot, since the two are written in one MULTI.
"""

from __future__ import annotations

import contextlib
from typing import Any, cast

import anyio
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import (
    AskError,
    AuthenticationError,
    ClusterDownError,
    NoPermissionError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    TryAgainError,
)

from worker.errors import InputError
from worker.settings import redact_url

INFO_TIMEOUT = 5.0  # seconds the INFO that tells a Redis Cluster may take
# Refusals that pass with time, like a lost connection: memory short, a master just made a
# replica in a failover (READONLY) while clients move to the new one, a slot moving.
PASSING = (OutOfMemoryError, ReadOnlyError, TryAgainError)


def as_text(value: Any) -> str:
    """A value of a Redis reply as text (a client without ``decode_responses`` gives bytes)."""
    return value if isinstance(value, str) else str(value)


def connect(url: str) -> aioredis.Redis:
    """A client for ``redis://host:port/db`` (``rediss://`` for TLS)."""
    try:
        client: aioredis.Redis = aioredis.from_url(url, decode_responses=True)
    except ValueError as exc:
        raise InputError(f"--queue {redact_url(url)!r}: {exc}") from None
    return client


async def open_client(url: str) -> aioredis.Redis:
    """``connect``, or a Redis Cluster client when the node at ``url`` says it is one (``INFO
    cluster``: DCS's Redis Cluster instances), which follows each key to the node serving it.
    When INFO gets no answer within 5 s (refused to the user, Redis down), the plain client:
    its first command then says why, as it always did."""
    client = connect(url)
    try:
        with anyio.fail_after(INFO_TIMEOUT):
            info: Any = await client.info("cluster")
    except (RedisError, TimeoutError):
        return client
    if not int(info.get("cluster_enabled") or 0):
        return client
    await client.aclose()
    cluster = RedisCluster.from_url(url, decode_responses=True)
    # It sends every command this program uses, with the same arguments, to its key's node.
    return cast("aioredis.Redis", cluster)


async def check_reachable(client: aioredis.Redis) -> None:
    """Redis answers, and to this URL's user: a PING. A user whose ACL denies PING (one made
    to XADD and no more) has been answered, which is all this asks. Otherwise the error (a
    refused connection, refused credentials) is raised as RedisError."""
    with contextlib.suppress(NoPermissionError):
        await client.ping()


def dead_letter_key(stream: str) -> str:
    """Where the dead letters of ``stream`` are kept (``worker.dead_letters``, ``redrive``)."""
    return stream + ":dead"


def check_cluster_stream(client: aioredis.Redis, stream: str) -> None:
    """On a Redis Cluster, ``<stream>`` and ``<stream>:dead`` must share a hash slot: a dead
    letter is added in the same MULTI as the entry's ack, which a cluster runs on one node
    only. A hash tag in the name (``{cleanup}:tasks``) puts both in its slot."""
    if not isinstance(client, RedisCluster):
        return
    dead = dead_letter_key(stream)
    if client.keyslot(stream) != client.keyslot(dead):
        msg = (
            f"--stream {stream!r}: on a Redis Cluster the stream and {dead!r} must share a "
            "hash slot; name it with a hash tag, e.g. --stream '{dcs-cleanup}:tasks', for the "
            "enqueue and every consumer"
        )
        raise InputError(msg)


def describe(exc: RedisError) -> str:
    """A Redis error in words an operator can act on; a Redis Cluster's redirection (a bare
    "11466 10.0.0.5:6379") and its other refusals named as such."""
    text = str(exc)
    if isinstance(exc, AskError | ClusterDownError) or text.startswith("CROSSSLOT"):
        return (
            f"this Redis is a Redis Cluster node ({type(exc).__name__}: {text[:100]}), which "
            "dcs-cleanup reads as a cluster only when it may run INFO at start: grant the user "
            "INFO (ACL +info), or use a single-node, master/standby or proxy-cluster instance"
        )
    if isinstance(exc, AuthenticationError):
        if "invalid username-password" in text or text.startswith("WRONGPASS"):
            return f"Redis refused the URL's user or password ({text[:100]})"
        return (
            "this Redis needs a password: give it in the URL, redis://:PASSWORD@host:port/db "
            f"(USER:PASSWORD@ for an ACL user) ({text[:60]})"
        )
    return text


def clause(text: str) -> str:
    """Redis's words (``describe``, ``unreachable``) as a clause of a longer line: at most 400
    characters, and without the full stop redis-py ends some with (no "refused.; nothing")."""
    return text[:400].rstrip(".")


def unreachable(exc: RedisError) -> str:
    """Why Redis could not be used at start, for an operator: refused credentials are not an
    unreachable server."""
    return (
        describe(exc) if isinstance(exc, AuthenticationError) else f"Redis is not reachable: {exc}"
    )
