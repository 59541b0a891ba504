"""Metrics out of a run: a long-running queue consumer serves ``/healthz`` and ``/metrics``; a
batch run may push its metrics to a Prometheus Pushgateway at the end. ``prometheus_client`` is
imported only by runs that do either.
"""

from __future__ import annotations

import os
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread

from worker.errors import ConfigError
from worker.logs import get_logger
from worker.settings import Settings, redact_url
from worker.shards import unsharded
from worker.sources import TaskSource

if TYPE_CHECKING:
    from worker.metrics import Metrics
    from worker.pipeline import Pipeline
    from worker.processes import Part

log = get_logger()


def metrics_for(settings: Settings) -> Metrics | None:
    """Prometheus metrics when something reads them: a consumer's ``/metrics`` or a push."""
    if not (consumer_mode(settings) or settings.pushgateway):
        return None
    from worker.metrics import Metrics  # prometheus_client only for runs that use it

    return Metrics()


def consumer_mode(settings: Settings) -> bool:
    return settings.queue is not None and not settings.until_empty


async def serve_health(
    pipeline: Pipeline, metrics: Metrics, source: TaskSource, stack: AsyncExitStack
) -> None:
    """``/healthz`` (503 once stopping) and ``/metrics`` for a long-running queue consumer,
    served until ``stack`` closes. Its port taken is a ``ConfigError`` (exit 2), raised before
    the consumer reads an entry.

    Redis out of reach leaves ``/healthz`` ok: a restart would not bring it back, and the
    consumer goes on by itself when it returns. ``dcs_cleanup_queue_up`` is the thing to alert
    on, with the stream's lag and pending entries, which ``/metrics`` reads at each scrape."""
    from aiohttp import web
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    async def healthz(request: web.Request) -> web.Response:
        del request
        ok = pipeline.stop_reason is None
        body = {"status": "ok" if ok else "stopping", "inflight": pipeline.inflight}
        return web.json_response(body, status=200 if ok else 503)

    async def metrics_page(request: web.Request) -> web.Response:
        del request
        metrics.on_pipeline(pipeline.inflight, pipeline.limiter.rate, pipeline.quota_stated)
        if queue is not None:
            metrics.on_queue(await queue.look(), queue.counts())
        data = generate_latest(metrics.registry)
        return web.Response(body=data, headers={"Content-Type": CONTENT_TYPE_LATEST})

    from worker.queue import RedisStreamSource

    inner = unsharded(source)
    queue = inner if isinstance(inner, RedisStreamSource) else None
    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_page)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()

    async def close() -> None:
        with anyio.CancelScope(shield=True):
            await runner.cleanup()

    stack.push_async_callback(close)
    host, port = pipeline.settings.health_host, pipeline.settings.health_port
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        why = os.strerror(exc.errno) if exc.errno else str(exc)
        msg = f"--health-port {port}: cannot listen on {host}:{port}: {why}"
        raise ConfigError(msg) from None
    log.info("cleanup.health_serving", host=host, port=port)


async def push_metrics(metrics: Metrics, gateway: str, part: Part | None) -> None:
    grouping = {"process": str(part.index)} if part is not None else None
    try:
        await anyio.to_thread.run_sync(metrics.push, gateway, "dcs-cleanup", grouping)
    except OSError as exc:
        log.warning("cleanup.pushgateway_failed", gateway=redact_url(gateway), error=str(exc))
    else:
        log.info("cleanup.metrics_pushed", gateway=redact_url(gateway))
