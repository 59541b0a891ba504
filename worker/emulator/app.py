"""The emulator's HTTP app: DeleteCenterTask and ListCenterTask with realistic faults.

It verifies SDK-HMAC-SHA256 signatures with the project's signer functions (a request with a wrong
secret gets 401 ``APIGW.0301``), keeps tasks in memory, and can be told to fail: random 500s, the
first N attempts of a share of tasks, HTML 502s from a "proxy", connection resets, a 429 quota
(token bucket, optional ``Retry-After``), latency, a body dribbled slowly, or a huge error body.
``GET /_emulator/stats`` tells what it received.
"""

from __future__ import annotations

import asyncio
import collections
import email.utils
import json
import operator
import random
import re
import socket
import struct
import time
import uuid
import zlib
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, unquote

from aiohttp import web

from worker import signer as sig
from worker.models import CLOCK_LIMIT_S

DEMO_AK = "DEMOACCESSKEY0000000"
DEMO_SK = "demo-secret-key-not-a-real-one-0000000000"
HTML_502 = (
    "<html><head><title>502 Bad Gateway</title></head>"
    "<body><center><h1>502 Bad Gateway</h1></center></body></html>"
)
THROTTLED = (
    "The throttling threshold has been reached: policy user over ratelimit,limit:{},time:1 minute"
)
THROTTLED_UNSTATED = "The throttling threshold has been reached."


NO_SUCH_API = "The API does not exist or has not been published in the environment"


@dataclass(frozen=True, slots=True)
class Faults:
    """Fault knobs. Rates are probabilities per request; ``seed`` makes runs repeatable."""

    error_rate: float = 0.0
    fail_first: int = 0
    fail_first_share: float = 0.0
    html_502_rate: float = 0.0
    reset_rate: float = 0.0
    quota_rate: float = 0.0
    quota_burst: int = 10
    quota_unstated: bool = False  # the 429's message says no limit (Huawei's says it)
    retry_after: float | None = None
    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    drip_seconds: float = 0.0
    big_body_bytes: int = 0
    reject_share: float = 0.0
    redirect_to: str | None = None
    list_page_cap: int = 0  # the most tasks a list page holds, whatever ``limit`` asks (0: limit)
    list_count: bool = True  # whether a list page carries ``task_count``
    # False: the gateway has no task-center API at this address (another service's endpoint,
    # a region without it), and answers every request 404 APIGW.0101, before checking the
    # signature, as it does for any path or method it has no API for.
    api_published: bool = True
    # Not 0: the address is some other web server's (a wrong --endpoint), which answers every
    # request with this status and an HTML page, as nginx does: no error code, no signature
    # check. 404 for a path it has not, 405 for a method it does not take.
    web_server_status: int = 0
    seed: int = 0


@dataclass(slots=True)
class Task:
    task_id: str
    name: str
    status: str
    created_at: str


@dataclass(slots=True)
class EmulatorState:
    """Tasks, credentials, faults and what was received. Tests read it directly."""

    credentials: dict[str, str] = field(default_factory=lambda: {DEMO_AK: DEMO_SK})
    verify_signatures: bool = True
    # Seconds the gateway's clock is ahead of this machine's (negative: behind): a worker whose
    # clock is off by more than 15 minutes gets 401 APIGW.0303, the Date header the gateway's time.
    clock_offset_s: float = 0.0
    faults: Faults = field(default_factory=Faults)
    tasks: dict[str, dict[str, Task]] = field(default_factory=dict)
    requests: int = 0
    deletes_received: int = 0
    by_status: collections.Counter[int] = field(default_factory=collections.Counter)
    delete_calls: collections.Counter[str] = field(default_factory=collections.Counter)
    deleted: collections.Counter[str] = field(default_factory=collections.Counter)
    # The ``message`` of each DELETE past the signature check, counted by its text (None: no
    # body, as the SDK sends when there is no message).
    messages: collections.Counter[str | None] = field(default_factory=collections.Counter)
    paths: collections.Counter[str] = field(default_factory=collections.Counter)
    arrivals: list[float] = field(default_factory=list)
    resets: int = 0
    record_arrivals: bool = True
    _rng: random.Random = field(default_factory=random.Random)
    _bucket: tuple[float, float] = (0.0, 0.0)

    def set_faults(self, faults: Faults) -> None:
        self.faults = faults
        self._rng = random.Random(faults.seed)
        self._bucket = (float(faults.quota_burst), time.monotonic())

    def seed_tasks(
        self, project_id: str, count: int, rng: random.Random | None = None
    ) -> list[str]:
        """Create ``count`` tasks with 32-hex IDs like DCS's; return their IDs."""
        rng = rng or random.Random(count)
        names = ("EXTEND", "BindEip", "AddWhitelist", "modify", "masterStandbySwapJob")
        store = self.tasks.setdefault(project_id, {})
        ids = []
        for i in range(count):
            task_id = f"{rng.getrandbits(128):032x}"
            created = datetime.fromtimestamp(1_600_000_000 + i * 60, UTC)
            store[task_id] = Task(
                task_id,
                names[i % len(names)],
                "SUCCESS",
                created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            )
            ids.append(task_id)
        return ids

    def remaining(self) -> int:
        return sum(len(tasks) for tasks in self.tasks.values())

    def take_token(self) -> bool:
        """The 429 quota: a token bucket of ``quota_rate``/s and ``quota_burst``."""
        faults = self.faults
        if faults.quota_rate <= 0:
            return True
        tokens, last = self._bucket
        now = time.monotonic()
        tokens = min(float(faults.quota_burst), tokens + (now - last) * faults.quota_rate)
        if tokens < 1.0:
            self._bucket = (tokens, now)
            return False
        self._bucket = (tokens - 1.0, now)
        return True

    def stats(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "deletes_received": self.deletes_received,
            "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
            "deleted": sum(self.deleted.values()),
            "deleted_twice": sum(1 for v in self.deleted.values() if v > 1),
            "remaining": self.remaining(),
            "faults": asdict(self.faults),
        }


def _compact(created_at: str) -> str:
    """``2020-09-13T12:26:40.000Z`` as the list API's time filters write it: ``20200913122640``."""
    return re.sub(r"\D", "", created_at)[:14]


def _message(body: bytes) -> str | None:
    """A DELETE body's ``message`` (None: no body); ValueError for a body of another shape."""
    if not body:
        return None
    data = json.loads(body)
    if (
        not isinstance(data, dict)
        or set(data) != {"message"}
        or not isinstance(data["message"], str)
    ):
        raise ValueError(data)
    return data["message"]


def _error(status: int, code: str, msg: str, *, gateway: bool = False) -> web.Response:
    request_id = uuid.uuid4().hex
    body: dict[str, Any] = {"error_code": code, "error_msg": msg}
    if gateway:
        body["request_id"] = request_id
    else:
        body["error_ext_msg"] = None
    return web.json_response(body, status=status, headers={"X-Request-Id": request_id})


async def _verify(  # noqa: PLR0911 - one early answer per way a signature can be wrong
    request: web.Request, state: EmulatorState, body: bytes
) -> web.Response | None:
    """None when the signature is right, else the API gateway's 401 answer."""
    if not state.verify_signatures:
        return None
    parsed = sig.parse_authorization(request.headers.get("Authorization", ""))
    if parsed is None:
        return _error(
            401,
            "APIGW.0301",
            "Incorrect IAM authentication information: no signature",
            gateway=True,
        )
    access, signed, given = parsed
    secret = state.credentials.get(access)
    sdk_date = request.headers.get("X-Sdk-Date", "")
    try:
        when = datetime.strptime(sdk_date, sig.DATE_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return _error(
            401,
            "APIGW.0303",
            "Incorrect IAM authentication information: bad x-sdk-date",
            gateway=True,
        )
    now = time.time() + state.clock_offset_s
    if abs(when.timestamp() - now) > CLOCK_LIMIT_S:
        answer = _error(
            401,
            "APIGW.0303",
            "Incorrect IAM authentication information: request expired",
            gateway=True,
        )
        answer.headers["Date"] = email.utils.formatdate(now, usegmt=True)
        return answer
    if secret is None or any(name not in {h.lower() for h in request.headers} for name in signed):
        return _error(
            401,
            "APIGW.0301",
            "Incorrect IAM authentication information: verify aksk signature fail",
            gateway=True,
        )
    raw_path, _, raw_query = request.raw_path.partition("?")
    path = "/".join(unquote(segment) for segment in raw_path.split("/"))
    query = sig.canonical_query(parse_qsl(raw_query, keep_blank_values=True))
    headers = {name: request.headers[name] for name in signed}
    canonical = sig.canonical_request(request.method, path, query, headers, signed, body)
    expected = sig.signature(secret, sig.string_to_sign(canonical, sdk_date))
    if not _equal(expected, given):
        return _error(
            401,
            "APIGW.0301",
            "Incorrect IAM authentication information: verify aksk signature fail",
            gateway=True,
        )
    return None


def _equal(a: str, b: str) -> bool:
    import hmac

    return hmac.compare_digest(a.encode(), b.encode())


def _reset(request: web.Request) -> None:
    """Close the connection with a TCP RST (SO_LINGER 0), as a crashing proxy would."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.close()


async def _faulty(  # noqa: PLR0911 - one early answer per fault
    request: web.Request, state: EmulatorState, task_id: str
) -> web.StreamResponse | None:
    """The injected fault for this request, if any (after auth and quota)."""
    faults = state.faults
    rng = state._rng
    if faults.reset_rate and rng.random() < faults.reset_rate:
        state.resets += 1
        _reset(request)
        raise asyncio.CancelledError
    if faults.drip_seconds:
        resp = web.StreamResponse(
            status=500,
            headers={"Content-Type": "application/json", "X-Request-Id": uuid.uuid4().hex},
        )
        await resp.prepare(request)
        deadline = time.monotonic() + faults.drip_seconds
        try:
            while time.monotonic() < deadline:
                await resp.write(b" ")
                await asyncio.sleep(0.5)
            await resp.write(b'{"error_code":"DCS.5000","error_msg":"slow"}')
        except ConnectionResetError:
            pass  # the client gave up, as it should
        return resp
    if faults.big_body_bytes:
        resp = web.StreamResponse(
            status=500, headers={"Content-Type": "text/plain", "X-Request-Id": uuid.uuid4().hex}
        )
        resp.content_length = faults.big_body_bytes
        await resp.prepare(request)
        chunk = b"x" * 65536
        sent = 0
        try:
            while sent < faults.big_body_bytes:
                piece = chunk[: faults.big_body_bytes - sent]
                await resp.write(piece)
                sent += len(piece)
        except (ConnectionResetError, RuntimeError):
            pass
        return resp
    if faults.redirect_to:
        raise web.HTTPTemporaryRedirect(faults.redirect_to + request.raw_path)
    if faults.html_502_rate and rng.random() < faults.html_502_rate:
        return web.Response(
            status=502,
            text=HTML_502,
            content_type="text/html",
        )
    if (
        faults.reject_share
        and zlib.adler32(task_id.encode()) % 10_000 < faults.reject_share * 10_000
    ):
        return _error(403, "DCS.4403", "Request rejected: the task is protected.")
    affected = zlib.crc32(task_id.encode()) % 10_000 < faults.fail_first_share * 10_000
    if faults.fail_first and affected and state.delete_calls[task_id] <= faults.fail_first:
        return _error(500, "DCS.5000", "Internal service error.")
    if faults.error_rate and rng.random() < faults.error_rate:
        return _error(500, "DCS.5000", "Internal service error.")
    return None


def make_app(state: EmulatorState) -> web.Application:  # noqa: PLR0915 - routes share state
    """The emulator as an aiohttp application (the caller decides where it listens)."""
    app = web.Application(client_max_size=1024 * 1024)

    @web.middleware
    async def count(request: web.Request, handler: Any) -> web.StreamResponse:
        state.requests += 1
        if state.record_arrivals:
            state.arrivals.append(time.monotonic())
        state.paths[request.raw_path[:200]] += 1
        resp: web.StreamResponse = await handler(request)
        state.by_status[resp.status] += 1
        return resp

    async def gate(request: web.Request, body: bytes, task_id: str) -> web.StreamResponse | None:
        faults = state.faults
        if faults.latency_ms or faults.latency_jitter_ms:
            jitter = state._rng.uniform(0, faults.latency_jitter_ms)
            await asyncio.sleep((faults.latency_ms + jitter) / 1000.0)
        if not faults.api_published:
            return await no_such_api(request)
        refused = await _verify(request, state, body)
        if refused is not None:
            return refused
        if not state.take_token():
            resp = _error(
                429,
                "APIGW.0308",
                THROTTLED_UNSTATED
                if faults.quota_unstated
                else THROTTLED.format(int(faults.quota_rate * 60)),
                gateway=True,
            )
            if faults.retry_after is not None:
                resp.headers["Retry-After"] = f"{faults.retry_after:g}"
            return resp
        return await _faulty(request, state, task_id)

    async def delete_task(request: web.Request) -> web.StreamResponse:
        project_id = request.match_info["project_id"]
        task_id = request.match_info["task_id"]
        body = await request.read()
        state.deletes_received += 1
        state.delete_calls[task_id] += 1
        early = await gate(request, body, task_id)
        if early is not None:
            return early
        if request.headers.get("X-Project-Id", project_id) != project_id:
            return _error(400, "DCS.4001", "X-Project-Id does not match the URL's project.")
        try:
            state.messages[_message(body)] += 1
        except ValueError:  # JSONDecodeError too
            return _error(400, "DCS.4800", 'The body must be {"message": "<text>"} or empty.')
        store = state.tasks.get(project_id, {})
        if store.pop(task_id, None) is None:
            return _error(404, "DCS.4133", "The task does not exist.")
        state.deleted[task_id] += 1
        return web.Response(status=200, headers={"X-Request-Id": uuid.uuid4().hex})

    async def list_tasks(request: web.Request) -> web.StreamResponse:
        project_id = request.match_info["project_id"]
        early = await gate(request, await request.read(), "")
        if early is not None:
            return early
        try:
            offset = int(request.query.get("offset", "0"))
            limit = int(request.query.get("limit", "10"))
        except ValueError:
            return _error(400, "DCS.4800", "Invalid offset or limit.")
        if not 1 <= limit <= 1000 or offset < 0:
            return _error(400, "DCS.4800", "limit must be 1..1000 and offset >= 0.")
        tasks = list(state.tasks.get(project_id, {}).values())
        for name, keep in (("start_time", operator.ge), ("end_time", operator.le)):
            if name in request.query:
                bound = request.query[name]
                if not re.fullmatch(r"\d{14}", bound):
                    return _error(400, "DCS.4800", f"{name} must be yyyyMMddHHmmss (UTC).")
                tasks = [t for t in tasks if keep(_compact(t.created_at), bound)]
        cap = state.faults.list_page_cap
        page = tasks[offset : offset + (min(limit, cap) if cap else limit)]
        return web.json_response(
            {
                **({"task_count": str(len(tasks))} if state.faults.list_count else {}),
                "tasks": [
                    {
                        "id": t.task_id,
                        "name": t.name,
                        "details": "",
                        "user_name": "ops",
                        "user_id": "0" * 32,
                        "params": "",
                        "status": t.status,
                        "created_at": t.created_at,
                        "updated_at": t.created_at,
                        "error_code": None,
                        "enable_show": True,
                        "job_id": "",
                    }
                    for t in page
                ],
            },
            headers={"X-Request-Id": uuid.uuid4().hex},
        )

    async def stats(request: web.Request) -> web.StreamResponse:
        del request
        return web.json_response(state.stats())

    async def no_such_api(request: web.Request) -> web.StreamResponse:
        del request
        return _error(404, "APIGW.0101", NO_SUCH_API, gateway=True)

    async def set_faults(request: web.Request) -> web.StreamResponse:
        data = await request.json()
        state.set_faults(replace(state.faults, **data))
        return web.json_response(asdict(state.faults))

    @web.middleware
    async def web_server(request: web.Request, handler: Any) -> web.StreamResponse:
        status = state.faults.web_server_status
        if not status or request.path.startswith("/_emulator/"):
            resp: web.StreamResponse = await handler(request)
            return resp
        title = f"{status} {HTTPStatus(status).phrase}"
        page = f"<html><head><title>{title}</title></head><body><h1>{title}</h1></body></html>"
        return web.Response(status=status, text=page, content_type="text/html")

    app.middlewares.append(count)
    app.middlewares.append(web_server)
    app.router.add_route("DELETE", "/v2/{project_id}/tasks/{task_id}", delete_task)
    app.router.add_route("GET", "/v2/{project_id}/tasks", list_tasks)
    app.router.add_route("GET", "/_emulator/stats", stats)
    app.router.add_route("POST", "/_emulator/faults", set_faults)
    app.router.add_route("*", "/{path:.*}", no_such_api)  # the gateway's answer to any other
    return app
