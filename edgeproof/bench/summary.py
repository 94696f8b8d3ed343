"""Comparisons derived from benchmark records: overhead vs bare loop, int8 vs fp32, ONNX vs TFLite, Keras.

Every ratio is a ratio of p50 latencies measured in the same run on the same batch and thread
count; "speedup" > 1 means the second-named thing is faster.
"""

from __future__ import annotations

import statistics

from edgeproof.bench.stats import ratio

OVERHEAD_GOAL = 1.03
OVERHEAD_GOAL_US = 5.0  # and at most this many microseconds added per call


def ok_records(records: list[dict]) -> list[dict]:
    return [r for r in records if r.get("status") == "ok" and r.get("p50_ms") is not None]


def find(records: list[dict], fmt: str, backend: str, threads, batch) -> dict | None:
    for r in ok_records(records):
        if (r["format"], r["backend"], r["threads"], r["batch"]) == (fmt, backend, threads, batch):
            return r
    return None


def _settings(records: list[dict]) -> list[tuple]:
    seen = []
    for r in ok_records(records):
        key = (r["threads"], r["batch"])
        if key not in seen:
            seen.append(key)
    return seen


def _same_work(r: dict) -> tuple[float, float | None]:
    """(ratio, µs added) vs the bare loop that does the same work: for int8 I/O, the one that also
    quantizes/dequantizes per call; records from before it was recorded fall back to the plain ratio."""
    sw = r.get("overhead_same_work") or {}
    if sw.get("ratio") is not None:
        return sw["ratio"], sw.get("added_us_p50")
    return r["overhead_ratio"], (r.get("overhead") or {}).get("added_us_p50")


def overhead_summary(records: list[dict]) -> dict:
    """Overhead rows; the goal (≤ OVERHEAD_GOAL× and ≤ OVERHEAD_GOAL_US µs added per call) is judged
    against the bare loop doing the same work."""
    rows = []
    for r in ok_records(records):
        if r.get("overhead_ratio") is None:
            continue
        ratio_sw, added_sw = _same_work(r)
        rows.append({"format": r["format"], "backend": r["backend"], "threads": r["threads"], "batch": r["batch"],
                     "baseline": (r.get("baseline") or {}).get("name"), "overhead_ratio": r["overhead_ratio"],
                     "ci95": (r.get("overhead") or {}).get("ci95"),
                     "added_us_p50": (r.get("overhead") or {}).get("added_us_p50"),
                     "vs_quantizing_loop": r.get("overhead_vs_quantizing_loop"),
                     "same_work_ratio": ratio_sw, "same_work_added_us": added_sw,
                     "edgeproof_p50_ms": r["p50_ms"], "bare_p50_ms": (r.get("baseline") or {}).get("p50_ms")})
    vals = [x["same_work_ratio"] for x in rows]
    ok = [x["same_work_ratio"] <= OVERHEAD_GOAL and (x["same_work_added_us"] is None
                                                      or x["same_work_added_us"] <= OVERHEAD_GOAL_US) for x in rows]
    return {
        "goal": OVERHEAD_GOAL,
        "goal_us": OVERHEAD_GOAL_US,
        "rows": rows,
        "median": statistics.median(vals) if vals else None,
        "max": max(vals) if vals else None,
        "within_goal": sum(ok),
        "count": len(vals),
    }


def speedup_pairs(records: list[dict], pairs: list[tuple[str, str, str, str]]) -> list[dict]:
    """For each (fmt_a, backend_a, fmt_b, backend_b) and each threads/batch: p50_a / p50_b."""
    out = []
    for threads, batch in _settings(records):
        for fa, ba, fb, bb in pairs:
            a, b = find(records, fa, ba, threads, batch), find(records, fb, bb, threads, batch)
            if a is None or b is None:
                continue
            out.append({"a": f"{fa} on {ba}", "b": f"{fb} on {bb}", "threads": threads, "batch": batch,
                        "a_p50_ms": a["p50_ms"], "b_p50_ms": b["p50_ms"],
                        "speedup_b_over_a": ratio(a["p50_ms"], b["p50_ms"])})
    return out


def int8_vs_fp32(records: list[dict]) -> list[dict]:
    """Per backend: fp32 p50 / int8 p50 for the TFLite and ONNX families (> 1: int8 faster)."""
    backends = sorted({r["backend"] for r in ok_records(records)})
    pairs = []
    for b in backends:
        pairs += [("tflite-fp32", b, "tflite-int8", b), ("tflite-fp32", b, "tflite-dynamic", b),
                  ("tflite-fp32", b, "tflite-fp16", b), ("onnx-fp32", b, "onnx-int8", b)]
    return speedup_pairs(records, pairs)


def onnx_vs_tflite(records: list[dict]) -> list[dict]:
    """TFLite on its preferred backend p50 / ONNX on each ONNX backend p50, same precision (> 1: ONNX faster)."""
    from edgeproof.formats import FORMATS, backends_for

    pairs = []
    for prec in ("fp32", "int8"):
        for b in backends_for("onnx"):
            pairs.append((f"tflite-{prec}", FORMATS[f"tflite-{prec}"].backends[0], f"onnx-{prec}", b))
    return speedup_pairs(records, pairs)


def keras_vs_artifacts(records: list[dict]) -> list[dict]:
    """Keras model(x) p50 / each artifact's p50 at the same threads and batch (> 1: artifact faster)."""
    out = []
    for threads, batch in _settings(records):
        k = find(records, "keras", "keras model(x)", threads, batch)
        if k is None:
            continue
        for r in ok_records(records):
            if r["kind"] == "keras" or (r["threads"], r["batch"]) != (threads, batch):
                continue
            out.append({"a": "keras model(x)", "b": f"{r['format']} on {r['backend']}", "threads": threads,
                        "batch": batch, "a_p50_ms": k["p50_ms"], "b_p50_ms": r["p50_ms"],
                        "speedup_b_over_a": ratio(k["p50_ms"], r["p50_ms"])})
    return out


def end_to_end(records: list[dict]) -> list[dict]:
    return [{"format": r["format"], "backend": r["backend"], "threads": r["threads"], "batch": r["batch"],
             **r["end_to_end"]} for r in ok_records(records) if r.get("end_to_end")]


def summarize_records(records: list[dict]) -> dict:
    return {
        "overhead": overhead_summary(records),
        "int8_vs_fp32": int8_vs_fp32(records),
        "onnx_vs_tflite": onnx_vs_tflite(records),
        "keras_vs_artifacts": keras_vs_artifacts(records),
        "end_to_end": end_to_end(records),
        "failed": [{"format": r["format"], "backend": r["backend"], "threads": r["threads"],
                    "error": r["error"]} for r in records if r.get("status") != "ok"],
    }
