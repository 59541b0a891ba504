"""Prometheus metrics: served on ``/metrics`` by a queue consumer, pushed to a Pushgateway at the
end of a batch run. Each run has its own registry, so tests and repeated runs never collide."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, push_to_gateway
from prometheus_client.exposition import basic_auth_handler, default_handler
from yarl import URL

from worker.models import TaskResult


class Metrics:
    """Counters by outcome and HTTP status, retries, throttles, latency, requests in flight."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._children: dict[str, Counter] = {}
        self.outcomes = Counter(
            "dcs_cleanup_tasks", "Tasks by final outcome", ["outcome"], registry=self.registry
        )
        self.responses = Counter(
            "dcs_cleanup_responses",
            "Answers by HTTP status (network/timeout for none)",
            ["status"],
            registry=self.registry,
        )
        self.retries = Counter("dcs_cleanup_retries", "Retries scheduled", registry=self.registry)
        self.throttled = Counter(
            "dcs_cleanup_throttled", "Answers that were HTTP 429", registry=self.registry
        )
        self.latency = Histogram(
            "dcs_cleanup_request_seconds",
            "Latency of single requests",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.inflight = Gauge("dcs_cleanup_inflight", "Requests in flight", registry=self.registry)
        self.rate = Gauge(
            "dcs_cleanup_rate_limit", "Request rate limit now (0 = none)", registry=self.registry
        )
        self.quota = Gauge(
            "dcs_cleanup_quota_stated",
            "Requests/s the gateway's 429s state the account may send (0 = none stated)",
            registry=self.registry,
        )
        self._queue: dict[str, Gauge] = {}
        self._queue_counts: dict[str, Counter] = {}
        self._queue_seen: dict[str, int] = {}

    def on_pipeline(self, inflight: int, rate: float, quota: float | None) -> None:
        """The run's gauges as they are now: before a scrape, and before the push at the end."""
        self.inflight.set(inflight)
        self.rate.set(rate)
        self.quota.set(quota or 0.0)

    def on_queue(self, state: Mapping[str, float] | None, counts: Mapping[str, int]) -> None:
        """A queue consumer's look at its stream (None: Redis did not answer) and its running
        counts of entries acknowledged, dead-lettered and trimmed."""
        if not self._queue:
            for name, what in (
                ("up", "1 if Redis answered the last look at the queue, else 0"),
                ("length", "Entries in the stream"),
                ("lag", "Entries of the stream not yet delivered to the group"),
                ("pending", "Entries delivered to the group and not yet acknowledged"),
                ("dead", "Entries in the dead-letter stream (failed, rejected, invalid)"),
            ):
                self._queue[name] = Gauge(f"dcs_cleanup_queue_{name}", what, registry=self.registry)
            for name, what in (
                ("acked", "Entries this consumer acknowledged"),
                ("dead_lettered", "Entries this consumer copied to the dead-letter stream"),
                ("trimmed", "Entries this consumer trimmed from the stream"),
            ):
                self._queue_counts[name] = Counter(
                    f"dcs_cleanup_queue_{name}", what, registry=self.registry
                )
        self._queue["up"].set(0 if state is None else 1)
        for name, value in (state or {}).items():
            self._queue[name].set(value)
        for name, count in counts.items():
            self._queue_counts[name].inc(count - self._queue_seen.get(name, 0))
            self._queue_seen[name] = count

    def on_answer(self, status: str, elapsed_ms: float | None, *, throttled: bool) -> None:
        """One answer, as ``RunStats`` classified it (``status`` may be timeout/network)."""
        # labels() takes a lock and builds a key on every call; the children are few and fixed.
        child = self._children.get(status)
        if child is None:
            child = self._children[status] = self.responses.labels(status)
        child.inc()
        if elapsed_ms is not None:
            self.latency.observe(elapsed_ms / 1000.0)
        if throttled:
            self.throttled.inc()

    def on_results(self, results: Iterable[TaskResult]) -> None:
        counts: dict[str, int] = {}
        for result in results:
            counts[result.outcome.value] = counts.get(result.outcome.value, 0) + 1
        for outcome, count in counts.items():
            self.outcomes.labels(outcome).inc(count)

    def push(
        self, gateway: str, job: str = "dcs-cleanup", grouping: dict[str, str] | None = None
    ) -> None:
        """Push every metric of this run to a Prometheus Pushgateway (blocking). With
        ``--processes`` each process pushes its own group (``process="<index>"``). A
        ``user:password@`` in the URL is sent as HTTP basic auth: urllib would take it for
        part of the host name."""
        url = URL(gateway)
        handler: Callable[..., Callable[[], None]] = default_handler
        if url.user is not None:
            handler = functools.partial(
                basic_auth_handler, username=url.user, password=url.password or ""
            )
            gateway = str(url.with_user(None))
        push_to_gateway(
            gateway,
            job=job,
            registry=self.registry,
            grouping_key=grouping,
            timeout=10,
            handler=handler,
        )
