"""Benchmark output: the table rows, bench.json, bench.md and bench.png (matplotlib optional); the CLI prints.

matplotlib is imported only when the PNG is drawn; when it is missing the PNG is skipped and the
reason is returned (and written into bench.md), everything else is still produced.
"""

from __future__ import annotations

from pathlib import Path

from edgeproof.atomic import write_json, write_png, write_text
from edgeproof.runtime.machine import one_line
from edgeproof.tables import markdown_table

COLUMNS = ["format", "backend", "thr", "batch", "size", "load ms", "1st ms", "p50 ms", "p90 ms", "p99 ms",
           "img/s", "peak RSS MiB", "× bare", "placement"]


def _f(v, digits: int = 2) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def size_text(n: int | None) -> str:
    if n is None:
        return "–"
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def placement_text(p: dict | None) -> str:
    """'cpu 12/12', 'xnnpack 30/31', or '–' when the backend cannot tell."""
    if not p:
        return "–"
    if p.get("where"):
        return str(p["where"])
    total, acc = p.get("total"), p.get("accelerator")
    if total is None:
        return "accelerator" if acc else "cpu"
    return f"{acc or 0}/{total} nodes on the accelerator"


def row(r: dict) -> list[str]:
    if r.get("status") != "ok":
        return [r.get("format"), r.get("backend") or "default", _f(r.get("threads")), _f(r.get("batch")),
                size_text(r.get("size_bytes")), "FAILED", "", "", "", "", "", "", "",
                (r.get("error") or "")[:80]]
    load_ms = r["load_s"] * 1e3 if r.get("load_s") is not None else None
    ov = r.get("overhead_ratio")
    return [r["format"], r["backend"], _f(r["threads"]), _f(r["batch"]), size_text(r.get("size_bytes")),
            _f(load_ms, 1), _f(r.get("first_inference_ms")), _f(r["p50_ms"], 3), _f(r["p90_ms"], 3),
            _f(r["p99_ms"], 3), _f(r["throughput_ips"], 1), _f(r.get("peak_rss_mib"), 1),
            f"{ov:.3f}×" if ov is not None else "–", placement_text(r.get("placement"))]


def _speedup_md(title: str, rows: list[dict], meaning: str) -> list[str]:
    if not rows:
        return []
    body = [[x["a"], x["b"], _f(x["threads"]), _f(x["batch"]), _f(x["a_p50_ms"], 3), _f(x["b_p50_ms"], 3),
             f"{x['speedup_b_over_a']:.2f}×" if x["speedup_b_over_a"] is not None else "–"] for x in rows]
    return [f"### {title}", "", meaning, "",
            markdown_table(["A", "B", "thr", "batch", "A p50 ms", "B p50 ms", "A/B"], body), ""]


def render_markdown(doc: dict, png_note: str | None = None) -> str:
    m, s, st = doc["machine"], doc["summary"], doc["settings"]
    out = [f"# edgeproof bench — {doc['created']}", "",
           f"Measured on: **{one_line(m)}**; load average at start {m.get('load_avg_1_5_15')}.", "",
           f"Command: `{doc['command']}`", "",
           (f"Settings: {st['runs']} timed runs (min {st['min_seconds']} s) after {st['warmup']} warm-up, "
            f"input seed {st['seed']}, batch {st['batch']}, "
            f"{'one subprocess per configuration' if st.get('isolate', True) else 'all in one process'}."),
           "Runtime versions: " + ", ".join(f"{k} {v}" for k, v in m.get("packages", {}).items()), "",
           markdown_table(COLUMNS, [row(r) for r in doc["results"]]), ""]
    ov = s["overhead"]
    if ov["count"]:
        out += ["### edgeproof overhead vs the bare loop", "",
                ("Ratio of p50 latencies, edgeproof `Model.predict` vs the library's bare loop on the same "
                 "input, timed interleaved (ABBA order) in one process; 95 % bootstrap interval in brackets. "
                 "The bare loop feeds a pre-converted input; for int8-I/O models the 'same work' columns compare "
                 "with a bare loop that also quantizes the float input and dequantizes the output per call, "
                 "as any loop over new images must. "
                 f"Goal (same work) ≤ {ov['goal']}× and ≤ {ov.get('goal_us', 5.0):g} µs added: "
                 f"{ov['within_goal']}/{ov['count']} configurations meet it; "
                 f"median {ov['median']:.3f}×, worst {ov['max']:.3f}×."), ""]
        body = [[x["format"], x["backend"], _f(x["threads"]), x["baseline"] or "–",
                 _f(x["edgeproof_p50_ms"], 4),
                 _f(x["bare_p50_ms"], 4), _f(x.get("added_us_p50"), 1), f"{x['overhead_ratio']:.3f}×"
                 + (f" [{x['ci95'][0]:.3f}, {x['ci95'][1]:.3f}]" if x.get("ci95") else ""),
                 f"{x['vs_quantizing_loop']:.3f}×" if x.get("vs_quantizing_loop") else "–",
                 f"{x.get('same_work_ratio', x['overhead_ratio']):.3f}×", _f(x.get("same_work_added_us"), 1)]
                for x in ov["rows"]]
        out += [markdown_table(["format", "backend", "thr", "bare loop", "edgeproof p50 ms", "bare p50 ms",
                                "added µs", "ratio", "vs loop that (de)quantizes", "same work", "same work µs"],
                               body), ""]
    out += _speedup_md("int8 / reduced precision vs fp32", s["int8_vs_fp32"],
                       "A/B > 1 means B (the quantized artifact) is faster than fp32 on that backend.")
    out += _speedup_md("ONNX vs TFLite", s["onnx_vs_tflite"],
                       "A/B > 1 means the ONNX artifact (B) is faster than the TFLite one on LiteRT (A).")
    out += _speedup_md("Keras vs edgeproof artifacts", s["keras_vs_artifacts"],
                       "A/B > 1 means the artifact is faster than calling the Keras model directly.")
    if s["end_to_end"]:
        body = [[x["format"], x["backend"], _f(x["threads"]), f"{x['source_kind']} ({x['images']} images)",
                 _f(x["images_per_s"], 1), _f(x["infer_only_images_per_s"], 1),
                 " / ".join(f"{k} {v:.2f}" for k, v in x["stage_ms_per_image"].items())]
                for x in s["end_to_end"]]
        out += ["### End to end (decode + preprocess + infer, serial)", "",
                markdown_table(["format", "backend", "thr", "source", "e2e img/s", "infer-only img/s",
                           "ms per image: decode / preprocess / infer / other"], body), ""]
    if s["failed"]:
        out += ["### Failed configurations", ""] + [
            f"- {x['format']} on {x['backend']} ({x['threads']} thr): {x['error']}"
            for x in s["failed"]] + [""]
    if doc.get("skipped"):
        out += ["### Skipped", ""] + [f"- {x}" for x in doc["skipped"]] + [""]
    if png_note:
        out += [png_note, ""]
    return "\n".join(out)


def plot(doc: dict, dest: Path) -> str | None:
    """Draw bench.png; returns None on success or the reason it was skipped."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        return "matplotlib is not installed (pip install matplotlib), so the PNG was skipped"
    ok = [r for r in doc["results"] if r.get("status") == "ok" and r.get("samples_ms")]
    if not ok:
        return "no successful configuration, so there is nothing to plot"
    threads = sorted({r["threads"] for r in ok}, key=lambda t: (t is None, t or 0))
    first_t = threads[0]
    dist = [r for r in ok if r["threads"] == first_t]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, max(4.0, 0.45 * len(dist) + 1.5)))
    labels = [f"{r['format']} / {r['backend']}" for r in dist]
    ax1.boxplot([r["samples_ms"] for r in dist], vert=False, showfliers=True, whis=(1, 99))
    ax1.set_yticks(range(1, len(labels) + 1), labels)
    ax1.invert_yaxis()  # first configuration on top, as in the table
    _scale(ax1, "x", [v for r in dist for v in r["samples_ms"]])
    ax1.set_xlabel("latency per call (ms); box p25–p75, whiskers p1–p99")
    ax1.set_title(f"latency distribution, {first_t or 'default'} thread(s), batch {dist[0]['batch']}")
    keys = []
    for r in ok:
        k = (r["format"], r["backend"])
        if k not in keys:
            keys.append(k)
    colors = plt.get_cmap("tab20").colors
    for i, (fmt, be) in enumerate(keys):
        pts = sorted([(r["threads"], r["p50_ms"]) for r in ok if (r["format"], r["backend"]) == (fmt, be)
                      and r["threads"] is not None])
        if pts:
            ax2.plot([p[0] for p in pts], [p[1] for p in pts], marker="os^D"[i // 20 % 4],
                     color=colors[i % 20], label=f"{fmt} / {be}")
    ax2.set_xlabel("threads")
    ax2.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax2.set_ylabel("p50 latency (ms)")
    _scale(ax2, "y", [r["p50_ms"] for r in ok])
    ax2.set_title("latency vs threads")
    ax2.grid(True, alpha=0.3)
    ax2.legend(fontsize=7)
    fig.suptitle(one_line(doc["machine"]), fontsize=8)
    fig.tight_layout()
    write_png(fig, dest)
    return None


def _scale(ax, axis: str, values: list[float]) -> None:
    """Log scale only when values span more than 20x (plain numbers on the ticks either way)."""
    from matplotlib.ticker import ScalarFormatter

    pos = [v for v in values if v > 0]
    if pos and max(pos) / min(pos) > 20:
        getattr(ax, f"set_{axis}scale")("log")
        fmt = ScalarFormatter()
        fmt.set_scientific(False)
        getattr(ax, f"{axis}axis").set_major_formatter(fmt)


def write_outputs(doc: dict, out_dir: str | Path, png: bool = True) -> dict[str, str | None]:
    """Write bench.json, bench.png and bench.md into ``out_dir``; returns paths and the PNG's skip reason."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, str | None] = {"json": str(out_dir / "bench.json"), "md": str(out_dir / "bench.md")}
    reason = plot(doc, out_dir / "bench.png") if png else "PNG not requested (--no-plot)"
    paths["png"] = None if reason else str(out_dir / "bench.png")
    paths["png_skipped"] = reason
    note = f"PNG skipped: {reason}." if reason else "![latency](bench.png)"
    write_json(out_dir / "bench.json", {**doc, "outputs": paths})
    write_text(out_dir / "bench.md", render_markdown(doc, note) + "\n")
    return paths
