"""Metrics users graph (issue 28 item 11), read from a real server with Prometheus' own parser: Triton's
per-model names with the counts a client can verify, edgeproof's histograms, the pending gauge, process CPU and
memory, and a Grafana dashboard in docs whose every query names a metric the server exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import numpy as np
import pytest
from _serve_helpers import colour_model, png_bytes, running

pytest.importorskip("prometheus_client")
DASHBOARD = Path(__file__).resolve().parents[1] / "docs" / "grafana-dashboard.json"


@pytest.fixture(scope="module")
def scrape(tmp_path_factory):
    from prometheus_client.parser import text_string_to_metric_families

    model = colour_model(tmp_path_factory.mktemp("metrics") / "colour.onnx")
    with running(model) as s, httpx.Client(base_url=s.url) as c:
        for i in range(5):  # 5 requests of 1 image
            assert c.post("/v1/classify", content=png_bytes((200, 30, 30), seed=i),
                          headers={"content-type": "image/png"}).status_code == 200
        files = [("image", (f"{i}.png", png_bytes((30, 30, 200), seed=i), "image/png")) for i in range(3)]
        assert c.post("/v1/classify", files=files).status_code == 200  # 1 request of 3 images
        x = np.zeros((2, 32, 32, 3), np.float32)
        assert c.post("/v2/models/colour/infer", json={"inputs": [{"name": "image", "datatype": "FP32",
                      "shape": [2, 32, 32, 3], "data": x.ravel().tolist()}]}).status_code == 200  # 1 of 2
        assert c.post("/v1/classify", content=b"not an image", headers={"content-type": "image/png"}).status_code \
            == 400
        text = c.get("/metrics").text
        stats = c.get("/v2/models/colour/stats").json()
    samples = {}
    for family in text_string_to_metric_families(text):  # raises on anything Prometheus could not read
        for sample in family.samples:  # the parser reads Triton's counters as NAME_total; Prometheus keeps NAME
            name = family.name if family.name.startswith("nv_") else sample.name
            samples[(name, tuple(sorted(sample.labels.items())))] = sample.value
    return text, samples, stats


MV = (("model", "colour"), ("version", "1"))  # label pairs in sorted order, as the scrape keys them


def test_triton_named_counters_per_model_and_version(scrape):
    text, samples, _ = scrape
    assert samples[("nv_inference_request_success", MV)] == 7  # 5 + 1 + 1 requests that reached the model
    assert samples[("nv_inference_request_failure", (MV[0], ("reason", "OTHER"), MV[1]))] == 1  # the bad image
    assert samples[("nv_inference_request_failure", (MV[0], ("reason", "REJECTED"), MV[1]))] == 0
    assert samples[("nv_inference_count", MV)] == 10  # images: 5 + 3 + 2
    assert 3 <= samples[("nv_inference_exec_count", MV)] <= 7  # sequential requests: one call each at most
    for name in ("nv_inference_request_duration_us", "nv_inference_queue_duration_us",
                 "nv_inference_compute_infer_duration_us"):
        assert samples[(name, MV)] > 0, name
    assert samples[("nv_inference_request_duration_us", MV)] > samples[("nv_inference_compute_infer_duration_us",
                                                                        MV)]
    assert samples[("nv_inference_pending_request_count", MV)] == 0  # nothing pending at rest
    assert "# TYPE nv_inference_request_success counter" in text  # Triton's exact name, no _total


def test_histograms_batch_sizes_rejections_and_the_process(scrape):
    _, samples, _ = scrape
    assert samples[("edgeproof_model_request_duration_seconds_count", MV)] == 8
    assert samples[("edgeproof_batch_size_count", MV)] == samples[("nv_inference_exec_count", MV)]
    assert samples[("edgeproof_batch_size_sum", MV)] == 10
    assert samples[("edgeproof_batch_size_bucket", (("le", "2.0"), *MV))] < \
        samples[("edgeproof_batch_size_bucket", (("le", "4.0"), *MV))]  # the 3-image request
    assert samples[("edgeproof_queue_duration_seconds_count", MV)] == 7
    assert samples[("edgeproof_images_rejected_total", (("reason", "not an image (looks like text)"),))] == 1
    assert samples[("process_resident_memory_bytes", ())] > 10e6
    assert samples[("process_cpu_seconds_total", ())] > 0


def test_the_grafana_dashboard_queries_only_metrics_the_server_exports(scrape):
    _, samples, _ = scrape
    exported = {name for name, _ in samples}
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 8
    for expr in exprs:
        names = set(re.findall(r"\b((?:nv|edgeproof|process)_[a-z_]+)\b", expr))
        assert names and names <= exported, (expr, names - exported)


def test_the_statistics_extension_agrees_with_the_counters(scrape):
    _, samples, stats = scrape
    (st,) = stats["model_stats"]  # Triton's shape, as tritonclient's get_inference_statistics returns it
    assert (st["name"], st["version"], st["inference_count"]) == ("colour", "1", 10)
    assert st["inference_stats"]["success"]["count"] == 7 and st["inference_stats"]["fail"]["count"] == 1
    assert st["execution_count"] == samples[("nv_inference_exec_count", MV)]
    assert sum(b["batch_size"] * b["compute_infer"]["count"] for b in st["batch_stats"]) == 10
    assert st["inference_stats"]["compute_infer"]["ns"] > 0 and st["last_inference"] > 0
