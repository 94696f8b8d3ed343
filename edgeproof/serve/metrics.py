"""Prometheus metrics of one server, in its own registry (no process-wide state), via prometheus_client.

Two families:
- Triton's names, where the meaning is the same, per model and version, so Triton dashboards work:
  `nv_inference_request_success`, `nv_inference_request_failure{reason}`, `nv_inference_count` (images),
  `nv_inference_exec_count` (inference calls), and the cumulative microsecond counters
  `nv_inference_request_duration_us`, `nv_inference_queue_duration_us`, `nv_inference_compute_infer_duration_us`,
  plus the gauge `nv_inference_pending_request_count`. They are written exactly as Triton writes them (no
  `_total` suffix, which prometheus_client would add), by `TritonCounters`. A request counts once it reaches the
  model (decode included); failures are REJECTED (busy: queue or in-flight budget full), BACKEND (the model
  failed or hung) or OTHER (a bad image or tensor), as Triton's reasons.
- edgeproof's own: histograms per model and version of request, queue and compute time and of batch size
  (Triton has no histograms of these), HTTP and gRPC requests by endpoint and status with latency, in-flight
  requests, images rejected by reason, model load time, readiness, watchdog timeouts, and the process's CPU and
  memory (`process_cpu_seconds_total`, `process_resident_memory_bytes`, ...).
"""

from __future__ import annotations

import threading
import time

LATENCY_BUCKETS = (.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
FAILURE_REASONS = ("REJECTED", "BACKEND", "OTHER")
_TRITON = {
    "nv_inference_request_success": ("counter", "Number of successful inference requests, all batch sizes"),
    "nv_inference_request_failure": ("counter", "Number of failed inference requests, all batch sizes"),
    "nv_inference_count": ("counter", "Number of inferences performed (images; a batch of 4 counts 4)"),
    "nv_inference_exec_count": ("counter", "Number of model executions performed (inference calls)"),
    "nv_inference_request_duration_us": ("counter", "Cumulative inference request duration in microseconds "
                                                    "(decode, queue and compute)"),
    "nv_inference_queue_duration_us": ("counter", "Cumulative inference queuing duration in microseconds"),
    "nv_inference_compute_infer_duration_us": ("counter", "Cumulative compute inference duration in microseconds"),
    "nv_inference_pending_request_count": ("gauge", "Instantaneous number of pending requests awaiting execution"),
}


class ModelMetrics:
    """One model version's view: Triton's counters and pending gauge (thread-safe), and the shared histograms
    with its labels. The engine and the Service of that model write here."""

    def __init__(self, parent: Metrics, model: str, version: str = "1") -> None:
        self.parent, self.model_name, self.version = parent, model, version
        self.labels = f'model="{model}",version="{version}"'
        self._lock = threading.Lock()
        self.values = {name: 0.0 for name in _TRITON if name != "nv_inference_request_failure"}
        self.failures = dict.fromkeys(FAILURE_REASONS, 0.0)
        self.batches: dict[int, list[float]] = {}  # batch size -> [calls, compute seconds]
        self.last_inference_ms = 0
        self.triton = self  # what Service calls: metrics.triton.add(...)
        self.rejected, self.watchdog_timeouts = parent.rejected, parent.watchdog_timeouts
        self.ready = parent.model_ready.labels(model, version)
        self.load_seconds = parent.load_seconds.labels(model)
        # The labelled children, looked up once (a labels() call per observation cost more than the observation)
        self._batch_size = parent.batch_size.labels(model, version)
        self._inference_seconds = parent.inference_seconds.labels(model, version)
        self._queue_seconds = parent.queue_seconds.labels(model, version)
        self._model_seconds = parent.model_seconds.labels(model, version)

    def add(self, name: str, value: float) -> None:
        with self._lock:
            self.values[name] += value

    def fail(self, reason: str) -> None:
        with self._lock:
            self.failures[reason] += 1

    def snapshot(self) -> tuple[dict, dict]:
        with self._lock:
            return dict(self.values), dict(self.failures)

    def observe_batch(self, size: int, infer_s: float, queue_s: list[float]) -> None:
        """Called by the replica thread after each inference call (prometheus_client is thread-safe)."""
        self._batch_size.observe(size)
        self._inference_seconds.observe(infer_s)
        self.parent.images.inc(size)
        for q in queue_s:
            self._queue_seconds.observe(q)
        with self._lock:
            b = self.batches.setdefault(size, [0, 0.0])
            b[0] += 1
            b[1] += infer_s
            self.last_inference_ms = int(time.time() * 1000)
            v = self.values
            v["nv_inference_exec_count"] += 1
            v["nv_inference_count"] += size
            v["nv_inference_compute_infer_duration_us"] += infer_s * 1e6
            v["nv_inference_queue_duration_us"] += sum(queue_s) * 1e6

    def observe_inference(self, seconds: float, failure: str | None) -> None:
        """One inference request that reached the model, from decode to result; failure: a FAILURE_REASONS entry."""
        with self._lock:
            if failure is None:
                self.values["nv_inference_request_success"] += 1
            else:
                self.failures[failure] += 1
            self.values["nv_inference_request_duration_us"] += seconds * 1e6
        self._model_seconds.observe(seconds)

    def observe_request(self, endpoint: str, status: int | str, seconds: float) -> None:
        self.parent.observe_request(endpoint, status, seconds)

    def stats(self) -> dict:
        """Triton's statistics extension entry for this version (`GET /v2/models/NAME/stats`); times in ns."""
        values, failures = self.snapshot()
        with self._lock:
            batches = {k: list(v) for k, v in sorted(self.batches.items())}
            last = self.last_inference_ms
        ok, failed = int(values["nv_inference_request_success"]), int(sum(failures.values()))
        total_ns = values["nv_inference_request_duration_us"] * 1000
        per = total_ns / max(ok + failed, 1)
        none = {"count": 0, "ns": 0}
        return {"name": self.model_name, "version": self.version, "last_inference": last,
                "inference_count": int(values["nv_inference_count"]),
                "execution_count": int(values["nv_inference_exec_count"]),
                "inference_stats": {
                    "success": {"count": ok, "ns": int(per * ok)}, "fail": {"count": failed, "ns": int(per * failed)},
                    "queue": {"count": ok, "ns": int(values["nv_inference_queue_duration_us"] * 1000)},
                    "compute_input": none, "compute_output": none,
                    "compute_infer": {"count": int(values["nv_inference_exec_count"]),
                                      "ns": int(values["nv_inference_compute_infer_duration_us"] * 1000)}},
                "batch_stats": [{"batch_size": k, "compute_input": {"count": int(n), "ns": 0},
                                 "compute_infer": {"count": int(n), "ns": int(sec * 1e9)},
                                 "compute_output": {"count": int(n), "ns": 0}} for k, (n, sec) in batches.items()]}


def triton_text(models: list[ModelMetrics]) -> bytes:
    """Triton's exposition: one HELP/TYPE per family, then a sample per model version (no _total suffix)."""
    snaps = [(m.labels, *m.snapshot()) for m in models]
    out = []
    for name, (kind, doc) in _TRITON.items():
        out += [f"# HELP {name} {doc}", f"# TYPE {name} {kind}"]
        for labels, values, failures in snaps:
            if name == "nv_inference_request_failure":
                out += [f'{name}{{{labels},reason="{r}"}} {v:g}' for r, v in failures.items()]
            else:
                out.append(f"{name}{{{labels}}} {values[name]:.17g}")
    return ("\n".join(out) + "\n").encode()


class Metrics:
    """The server's registry: what is shared by every model, and one ModelMetrics per model version."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

        self.registry = r = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=r)
        self.models: dict[tuple[str, str], ModelMetrics] = {}
        self._lock = threading.Lock()
        self._children: dict[tuple[str, str], tuple] = {}  # (endpoint, status) -> (counter, histogram): bounded,
        # endpoints are fixed names and statuses the server's own
        mv = ["model", "version"]
        self.requests = Counter("edgeproof_requests", "HTTP and gRPC requests by endpoint and status",
                                ["endpoint", "status"], registry=r)
        self.request_seconds = Histogram("edgeproof_request_duration_seconds", "request latency, by endpoint",
                                         ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge("edgeproof_requests_in_flight", "HTTP requests being served", registry=r)
        self.model_seconds = Histogram("edgeproof_model_request_duration_seconds", "inference request time per "
                                       "model (decode, queue and compute)", mv, buckets=LATENCY_BUCKETS, registry=r)
        self.queue_seconds = Histogram("edgeproof_queue_duration_seconds", "time a request waited for an "
                                       "interpreter", mv, buckets=LATENCY_BUCKETS, registry=r)
        self.inference_seconds = Histogram("edgeproof_inference_duration_seconds", "time of one inference call "
                                           "(one batch)", mv, buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("edgeproof_batch_size", "images per inference call", mv, buckets=BATCH_BUCKETS,
                                    registry=r)
        self.images = Counter("edgeproof_images", "images classified", registry=r)
        self.rejected = Counter("edgeproof_images_rejected", "images refused before inference, by reason",
                                ["reason"], registry=r)
        self.load_seconds = Gauge("edgeproof_model_load_seconds", "time to load the model (all replicas)",
                                  ["model"], registry=r)
        self.ready = Gauge("edgeproof_ready", "1 when the server accepts inference requests", registry=r)
        self.model_ready = Gauge("edgeproof_model_ready", "1 when the model version is loaded and healthy", mv,
                                 registry=r)
        self.watchdog_timeouts = Counter("edgeproof_watchdog_timeouts", "inference calls over --infer-timeout",
                                         registry=r)

    def model(self, name: str, version: str = "1") -> ModelMetrics:
        """This model version's metrics (made once; kept across unload and reload so counters never go back)."""
        with self._lock:
            if (name, version) not in self.models:
                self.models[(name, version)] = ModelMetrics(self, name, version)
            return self.models[(name, version)]

    def observe_request(self, endpoint: str, status: int | str, seconds: float) -> None:
        key = (endpoint, str(status))
        pair = self._children.get(key)
        if pair is None:
            pair = self._children.setdefault(key, (self.requests.labels(*key), self.request_seconds.labels(endpoint)))
        pair[0].inc()
        pair[1].observe(seconds)

    def exposition(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        with self._lock:
            models = list(self.models.values())
        return generate_latest(self.registry) + triton_text(models), CONTENT_TYPE_LATEST
