"""Run the emulator on a loopback port, in its own thread and event loop (tests, demo, CLI)."""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Self, cast

from aiohttp import web

from worker.emulator.app import EmulatorState, make_app
from worker.settings import is_loopback


class EmulatorServer:
    """``with EmulatorServer(state) as emu: emu.url`` — serves until the block ends."""

    def __init__(
        self,
        state: EmulatorState | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if not is_loopback(host):
            msg = f"the emulator listens on loopback addresses only, not {host!r}"
            raise ValueError(msg)
        self.state = state or EmulatorState()
        self.host = host
        self.port = port
        self._ssl = ssl_context  # serve https (tests of TLS through a proxy)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self._ssl else 'http'}://{self.host}:{self.port}"

    def __enter__(self) -> Self:
        self._thread = threading.Thread(target=self._serve, name="dcs-emulator", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    def _serve(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        runner = web.AppRunner(make_app(self.state), access_log=None, handle_signals=False)
        try:
            await runner.setup()
            site = web.TCPSite(runner, self.host, self.port, backlog=1024, ssl_context=self._ssl)
            await site.start()
            self.port = _bound_port(site, self.port)
        except OSError as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()


async def serve_forever(
    state: EmulatorState, host: str, port: int, on_ready: Callable[[int], None] | None = None
) -> None:
    """Serve in the current event loop until cancelled (``dcs-cleanup emulator``), calling
    ``on_ready`` with the port (the one bound, for 0) once listening. ``OSError`` if it cannot
    listen (the port taken)."""
    runner = web.AppRunner(make_app(state), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, backlog=1024)
        await site.start()
        if on_ready is not None:
            on_ready(_bound_port(site, port))
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def _bound_port(site: web.TCPSite, asked: int) -> int:
    """The port ``site`` listens on: the one the system chose when ``asked`` was 0."""
    # The only way to learn the port bound to 0.
    server = cast("asyncio.Server | None", site._server)
    if server is not None and server.sockets:
        return int(server.sockets[0].getsockname()[1])
    return asked
