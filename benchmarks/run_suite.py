#!/usr/bin/env python
"""The project's benchmark suite: `edgeproof bench --suite` + the one-shot comparison -> RESULTS.md.

    python benchmarks/run_suite.py                 # writes benchmarks/results/ and benchmarks/RESULTS.md
    python benchmarks/run_suite.py --runs 500      # extra arguments go to `edgeproof bench --suite`

The first run trains the standard model on the embedded 'textures' dataset and converts it to
every format (needs edgeproof[train]); later runs reuse it from the cache.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import oneshot  # noqa: E402  (benchmarks/oneshot.py, next to this file)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-o", "--out", default=str(HERE / "results"), help="bench output folder")
    ap.add_argument("--results", default=str(HERE / "RESULTS.md"), help="markdown summary to write")
    ap.add_argument("--repeat", type=int, default=5, help="one-shot: fresh processes per contender")
    args, extra = ap.parse_known_args(argv)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    out = os.path.relpath(args.out) if not os.path.relpath(args.out).startswith("..") else args.out
    cmd = [sys.executable, "-m", "edgeproof", "bench", "--suite", "-o", out, *extra]
    print("+", " ".join(cmd), file=sys.stderr)
    rc = subprocess.run(cmd, env=env, check=False).returncode
    bench_json = Path(args.out) / "bench.json"
    if rc != 0 or not bench_json.is_file():
        print(f"run_suite: error: the suite failed (exit {rc}); see the messages above", file=sys.stderr)
        return rc or 1
    doc = json.loads(bench_json.read_text())
    ok = [r for r in doc["results"] if r.get("status") == "ok"]
    fp32 = next((r["model"] for r in ok if r["format"] == "tflite-fp32"), None)
    image = _one_image(doc)
    shot_md = "One-shot comparison skipped: no tflite-fp32 artifact or test image was found."
    if fp32 and image:
        rows = oneshot.measure(fp32, image, args.repeat)
        (Path(args.out) / "oneshot.json").write_text(json.dumps(rows, indent=2) + "\n")
        shot_md = oneshot.markdown(rows, fp32)
    bench_md = (Path(args.out) / "bench.md").read_text()
    body = bench_md.split("\n", 1)[1].replace("![latency](bench.png)", "![latency](results/bench.png)")
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    text = "\n".join([
        "# edgeproof benchmark results",
        "",
        (f"**Measured on this project's 2-core x86 build machine** on {date} (a shared, noisy machine: "
         "treat differences under ~5 % as noise; ratios measured interleaved are the trustworthy part)."),
        "",
        ("Reproduce: `python benchmarks/run_suite.py` (= `edgeproof bench --suite -o benchmarks/results` "
         "+ `python benchmarks/oneshot.py MODEL.tflite IMAGE`)."),
        "",
        headline(doc),
        "",
        "## Full results",
        "",
        body.strip(),
        "",
        "### One-shot cost: `edgeproof run` vs a bare script vs TensorFlow",
        "",
        shot_md,
        "",
    ])
    Path(args.results).write_text(text)
    print(f"wrote {args.results}", file=sys.stderr)
    return 0


def headline(doc: dict, threads: int = 1) -> str:
    """README table: each format on its preferred backend at ``threads`` thread(s), plus Keras."""
    from edgeproof.formats import FORMATS

    ok = [r for r in doc["results"] if r.get("status") == "ok" and r["threads"] == threads]
    keras = next((r for r in ok if r["backend"] == "keras model(x)"), None)
    rows = ["| artifact | backend | size | p50 ms | p99 ms | img/s | peak RSS MiB | × bare loop | vs Keras |",
            "|---|---|---|---|---|---|---|---|---|"]
    picks = [r for r in ok if r["format"] in FORMATS and r["backend"] == FORMATS[r["format"]].backends[0]]
    for r in picks + ([keras] if keras else []):
        size = f"{r['size_bytes'] / 1e3:.0f} kB" if r.get("size_bytes") else "–"
        ov = f"{r['overhead_ratio']:.3f}×" if r.get("overhead_ratio") else "–"
        vs = f"{keras['p50_ms'] / r['p50_ms']:.0f}× faster" if keras and r is not keras else "1×"
        rows.append(f"| {r['format']} | {r['backend']} | {size} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | "
                    f"{r['throughput_ips']:.0f} | {r['peak_rss_mib']:.0f} | {ov} | {vs} |")
    return "\n".join([f"### Headline: {threads} thread, batch 1, each format on its default backend", ""]
                     + rows)


def _one_image(doc: dict) -> str | None:
    src = doc.get("settings", {}).get("source")
    if not src or not Path(src).is_dir():
        return None
    for p in sorted(Path(src).rglob("*")):
        if p.suffix.lower() in (".png", ".jpg", ".jpeg"):
            return str(p)
    return None


if __name__ == "__main__":
    sys.exit(main())
