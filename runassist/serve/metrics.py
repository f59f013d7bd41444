"""Prometheus metrics, kept and rendered by ``prometheus_client``.

Why prometheus_client: it writes the official text exposition format as Prometheus parses it
(escaping, float formatting, cumulative ``le`` buckets, ``_total`` counters), and its
multiprocess mode adds up the numbers of every ``runassist serve --workers N`` process at
scrape time; numbers kept in each process's memory can only show the worker that answered.

Per-app registries: prometheus_client's default ``REGISTRY`` is process-global and nothing here
touches it. Each app owns one ``Metrics``, which creates its metrics in its own
``CollectorRegistry``, so two apps in one process (the tests make dozens) count apart and never
clash on a name.

Multiprocess mode: ``serve()`` makes a private temporary folder, names it in
``PROMETHEUS_MULTIPROC_DIR`` before the workers start (prometheus_client decides when it is
imported whether values live in memory or in per-process files there) and removes it on exit.
A worker's metrics then write to its files, and a scrape, whichever worker answers it, renders a
registry holding only a ``MultiProcessCollector`` that reads the files of all workers. Nothing can
be read from a Python object at scrape time in that mode (another process's objects are out of
reach), so every number is written as it changes: the in-flight gauge is inc/dec'd, the queue
gauge is set when a request is queued, after each batch and at each scrape, both summed over live
workers (``livesum``; the files of dead workers are dropped at scrape time), and the int8 guard's
counts are copied into counters after each batch and at each scrape. Between those moments another
worker's queue figure can be up to one batch old. One app per process in this mode: two would
write to the same files.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess, values
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from runassist.data_profile import LOW_CONFIDENCE, WORD_EDGES
from runassist.errors import RunassistError

# The type prometheus_client itself serves generate_latest's output with (choose_encoder, when a client
# asks for no other format); its CONTENT_TYPE_LATEST now names text format 1.0.0, not this 0.0.4 text.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

_LIVE_GAUGE_FILE = re.compile(r"^gauge_live[a-z]+_(\d+)\.db$")


class Metrics:
    """The service's metrics; one instance per app. ``queued_items()`` is the batcher's queue length;
    ``guard`` the int8 model's guard (``seen``, ``rechecked``, ``threshold``), if any."""

    def __init__(self, *, queued_items: Callable[[], int] = lambda: 0, guard=None):
        self.multiprocess_dir = _multiprocess_dir()
        self.registry = CollectorRegistry()
        if self.multiprocess_dir:
            multiprocess.MultiProcessCollector(self.registry, path=self.multiprocess_dir)
            into = None  # exported through the files; registered here as well, they would count twice
        else:
            into = self.registry
        self.queued_items = queued_items
        self.requests = Counter("runassist_requests_total",
                                "HTTP requests by route, method and status code (499: the client hung up before "
                                "its request was read, and got no answer).", ("route", "method", "status"),
                                registry=into)
        self.latency = Histogram("runassist_request_duration_seconds", "HTTP request latency by route.",
                                 ("route",), buckets=LATENCY_BUCKETS, registry=into)
        self.errors = Counter("runassist_errors_total",
                              "Requests answered with an error, by kind (bad_json, invalid_input, limit, "
                              "unauthorized, not_found, unavailable, internal).", ("kind",), registry=into)
        self.inputs = Counter("runassist_inputs_total", "Inputs predicted.", registry=into)
        self.batch_size = Histogram("runassist_batch_size", "Inputs per predictor call (micro-batch size).",
                                    buckets=BATCH_BUCKETS, registry=into)
        self.batch_requests = Histogram("runassist_batch_requests", "Requests merged into one predictor call.",
                                        buckets=BATCH_BUCKETS, registry=into)
        self.batch_latency = Histogram("runassist_batch_duration_seconds", "Time of one predictor call.",
                                       buckets=LATENCY_BUCKETS, registry=into)
        self.queue = Gauge("runassist_queued_inputs", "Inputs waiting for the model.", multiprocess_mode="livesum",
                           registry=into)
        self.in_flight = Gauge("runassist_predict_in_flight", "POST /v1/predict requests being answered.",
                               multiprocess_mode="livesum", registry=into)
        # Chat generations (POST /v1/chat/completions), counted by their worker threads as they end.
        self.generations = Counter("runassist_generations_total",
                                   "Text generations, by how they ended (stop, length, cancelled: the client went "
                                   "away, error).", ("finish",), registry=into)
        self.generated_tokens = Counter("runassist_generated_tokens_total", "Tokens generated.", registry=into)
        self.generating = Gauge("runassist_generations_in_flight", "Generations running (in worker threads).",
                                multiprocess_mode="livesum", registry=into)
        # Drift: what the inputs and predictions look like, beside the reference the run was trained with
        # (RUN/model/profile.json, data_profile.py); `runassist drift` compares the two from the feedback store.
        self.input_words = Histogram("runassist_input_words", "Words per input predicted.",
                                     buckets=WORD_EDGES, registry=into)
        self.predicted_labels = Counter("runassist_predicted_labels_total",
                                        "Labels in the predictions (entity types, classes); 'other' for any label "
                                        "the model was not trained with.", ("label",), registry=into)
        self.confidence_seen = Counter("runassist_confidence_scored_total",
                                       "Predictions with a confidence (task.confidence).", registry=into)
        self.low_confidence = Counter("runassist_low_confidence_total",
                                      f"Predictions with a confidence below {LOW_CONFIDENCE}.", registry=into)
        self.reference = Gauge("runassist_reference", "The training reference (RUN/model/profile.json, on dev): "
                               "words_mean, unknown_rate, low_confidence_share, and label_share:<label>.",
                               ("measure",), multiprocess_mode="liveall", registry=into)
        self.known_labels: set[str] = set()
        # A new process whose pid a dead worker had would start from that worker's last values: reset.
        self.queue.set(0)
        self.in_flight.set(0)
        self.generating.set(0)
        # With an int8 ONNX model: how often its guard sent a close call to the fp32 model.
        self.guard, self._guard_counted = guard, (0, 0)
        if guard is not None:
            self.int8_windows = Counter("runassist_int8_windows_total",
                                        "Model inputs (windows) the int8 model answered.", registry=into)
            self.int8_rechecked = Counter("runassist_int8_rechecked_total",
                                          "Of those, re-run in fp32 because their decision margin was below the "
                                          f"guard threshold ({guard.threshold}).", registry=into)

    # Every update below happens on the event loop; prometheus_client's values are thread-safe anyway (the
    # generation metrics are updated from the worker threads that generate).
    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def observe_batch(self, items: int, requests: int, seconds: float) -> None:
        self.inputs.inc(items)
        self.batch_size.observe(items)
        self.batch_requests.observe(requests)
        self.batch_latency.observe(seconds)
        self.count_queue()
        self._count_guard()

    def set_reference(self, profile: dict | None, labels: list[str] | None) -> None:
        """The run's reference profile as gauges, and the labels counted by name (others as 'other')."""
        self.known_labels = set(labels or ()) | set((profile or {}).get("labels") or {})
        if not profile:
            return
        for key in ("words_mean", "unknown_rate", "low_confidence_share"):
            if profile.get(key) is not None:
                self.reference.labels(key).set(profile[key])
        for label, share in (profile.get("labels") or {}).items():
            self.reference.labels(f"label_share:{label}").set(share)

    def observe_predictions(self, words: list[int], labels: list[list[str]], confidences: list[float | None]) -> None:
        for n in words:
            self.input_words.observe(n)
        for found in labels:
            for label in found:
                self.predicted_labels.labels(label if label in self.known_labels else "other").inc()
        for c in confidences:
            if c is not None:
                self.confidence_seen.inc()
                if c < LOW_CONFIDENCE:
                    self.low_confidence.inc()

    def observe_generation(self, finish: str, tokens: int) -> None:
        self.generations.labels(finish).inc()
        self.generated_tokens.inc(tokens)

    def error(self, kind: str) -> None:
        self.errors.labels(kind).inc()

    def count_queue(self) -> None:
        self.queue.set(self.queued_items())

    def _count_guard(self) -> None:
        if self.guard is None:
            return
        rechecked, seen = self.guard.rechecked, self.guard.seen  # in this order: never more re-checked than seen
        counted_seen, counted_rechecked = self._guard_counted
        if seen > counted_seen:
            self.int8_windows.inc(seen - counted_seen)
        if rechecked > counted_rechecked:
            self.int8_rechecked.inc(rechecked - counted_rechecked)
        self._guard_counted = (max(seen, counted_seen), max(rechecked, counted_rechecked))

    def render(self) -> bytes:
        """The exposition text: this app's metrics, or with several workers those of all of them."""
        self.count_queue()
        self._count_guard()
        if self.multiprocess_dir:
            _forget_dead_workers(self.multiprocess_dir)
        return generate_latest(self.registry)


def _multiprocess_dir() -> str | None:
    path = os.environ.get(MULTIPROC_DIR) or None
    in_files = values.ValueClass is not values.MutexValue  # chosen once, when prometheus_client was imported
    if bool(path) != in_files:
        raise RunassistError(f"{MULTIPROC_DIR} was {'set' if path else 'unset'} after prometheus_client was "
                             "imported; it must be set (or unset) before the process starts")
    return path


def _forget_dead_workers(path: str) -> None:
    """Drop the live gauges of workers that have exited (uvicorn replaces a worker that dies, and
    SIGHUP replaces them all), as prometheus_client's ``mark_process_dead`` hook is meant to."""
    for name in os.listdir(path):
        match = _LIVE_GAUGE_FILE.match(name)
        if match and not _alive(int(match.group(1))):
            try:
                multiprocess.mark_process_dead(int(match.group(1)), path)
            except FileNotFoundError:  # another worker's scrape removed it first
                pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True
