"""Prometheus metrics of the service (``GET /metrics``), all prefixed ``rconv_``.

Counted where the service sees them: requests by endpoint and outcome when they arrive;
durations, bytes and build cache hits when ``tracker`` sees a task finish (each task once);
tasks by state and the queue depth read at scrape time from the task index and the broker.
Workers export nothing themselves, so any number of them on any machine add up here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600)


class _Live(Collector):
    """Gauges read when scraped: tasks by state, messages waiting in the broker."""

    def __init__(
        self, counts: Callable[[], dict[str, int]], depth: Callable[[], int | None]
    ) -> None:
        self._counts, self._depth = counts, depth

    def collect(self) -> Iterator[GaugeMetricFamily]:
        tasks = GaugeMetricFamily(
            "rconv_tasks", "Tasks known to the service, by state", labels=["state"]
        )
        for state, n in self._counts().items():
            tasks.add_metric([state], n)
        yield tasks
        depth = self._depth()
        if depth is not None:
            yield GaugeMetricFamily(
                "rconv_queue_depth", "Messages waiting in the queue", value=depth
            )


class Metrics:
    def __init__(
        self, counts: Callable[[], dict[str, int]], depth: Callable[[], int | None]
    ) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "rconv_requests", "Webhook and API calls, by endpoint and outcome",
            ["endpoint", "outcome"], registry=r,
        )  # fmt: skip
        self.finished = Counter(
            "rconv_tasks_finished", "Tasks finished, by state", ["state"], registry=r
        )
        self.run_seconds = Histogram(
            "rconv_task_run_seconds", "Time a worker spent on a task's last attempt",
            buckets=_BUCKETS, registry=r,
        )  # fmt: skip
        self.total_seconds = Histogram(
            "rconv_task_total_seconds", "Time from the push (or the request) to the Nydus tag",
            buckets=_BUCKETS, registry=r,
        )  # fmt: skip
        self.bytes_in = Counter("rconv_source_bytes", "Source layer bytes read", registry=r)
        self.bytes_stored = Counter("rconv_blob_bytes", "Nydus blob bytes written", registry=r)
        self.cache_hits = Counter(
            "rconv_build_cache_hits", "Layers found in the build cache", registry=r
        )
        self.cache_misses = Counter(
            "rconv_build_cache_misses", "Layers not found in the build cache", registry=r
        )
        r.register(_Live(counts, depth))

    def task_finished(self, task: dict) -> None:
        self.finished.labels(task["state"]).inc()
        timings = task["timings"]
        if timings["run_seconds"] is not None:
            self.run_seconds.observe(timings["run_seconds"])
        if timings["total_seconds"] is not None:
            self.total_seconds.observe(timings["total_seconds"])
        result = task.get("result") or {}
        self.bytes_in.inc(result.get("bytes_in") or 0)
        self.bytes_stored.inc(result.get("bytes_stored") or 0)
        self.cache_hits.inc(result.get("cache_hits") or 0)
        self.cache_misses.inc(result.get("cache_misses") or 0)

    def render(self) -> bytes:
        return generate_latest(self.registry)
