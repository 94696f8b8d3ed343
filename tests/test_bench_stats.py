"""Benchmark statistics on synthetic timings: percentiles, summaries, ratios, interleaving, reports."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from edgeproof.bench import stats
from edgeproof.bench.summary import int8_vs_fp32, onnx_vs_tflite, overhead_summary, summarize_records
from edgeproof.runtime.machine import parse_cpuinfo


@pytest.mark.parametrize("n", [1, 2, 7, 200, 1001])
@pytest.mark.parametrize("q", [0, 1, 25, 50, 90, 99, 99.9, 100])
def test_percentile_matches_numpy(n, q):
    rng = np.random.default_rng(n)
    x = rng.lognormal(0.0, 0.5, size=n)
    assert stats.percentile(x.tolist(), q) == pytest.approx(float(np.percentile(x, q)), rel=1e-12, abs=1e-15)


def test_percentile_rejects_bad_input():
    with pytest.raises(ValueError, match="empty"):
        stats.percentile([], 50)
    with pytest.raises(ValueError, match="outside"):
        stats.percentile([1.0], 101)


def test_summarize_in_milliseconds_with_throughput():
    rng = np.random.default_rng(0)
    s = rng.uniform(0.001, 0.003, size=500)  # seconds
    st = stats.summarize(s.tolist(), batch=4)
    ms = s * 1e3
    assert st.count == 500
    assert st.mean_ms == pytest.approx(ms.mean())
    assert st.std_ms == pytest.approx(ms.std(ddof=1))
    assert (st.p50_ms, st.p90_ms, st.p99_ms) == pytest.approx(tuple(np.percentile(ms, [50, 90, 99])))
    assert st.min_ms == pytest.approx(ms.min()) and st.max_ms == pytest.approx(ms.max())
    assert st.throughput_ips == pytest.approx(4 / s.mean())
    assert st.min_ms <= st.p50_ms <= st.p90_ms <= st.p99_ms <= st.max_ms
    d = st.to_dict()
    assert set(d) >= {"p50_ms", "p90_ms", "p99_ms", "mean_ms", "throughput_ips"}


def test_summarize_rejects_empty_and_bad_batch():
    with pytest.raises(ValueError):
        stats.summarize([])
    with pytest.raises(ValueError):
        stats.summarize([0.1], batch=0)


def test_ratio_handles_missing_and_zero():
    assert stats.ratio(3.0, 2.0) == 1.5
    assert stats.ratio(None, 2.0) is None
    assert stats.ratio(1.0, 0.0) is None
    assert stats.ratio(float("inf"), 1.0) is None


def test_overhead_ratio_on_synthetic_pairs():
    rng = np.random.default_rng(1)
    bare = rng.uniform(1e-3, 2e-3, size=400)
    ours = bare * 1.10
    ov = stats.overhead(ours, bare)
    assert ov["ratio"] == pytest.approx(1.10, rel=1e-9)
    assert ov["paired_ratio"] == pytest.approx(1.10, rel=1e-9)
    assert ov["mean_ratio"] == pytest.approx(1.10, rel=1e-9)
    lo, hi = ov["ci95"]
    assert lo <= 1.10 <= hi and hi - lo < 0.2
    assert ov["added_us_p50"] == pytest.approx((np.median(ours) - np.median(bare)) * 1e6)


def test_interleave_order_is_abba():
    assert stats.interleave_order(["a", "b"], 4) == [["a", "b"], ["b", "a"], ["a", "b"], ["b", "a"]]


class FakeClock:
    """A clock that advances only when a timed function 'runs' (cost depends on the wall time so far)."""

    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_interleaving_cancels_drift():
    """A machine that slows down 3x over the run: interleaved timing still sees the true 1.02x."""
    clock = FakeClock()
    calls = []

    def make(name, cost):
        def fn():
            calls.append(name)
            clock.t += cost * (1.0 + clock.t / 0.5)  # drift: later calls are slower
        return fn

    times = stats.time_interleaved({"ours": make("ours", 1.02e-3), "bare": make("bare", 1e-3)}, runs=400,
                                   clock=clock)
    assert len(times["ours"]) == len(times["bare"]) == 400
    assert calls[:4] == ["ours", "bare", "bare", "ours"]
    ov = stats.overhead(times["ours"], times["bare"])
    assert ov["paired_ratio"] == pytest.approx(1.02, abs=0.005)
    # Timing the two sequentially (all bare, then all ours) on the same drifting clock is badly biased.
    clock.t = 0.0
    bare_seq = stats.time_calls(make("bare", 1e-3), 400, clock=clock)
    ours_seq = stats.time_calls(make("ours", 1.02e-3), 400, clock=clock)
    assert stats.overhead(ours_seq, bare_seq)["ratio"] > 1.3


def test_time_budget_extends_runs_and_max_runs_caps():
    clock = FakeClock()

    def fn():
        clock.t += 0.01

    assert len(stats.time_calls(fn, runs=5, min_seconds=1.0, clock=clock)) == 100
    clock.t = 0.0
    assert len(stats.time_calls(fn, runs=5, min_seconds=1.0, clock=clock, max_runs=20)) == 20
    with pytest.raises(ValueError):
        stats.time_calls(fn, runs=0)


X86_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model\t\t: 17
model name\t: AMD EPYC 9454
flags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512_vnni

processor\t: 1
model name\t: AMD EPYC 9454
flags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512_vnni
"""

ARM_CPUINFO = """processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid asimdhp asimddp
CPU implementer\t: 0x41
CPU part\t: 0xd0b

processor\t: 1
Features\t: fp asimd evtstrm crc32 cpuid asimdhp asimddp
CPU part\t: 0xd0b
Model\t\t: Raspberry Pi 5 Model B Rev 1.0
"""


def test_parse_cpuinfo_x86_and_arm():
    x86 = parse_cpuinfo(X86_CPUINFO)
    assert x86["cpu_model"] == "AMD EPYC 9454" and x86["logical_cpus_listed"] == 2
    assert {"avx2", "avx512f", "avx512_vnni"} <= set(x86["simd"]) and "neon" not in x86["simd"]
    arm = parse_cpuinfo(ARM_CPUINFO)
    assert arm["cpu_model"] == "Raspberry Pi 5 Model B Rev 1.0"
    assert {"asimd", "asimddp"} <= set(arm["simd"]) and "avx2" not in arm["simd"]
    assert parse_cpuinfo("")["cpu_model"] is None


def _rec(fmt, backend, p50, threads=1, overhead=None):
    return {"format": fmt, "backend": backend, "threads": threads, "batch": 1, "status": "ok",
            "kind": "artifact", "p50_ms": p50, "p90_ms": p50 * 1.1, "p99_ms": p50 * 1.3, "mean_ms": p50,
            "throughput_ips": 1e3 / p50,
            "overhead_ratio": overhead, "baseline": {"name": "bare", "p50_ms": p50 / (overhead or 1)},
            "overhead": {"ci95": [1.0, 1.05]}, "samples_ms": [p50] * 5, "size_bytes": 1000,
            "load_s": 0.01, "first_inference_ms": p50 * 3, "peak_rss_mib": 50.0, "placement": None}


RECORDS = [_rec("tflite-fp32", "litert", 2.0, overhead=1.01),
           _rec("tflite-int8", "litert", 1.0, overhead=1.05),
           _rec("onnx-fp32", "onnxruntime", 4.0, overhead=1.00), _rec("onnx-int8", "onnxruntime", 8.0),
           {"format": "onnx-int8", "backend": "opencv", "threads": 1, "batch": 1, "status": "failed",
            "error": "boom", "kind": "artifact"}]


def test_summary_ratios_on_synthetic_records():
    i8 = {(x["a"], x["b"]): x["speedup_b_over_a"] for x in int8_vs_fp32(RECORDS)}
    assert i8[("tflite-fp32 on litert", "tflite-int8 on litert")] == pytest.approx(2.0)
    assert i8[("onnx-fp32 on onnxruntime", "onnx-int8 on onnxruntime")] == pytest.approx(0.5)
    ot = onnx_vs_tflite(RECORDS)
    assert [(x["a"], x["b"], x["speedup_b_over_a"]) for x in ot] == [
        ("tflite-fp32 on litert", "onnx-fp32 on onnxruntime", 0.5),
        ("tflite-int8 on litert", "onnx-int8 on onnxruntime", 0.125)]
    ov = overhead_summary(RECORDS)
    assert ov["count"] == 3 and ov["within_goal"] == 2 and ov["max"] == 1.05
    assert summarize_records(RECORDS)["failed"][0]["error"] == "boom"


def _doc():
    from edgeproof.runtime.machine import describe

    return {"schema": 1, "created": "2026-01-01 00:00 UTC", "command": "edgeproof bench x",
            "machine": describe(),
            "settings": {"runs": 5, "min_seconds": 0, "warmup": 1, "seed": 0, "batch": 1}, "results": RECORDS,
            "skipped": [], "summary": summarize_records(RECORDS)}


def test_report_writes_json_md_and_png(tmp_path):
    pytest.importorskip("matplotlib")
    from edgeproof.bench.report import write_outputs

    paths = write_outputs(_doc(), tmp_path)
    assert paths["png_skipped"] is None and (tmp_path / "bench.png").stat().st_size > 1000
    md = (tmp_path / "bench.md").read_text()
    assert "| tflite-int8 | litert |" in md and "int8 / reduced precision vs fp32" in md and "FAILED" in md
    assert json.loads((tmp_path / "bench.json").read_text())["results"][0]["p50_ms"] == 2.0


def test_report_without_matplotlib_says_why(tmp_path, monkeypatch):
    from edgeproof.bench.report import write_outputs

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    paths = write_outputs(_doc(), tmp_path)
    assert paths["png"] is None and "matplotlib is not installed" in paths["png_skipped"]
    assert not (tmp_path / "bench.png").exists()
    assert "PNG skipped: matplotlib is not installed" in (tmp_path / "bench.md").read_text()
