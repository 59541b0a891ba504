"""The DCS API client: one aiohttp session, signed requests, every answer parsed, never trusted.

This is the only module that touches aiohttp's client; its errors become ``TransportError`` here.
A request is bounded in time (``timeout`` covers connect, headers and body), the error body read is
capped (a hostile or broken server cannot make the worker buffer megabytes), and redirects are never
followed (a signed request must not be replayed to another host).

The time bound is kept by one watchdog callback per client rather than aiohttp's per-request
timeout, which arms and cancels a loop timer (and a timer context) for every request: under uvloop
that was 25,000 of a request's ~510,000 instructions. The watchdog runs every ``timeout / 10``
seconds (at most 1 s) and cancels the task of each request past its deadline at the point where it
waits inside the request; the request turns that cancellation into ``RequestTimeoutError``, so a
request ends between ``timeout`` and ``timeout`` + one tick.

An https endpoint is reached through the proxy that ``HTTPS_PROXY`` names, unless ``NO_PROXY``
covers its host (an ``http://`` proxy, tunnelled with CONNECT; ``user:password@`` in its URL is
sent as Proxy-Authorization). It is looked up once per client, not per request as aiohttp's
``trust_env`` does. Plain-http endpoints, loopback only, never use one.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import socket
import time
import urllib.request
import warnings
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, Self

import aiohttp
import anyio
from aiohttp import hdrs
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from worker import __version__
from worker.answers import clock_note, parse_error_body, parse_retry_after
from worker.errors import (
    ConfigError,
    RequestTimeoutError,
    TlsMismatchError,
    TransportError,
    UntrustedCertificateError,
)
from worker.models import CLOCK_REFUSED, HTML_PAGE, ApiResponse
from worker.signer import Signer, canonical_query, wire_path

MAX_ERROR_BODY = 64 * 1024
MAX_LIST_BODY = 32 * 1024 * 1024  # a page of 1,000 tasks is some 500 KB
UNTRUSTED_HINT = (
    "; the endpoint's TLS certificate is not trusted here (behind a TLS-inspecting proxy, "
    "point SSL_CERT_FILE at its CA bundle)"
)
# OpenSSL's reasons for a handshake that no retry will mend, and what each most likely means.
_NOT_TLS = (
    "; the endpoint answered in something other than TLS: is it an http:// address given "
    "as https://?"
)
_NO_COMMON = "; the endpoint shares no TLS version or cipher with this client"
TLS_MISMATCH_HINTS = {
    "WRONG_VERSION_NUMBER": _NOT_TLS,
    "PACKET_LENGTH_TOO_LONG": _NOT_TLS,
    "UNSUPPORTED_PROTOCOL": _NO_COMMON,
    "NO_PROTOCOLS_AVAILABLE": _NO_COMMON,
    "TLSV1_ALERT_PROTOCOL_VERSION": _NO_COMMON,
    "SSLV3_ALERT_HANDSHAKE_FAILURE": _NO_COMMON,
    "TLSV1_ALERT_INSUFFICIENT_SECURITY": _NO_COMMON,
}


def transport_error(exc: aiohttp.ClientError) -> TransportError:
    """What a request that got no HTTP answer ran into; a TLS handshake that no retry mends
    (the certificate, no TLS at that address) becomes the error that stops the run."""
    kind, detail = type(exc).__name__, str(exc)[:300]
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return UntrustedCertificateError(kind, detail + UNTRUSTED_HINT)
    if isinstance(exc, aiohttp.ClientConnectorSSLError):
        hint = TLS_MISMATCH_HINTS.get(getattr(exc.os_error, "reason", None) or "")
        if hint is not None:  # else a handshake cut short, say: retried as network errors are
            return TlsMismatchError(kind, detail + hint)
    return TransportError(kind, detail)


def _check_env_proxy(base: URL) -> None:
    """Only an ``http://host[:port]`` proxy is spoken to (with CONNECT). Another one in
    ``HTTPS_PROXY`` (or ``https_proxy``) failed every task or was passed by: no scheme
    (``proxy.corp:3128``) as InvalidURL, a ``socks5://`` one sent CONNECT as if it were an
    http one, and an ``https://`` one ignored by aiohttp, the requests going out directly."""
    raw = urllib.request.getproxies_environment().get("https")
    # NO_PROXY as aiohttp reads it (proxy_bypass, which on Linux reads the environment).
    if not raw or urllib.request.proxy_bypass(base.host or ""):
        return
    try:
        proxy = URL(raw)
    except ValueError:  # not even a URL ("http://[bad")
        proxy = URL()
    if proxy.scheme == "http" and proxy.host:
        return
    # Without the user:password a proxy URL may carry.
    shown = str(proxy.with_user(None)) if proxy.is_absolute() else raw.rpartition("@")[2]
    msg = (
        f"HTTPS_PROXY {shown!r}: give an http:// proxy, e.g. http://proxy.example:3128 "
        "(https and SOCKS proxies are not supported)"
    )
    raise ConfigError(msg)


LOOKUP_TIMEOUT = 10.0  # seconds the start-up lookup of the endpoint's host may take


async def check_resolves(base: URL) -> None:
    """A host that the resolver says does not exist (a misspelt ``--region``) is a setting to
    fix, not a network blip: ``ConfigError``, before anything is sent. Any other outcome of the
    lookup (a DNS server that does not answer, a slow one) is left to the requests' retries."""
    host = base.host or ""
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(host)
        return  # an address: nothing to look up
    try:
        with anyio.move_on_after(LOOKUP_TIMEOUT):
            await asyncio.get_running_loop().getaddrinfo(host, base.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        if exc.errno in (socket.EAI_NONAME, socket.EAI_NODATA):
            msg = (
                f"endpoint {base}: the host {host} does not resolve ({exc.strerror}); "
                "is --region or --endpoint right?"
            )
            raise ConfigError(msg) from None


class _Deadline:
    """When a request in flight runs out of time, and whether the watchdog has cancelled it for
    that. ``time.monotonic()``, not the loop's clock: uvloop's is read once per loop pass (in
    whole milliseconds), so a deadline taken from it could end a request before ``timeout``."""

    __slots__ = ("at", "expired")

    def __init__(self, at: float) -> None:
        self.at = at
        self.expired = False


class DcsClient:
    """Sends signed DCS task-center requests. Use as an async context manager."""

    def __init__(
        self,
        base_url: str,
        signer: Signer,
        *,
        concurrency: int,
        timeout: float,
        max_error_body: int = MAX_ERROR_BODY,
    ) -> None:
        self._base = URL(base_url)
        self._origin = base_url.rstrip("/")
        self._host = self._base.host_port_subcomponent or ""
        self._signer = signer
        self._concurrency = concurrency
        self._timeout = timeout
        self._max_error_body = max_error_body
        self._session: aiohttp.ClientSession | None = None
        self._inflight: dict[asyncio.Task[Any], _Deadline] = {}  # requests in flight, by task
        self._tick = min(1.0, max(0.01, timeout / 10))
        self._watchdog: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.proxy: URL | None = None  # the proxy in use, without its credentials

    def __repr__(self) -> str:
        return f"DcsClient({self._origin!r})"

    async def __aenter__(self) -> Self:
        connector = aiohttp.TCPConnector(
            limit=self._concurrency, limit_per_host=self._concurrency, ttl_dns_cache=300
        )
        proxy_auth: aiohttp.BasicAuth | None = None
        if self._base.scheme == "https":
            _check_env_proxy(self._base)
            with contextlib.suppress(LookupError):
                self.proxy, proxy_auth = get_env_proxy_for_url(self._base)
        if self.proxy is None:  # through a proxy, the proxy looks the host up
            await check_resolves(self._base)
        with warnings.catch_warnings():
            # proxy_auth is deprecated in aiohttp 3.14, but it is the only way a CONNECT gets
            # Proxy-Authorization from a session-wide setting.
            warnings.simplefilter("ignore", DeprecationWarning)
            self._session = self._new_session(connector, proxy_auth)
        # aiohttp silently resends an idempotent request once when a pooled connection was
        # reset. A DELETE resent that way skips the rate limiter, the retry budget and the
        # outcome's attempt count, so every resend here goes through the retry policy instead.
        if hasattr(self._session, "_retry_connection"):
            self._session._retry_connection = False
        # The session is bound to this loop. Naming it spares current_task() a lookup of the
        # running loop per request, which on Python 3.11 is a getpid() system call.
        self._loop = loop = asyncio.get_running_loop()
        self._watchdog = loop.call_later(self._tick, self._check_deadlines)
        return self

    def _new_session(
        self, connector: aiohttp.TCPConnector, proxy_auth: aiohttp.BasicAuth | None
    ) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            connector=connector,
            # No aiohttp timer per request: the watchdog keeps ``timeout`` (module docstring).
            timeout=aiohttp.ClientTimeout(),
            # Accept-Encoding: identity (no compressed error bodies) set here rather than
            # through skip_auto_headers, which costs aiohttp a header-map copy per request.
            headers={
                "User-Agent": f"dcs-task-cleanup/{__version__}",
                "Accept": "application/json",
                "Accept-Encoding": "identity",
            },
            # No cookies in this API: skip the jar's per-request filtering.
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            raise_for_status=False,
            proxy=self.proxy,
            proxy_auth=proxy_auth,
        )

    def _check_deadlines(self) -> None:
        """Cancel each request past its deadline (once), then run again in one tick.

        This runs between task steps, so a request's task is parked at an ``await`` inside
        ``_request``'s ``try``: the cancellation is raised there and nowhere else."""
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        for task, deadline in self._inflight.items():
            if not deadline.expired and deadline.at <= now:
                deadline.expired = True
                task.cancel()
        self._watchdog = loop.call_later(self._tick, self._check_deadlines)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    def delete_task(
        self, project_id: str, task_id: str, message: str | None = None
    ) -> Coroutine[Any, Any, ApiResponse]:
        """DELETE /v2/{project_id}/tasks/{task_id} (await it); raises ``TransportError`` on no
        answer. A plain function handing back the request's coroutine: one frame less a task."""
        body = json.dumps({"message": message}).encode() if message is not None else b""
        return self._request("DELETE", f"/v2/{project_id}/tasks/{task_id}", project_id, (), body)

    async def list_tasks(
        self,
        project_id: str,
        offset: int = 0,
        limit: int = 1,
        *,
        start_time: str | None = None,
        end_time: str | None = None,
        body: list[bytes] | None = None,
    ) -> ApiResponse:
        """GET /v2/{project_id}/tasks (ListCenterTask): the dry run's signed probe, and
        ``dcs-cleanup list``'s pages. With ``body``, a 2xx answer's body is appended to it
        (at most ``MAX_LIST_BODY`` bytes; a longer one is an error)."""
        query = [("limit", str(limit)), ("offset", str(offset))]
        query += [(k, v) for k, v in (("start_time", start_time), ("end_time", end_time)) if v]
        path = f"/v2/{project_id}/tasks"
        return await self._request("GET", path, project_id, tuple(query), b"", body)

    async def _request(
        self,
        method: str,
        path: str,
        project_id: str,
        query: tuple[tuple[str, str], ...],
        body: bytes,
        answer_body: list[bytes] | None = None,
    ) -> ApiResponse:
        session = self._session
        if session is None:
            raise RuntimeError("DcsClient used outside 'async with'")
        qs = canonical_query(query)
        headers = self._signer.sign_json(method, self._host, path, qs, project_id, body)
        # aiohttp writes this very Host (the URL's host_port_subcomponent, which was signed);
        # handing it over again costs a pass through two header maps on every request.
        del headers["Host"]
        url = URL(self._origin + wire_path(path) + ("?" + qs if qs else ""), encoded=True)
        started = time.perf_counter()
        task = asyncio.current_task(self._loop)
        assert task is not None  # noqa: S101 - always awaited in a task
        deadline = _Deadline(time.monotonic() + self._timeout)
        self._inflight[task] = deadline
        try:
            async with session.request(
                method, url, headers=headers, data=body or None, allow_redirects=False
            ) as resp:
                status = resp.status
                code: str | None = None
                msg: str | None = None
                if status >= 300 or resp.headers.get(hdrs.CONTENT_TYPE, "").startswith("text/html"):
                    code, msg = await self._explain(resp, status)
                if answer_body is not None and status < 300 and code is None:
                    raw, complete = await self._read_capped(resp, MAX_LIST_BODY)
                    if not complete:
                        resp.close()
                        raise TransportError("body_too_large", f"over {MAX_LIST_BODY} bytes")
                    answer_body.append(raw)
                return ApiResponse(
                    status=status,
                    error_code=code,
                    error_msg=msg,
                    request_id=resp.headers.get("X-Request-Id"),
                    # aiohttp's header names (istr) skip folding the name's case: half a lookup.
                    retry_after=parse_retry_after(resp.headers.get(hdrs.RETRY_AFTER)),
                    elapsed_ms=(time.perf_counter() - started) * 1000.0,
                )
        except TimeoutError as exc:  # not armed by this client; kept for any aiohttp-internal one
            raise RequestTimeoutError("timeout", f"no full answer within {self._timeout}s") from exc
        except asyncio.CancelledError:
            # The watchdog's cancellation, and no other (a stop's) pending: a timeout.
            if deadline.expired and task.uncancel() == 0:
                raise RequestTimeoutError(
                    "timeout", f"no full answer within {self._timeout}s"
                ) from None
            raise
        except aiohttp.ClientError as exc:
            raise transport_error(exc) from exc
        finally:
            del self._inflight[task]

    async def _explain(
        self, resp: aiohttp.ClientResponse, status: int
    ) -> tuple[str | None, str | None]:
        """(error_code, error_msg) of an answer other than a plain success: an error's body
        parsed, with the clock's offset for a refused date; where a redirect pointed; and for
        a 2xx that is a web page, ``HTML_PAGE`` with its text (an empty one is a success)."""
        raw, complete = await self._read_capped(resp, self._max_error_body)
        if not complete:
            resp.close()  # Do not drain a huge body: drop the connection instead.
        code, msg = parse_error_body(raw)
        if status < 300:
            return (HTML_PAGE, msg) if raw.strip() else (None, None)
        if code in CLOCK_REFUSED:
            msg = f"{msg or 'request date refused'}; {clock_note(resp.headers)}"
        if status < 400:
            location = resp.headers.get("Location", "")[:200]
            code = code or "REDIRECT"
            msg = f"redirect to {location!r} not followed"
        return code, msg

    async def _read_capped(self, resp: aiohttp.ClientResponse, cap: int) -> tuple[bytes, bool]:
        chunks: list[bytes] = []
        size = 0
        while size < cap:
            chunk = await resp.content.read(cap - size)
            if not chunk:
                return b"".join(chunks), True
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks), resp.content.at_eof()
