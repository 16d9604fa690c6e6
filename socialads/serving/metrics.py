"""Prometheus metrics of the API (exposed with prometheus-client).

Series: ``socialads_http_requests_total{route,method,status}``,
``socialads_http_request_duration_seconds{route,status}`` (histogram),
``socialads_predictions_total{label}``, ``socialads_model_info{name,version,alias,engine}``
(1 for the version being served), ``socialads_model_version`` (numeric, 0 before the first
load), ``socialads_model_ready``, ``socialads_model_reloads_total{outcome}`` and
``socialads_prediction_log_dropped_total``.

Cost on the request path: prometheus-client's ``Counter.inc`` takes about 1 µs and
``Histogram.observe`` several (a lock per value, label resolution), measured next to a
~2 µs prediction. With one worker the request and prediction counts are therefore plain
integers updated on the event loop thread (:class:`LoopStats`, well under 1 µs a request)
and turned into Prometheus metric families only when ``/metrics`` is scraped.

Several uvicorn workers: :func:`socialads.serving.server.run` switches prometheus-client
to its multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, a private folder) before the
workers start; the request series then use prometheus-client's own (file-backed) metrics
and a scrape sums them over all workers, whichever worker answers it. The model gauges
are reported per worker (a ``pid`` label), since workers reload on their own schedule;
the process collector (CPU, memory) is only exported with a single worker.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from socialads.data.schema import CLASSES, label_for

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from socialads.serving.model_store import LoadedModel

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
REQUESTS = "socialads_http_requests"
REQUESTS_HELP = "HTTP requests by route template, method and status."
LATENCY = "socialads_http_request_duration_seconds"
LATENCY_HELP = "Time from the request reaching the app to the end of the response."
PREDICTIONS = "socialads_predictions"
PREDICTIONS_HELP = "Predictions served, by label."


def multiprocess_mode() -> bool:
    """True when prometheus-client writes its values to the multiprocess folder."""
    from prometheus_client import values

    return bool(getattr(values.ValueClass, "_multiprocess", False))


class LoopStats:
    """Request and prediction counts as plain numbers, exported at scrape time.

    Only the event loop thread updates them (the handlers and the middleware run there),
    so no lock is needed; a scrape reads them on that same thread.
    """

    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self._buckets = buckets
        self._requests: dict[tuple[str, str, int], list[Any]] = {}
        self.predictions = [0] * len(CLASSES)
        """Predictions by class."""

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one finished request and its latency."""
        key = (route, method, status)
        entry = self._requests.get(key)
        if entry is None:
            entry = self._requests[key] = [0, 0.0, [0] * (len(self._buckets) + 1)]
        entry[0] += 1
        entry[1] += seconds
        entry[2][bisect_left(self._buckets, seconds)] += 1  # "le" buckets; last is +Inf

    def count_prediction(self, prediction: int) -> None:
        """Count one prediction of class ``prediction``."""
        self.predictions[prediction] += 1

    def count_predictions(self, ones: int, zeros: int) -> None:
        """Count a batch of predictions."""
        self.predictions[1] += ones
        self.predictions[0] += zeros

    def collect(self) -> Iterator[Metric]:
        """prometheus-client's collector protocol."""
        from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

        labels = ["route", "method", "status"]
        requests = CounterMetricFamily(REQUESTS, REQUESTS_HELP, labels=labels)
        by_route: dict[tuple[str, str], tuple[list[int], list[float]]] = {}
        for (route, method, status), (count, total, buckets) in list(self._requests.items()):
            requests.add_metric([route, method, str(status)], count)
            counts, seconds = by_route.setdefault((route, str(status)), ([0] * len(buckets), [0.0]))
            for i, n in enumerate(buckets):
                counts[i] += n
            seconds[0] += total
        latency = HistogramMetricFamily(LATENCY, LATENCY_HELP, labels=["route", "status"])
        bounds = [*(f"{b:g}" for b in self._buckets), "+Inf"]
        for (route, status_text), (counts, seconds) in by_route.items():
            cumulative: list[tuple[str, float]] = []
            running = 0
            for upper, n in zip(bounds, counts, strict=True):
                running += n
                cumulative.append((upper, running))
            latency.add_metric([route, status_text], cumulative, seconds[0])
        predictions = CounterMetricFamily(PREDICTIONS, PREDICTIONS_HELP, labels=["label"])
        for cls, count in zip(CLASSES, self.predictions, strict=True):
            predictions.add_metric([label_for(cls)], count)
        yield from (requests, latency, predictions)


class SharedStats:
    """The same series with prometheus-client's metrics, for its multiprocess mode."""

    def __init__(self, registry: Any) -> None:
        from prometheus_client import Counter, Histogram

        self._requests = Counter(
            REQUESTS, REQUESTS_HELP, ["route", "method", "status"], registry=registry
        )
        self._latency = Histogram(
            LATENCY, LATENCY_HELP, ["route", "status"], buckets=LATENCY_BUCKETS, registry=registry
        )
        counter = Counter(PREDICTIONS, PREDICTIONS_HELP, ["label"], registry=registry)
        self._predictions = [counter.labels(label=label_for(c)) for c in CLASSES]
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one finished request and its latency."""
        children = self._children.get((route, method, status))
        if children is None:
            code = str(status)
            children = (
                self._requests.labels(route=route, method=method, status=code),
                self._latency.labels(route=route, status=code),
            )
            self._children[(route, method, status)] = children
        children[0].inc()
        children[1].observe(seconds)

    def count_prediction(self, prediction: int) -> None:
        """Count one prediction of class ``prediction``."""
        self._predictions[prediction].inc()

    def count_predictions(self, ones: int, zeros: int) -> None:
        """Count a batch of predictions."""
        if ones:
            self._predictions[1].inc(ones)
        if zeros:
            self._predictions[0].inc(zeros)


class ServingMetrics:
    """The metrics of one app instance, in a registry of its own."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge

        self.multiprocess = multiprocess_mode()
        self.registry = CollectorRegistry()
        reg = self.registry
        self.stats: LoopStats | SharedStats
        if self.multiprocess:
            self.stats = SharedStats(reg)
        else:
            from prometheus_client import ProcessCollector

            ProcessCollector(registry=reg)
            self.stats = LoopStats()
            reg.register(self.stats)
        # Bound once: the request path calls these directly.
        self.observe_request = self.stats.observe
        self.count_prediction = self.stats.count_prediction
        self.count_predictions = self.stats.count_predictions
        self._model_info = Gauge(
            "socialads_model_info",
            "1 for the model version being served.",
            ["name", "version", "alias", "engine"],
            registry=reg,
            multiprocess_mode="liveall",
        )
        self._model_version = Gauge(
            "socialads_model_version",
            "Registered version being served (0: none yet).",
            registry=reg,
            multiprocess_mode="liveall",
        )
        self._model_ready = Gauge(
            "socialads_model_ready", "1 once a model is loaded.", registry=reg,
            multiprocess_mode="liveall",
        )  # fmt: skip
        self._reloads = Counter(
            "socialads_model_reloads",
            "Model (re)load attempts by outcome: loaded, unchanged, failed.",
            ["outcome"],
            registry=reg,
        )
        for outcome in ("loaded", "unchanged", "failed"):
            self._reloads.labels(outcome=outcome)
        self._log_dropped = Counter(
            "socialads_prediction_log_dropped",
            "Prediction log and feedback records dropped because the lake was unreachable "
            "and the buffer was full.",
            registry=reg,
        )

    def prediction_log_dropped(self, count: int) -> None:
        """Count records the prediction log had to drop (called from its writer thread)."""
        self._log_dropped.inc(count)

    def model_swapped(self, previous: LoadedModel | None, current: LoadedModel) -> None:
        """Point the model gauges at ``current``."""
        if previous is not None:
            self._model_info.labels(*_info_labels(previous)).set(0)
        self._model_info.labels(*_info_labels(current)).set(1)
        try:
            self._model_version.set(float(current.version))
        except ValueError:  # MLflow versions are integers; anything else shows as -1
            self._model_version.set(-1)
        self._model_ready.set(1)

    def reload_outcome(self, outcome: str) -> None:
        """Count one load attempt: ``loaded``, ``unchanged`` or ``failed``."""
        self._reloads.labels(outcome=outcome).inc()

    def render(self) -> bytes:
        """The exposition text of every series (all workers in multiprocess mode)."""
        from prometheus_client import CollectorRegistry, generate_latest

        if not self.multiprocess:
            return generate_latest(self.registry)
        from prometheus_client import multiprocess

        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
        return generate_latest(merged)


def _info_labels(model: LoadedModel) -> tuple[str, str, str, str]:
    champion = model.champion
    return champion.name, champion.version, champion.alias, model.engine.name
