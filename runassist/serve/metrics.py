"""Prometheus metrics in the text exposition format (version 0.0.4), written by hand.

Why not ``prometheus_client``: it is not a dependency, its default registry is
process-global (this package keeps no module-level state: each app owns its
``Metrics``), and the handful of counters and histograms needed here is a few dozen
lines. Every update happens on the event loop; the lock only guards against a
scrape rendering while a worker thread's callback updates.

Per process: with ``--workers N`` each worker keeps its own numbers, so a scrape sees
the worker that answered it (the usual multi-process caveat).
"""

from __future__ import annotations

import bisect
import threading
from typing import Iterable

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: tuple[str, ...], values: tuple[str, ...], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _number(value: float) -> str:
    if value == float("inf"):
        return "+Inf"
    return repr(int(value)) if float(value).is_integer() else repr(float(value))


class Counter:
    def __init__(self, name: str, help: str, labels: tuple[str, ...] = ()):
        self.name, self.help, self.label_names = name, help, labels
        self.values: dict[tuple[str, ...], float] = {}

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + amount

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} counter"
        for labels, value in sorted(self.values.items()):
            yield f"{self.name}{_labels(self.label_names, labels)} {_number(value)}"


class Histogram:
    def __init__(self, name: str, help: str, buckets: tuple[float, ...], labels: tuple[str, ...] = ()):
        self.name, self.help, self.label_names = name, help, labels
        self.bounds = tuple(sorted(buckets))
        self.series: dict[tuple[str, ...], list] = {}  # labels -> [bucket counts..., sum, count]

    def observe(self, value: float, *labels: str) -> None:
        row = self.series.setdefault(labels, [0] * len(self.bounds) + [0.0, 0])
        index = bisect.bisect_left(self.bounds, value)  # first bound >= value: `le` is inclusive
        if index < len(self.bounds):
            row[index] += 1
        row[-2] += value
        row[-1] += 1

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} histogram"
        for labels, row in sorted(self.series.items()):
            cumulative = 0
            for bound, n in zip(self.bounds, row):
                cumulative += n
                le = 'le="' + _number(bound) + '"'
                yield f"{self.name}_bucket{_labels(self.label_names, labels, le)} {cumulative}"
            le = 'le="+Inf"'
            yield f"{self.name}_bucket{_labels(self.label_names, labels, le)} {row[-1]}"
            yield f"{self.name}_sum{_labels(self.label_names, labels)} {_number(row[-2])}"
            yield f"{self.name}_count{_labels(self.label_names, labels)} {row[-1]}"


class Gauge:
    kind = "gauge"

    def __init__(self, name: str, help: str, read):
        self.name, self.help, self.read = name, help, read

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} {self.kind}"
        yield f"{self.name} {_number(float(self.read()))}"


class CounterView(Gauge):
    """A counter kept elsewhere (the int8 guard's), read at scrape time."""

    kind = "counter"


class Metrics:
    """The service's metrics; one instance per app."""

    def __init__(self, *, queued_items=lambda: 0, guard=None):
        self._lock = threading.Lock()
        self.requests = Counter("runassist_requests_total", "HTTP requests by route, method and status code.",
                                ("route", "method", "status"))
        self.latency = Histogram("runassist_request_duration_seconds", "HTTP request latency by route.",
                                 LATENCY_BUCKETS, ("route",))
        self.errors = Counter("runassist_errors_total",
                              "Requests answered with an error, by kind (bad_json, invalid_input, limit, "
                              "unauthorized, not_found, unavailable, internal).", ("kind",))
        self.inputs = Counter("runassist_inputs_total", "Inputs predicted.")
        self.batch_size = Histogram("runassist_batch_size", "Inputs per predictor call (micro-batch size).",
                                    BATCH_BUCKETS)
        self.batch_requests = Histogram("runassist_batch_requests", "Requests merged into one predictor call.",
                                        BATCH_BUCKETS)
        self.batch_latency = Histogram("runassist_batch_duration_seconds", "Time of one predictor call.",
                                       LATENCY_BUCKETS)
        self.queue = Gauge("runassist_queued_inputs", "Inputs waiting for the model.", queued_items)
        self.predicting = 0
        self.in_flight = Gauge("runassist_predict_in_flight", "POST /v1/predict requests being answered.",
                               lambda: self.predicting)
        # With an int8 ONNX model: how often its guard sent a close call to the fp32 model.
        self.guard = [] if guard is None else [
            CounterView("runassist_int8_windows_total", "Model inputs (windows) the int8 model answered.",
                        lambda: guard.seen),
            CounterView("runassist_int8_rechecked_total", "Of those, re-run in fp32 because their decision "
                        f"margin was below the guard threshold ({guard.threshold}).", lambda: guard.rechecked)]

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests.inc(route, method, str(status))
            self.latency.observe(seconds, route)

    def observe_batch(self, items: int, requests: int, seconds: float) -> None:
        with self._lock:
            self.inputs.inc(amount=items)
            self.batch_size.observe(items)
            self.batch_requests.observe(requests)
            self.batch_latency.observe(seconds)

    def error(self, kind: str) -> None:
        with self._lock:
            self.errors.inc(kind)

    def render(self) -> str:
        with self._lock:
            lines = [line for metric in (self.requests, self.latency, self.errors, self.inputs, self.batch_size,
                                         self.batch_requests, self.batch_latency, self.queue, self.in_flight,
                                         *self.guard)
                     for line in metric.render()]
        return "\n".join(lines) + "\n"
