"""Prometheus metrics of one server, in its own registry (no process-wide state), via prometheus_client.

Names follow what Triton and OpenVINO Model Server users already chart: request counts by endpoint
and status, request latency, queue time, inference time per call, batch size, in-flight requests,
model load time, readiness, watchdog timeouts and rejected images by reason.
"""

from __future__ import annotations

LATENCY_BUCKETS = (.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    def __init__(self, model_name: str) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = r = CollectorRegistry(auto_describe=True)
        self.requests = Counter("edgeproof_requests", "HTTP requests by endpoint and status code",
                                ["endpoint", "status"], registry=r)
        self.request_seconds = Histogram("edgeproof_request_duration_seconds", "HTTP request latency, by endpoint",
                                         ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge("edgeproof_requests_in_flight", "HTTP requests being served", registry=r)
        self.queue_seconds = Histogram("edgeproof_queue_duration_seconds",
                                       "time a request waited for an interpreter", buckets=LATENCY_BUCKETS, registry=r)
        self.inference_seconds = Histogram("edgeproof_inference_duration_seconds",
                                           "time of one inference call (one batch)", buckets=LATENCY_BUCKETS,
                                           registry=r)
        self.batch_size = Histogram("edgeproof_batch_size", "images per inference call", buckets=BATCH_BUCKETS,
                                    registry=r)
        self.images = Counter("edgeproof_images", "images classified", registry=r)
        self.rejected = Counter("edgeproof_images_rejected", "images refused before inference, by reason",
                                ["reason"], registry=r)
        self.load_seconds = Gauge("edgeproof_model_load_seconds", "time to load the model (all replicas)",
                                  ["model"], registry=r)
        self.ready = Gauge("edgeproof_ready", "1 when the server accepts inference requests", registry=r)
        self.watchdog_timeouts = Counter("edgeproof_watchdog_timeouts", "inference calls over --infer-timeout",
                                         registry=r)
        self.model_name = model_name

    def observe_batch(self, size: int, infer_s: float, queue_s: list[float]) -> None:
        """Called by the replica thread after each inference call (prometheus_client is thread-safe)."""
        self.batch_size.observe(size)
        self.inference_seconds.observe(infer_s)
        self.images.inc(size)
        for q in queue_s:
            self.queue_seconds.observe(q)

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, str(status)).inc()
        self.request_seconds.labels(endpoint).observe(seconds)

    def exposition(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
