"""int8 before/after the recipe search and the fix ladder, side by side, for one run folder.

    python benchmarks/int8_search.py RUN_DIR [--formats tflite-int8,edgetpu,onnx-int8,tflite-int16x8] [-o OUT]

Converts twice into OUT (the format table's recipe with --no-int8-search, then with the search), runs parity
with --fix on both (no promotion) and prints, per int8 format: agreement, Δacc, size and p50 of the table recipe,
the searched recipe and the first passing fix (when one was needed), plus the conversion seconds the search adds.
Everything is judged on the run's test split; the search itself only ever sees held-out calibration images.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _row(r) -> dict:
    c = r.comparison
    if c is None:
        return {"status": r.status, "reason": r.reason[:80]}
    return {"status": r.status, "agreement": f"{c.task.top1_agree_count}/{c.task.n}",
            "near_ties": c.flips.near_ties if c.flips else 0, "delta_acc_pp": c.task.delta_acc_pp,
            "kib": round(r.size_bytes / 1024, 1), "p50_ms": r.latency_p50_ms}


def measure(run: Path, out: Path, formats: list[str]) -> dict:
    from edgeproof.convert import convert_run
    from edgeproof.parity import run_parity
    from edgeproof.stderr_filter import library_output_to

    result: dict = {"run": str(run), "formats": {}}
    for label, search in (("table", False), ("searched", True)):
        art = out / f"art-{label}"
        with library_output_to(out / "library-output.log"):
            t = time.perf_counter()
            m = convert_run(run, art, formats=["tflite-fp32", "onnx-fp32", *formats], int8_search=search)
            secs = {a.format: a.seconds for a in m.artifacts}
            result[f"convert_seconds_{label}"] = round(time.perf_counter() - t, 1)
            rep = run_parity(run, artifacts_dir=art, out_dir=out / f"parity-{label}", fix=True, e2e=False,
                             progress=False, backends=["litert", "onnxruntime"])
        for r in rep.rows:
            if r.format not in formats:
                continue
            entry = result["formats"].setdefault(r.format, {})
            entry[label] = {**_row(r), "convert_s": secs.get(r.format)}
            if label == "searched":
                opts = next((a.options for a in m.artifacts if a.format == r.format), {})
                entry["recipe"] = opts.get("recipe")
                entry["search_s"] = (opts.get("search") or {}).get("seconds")
        for t in rep.triage:
            fixed = t.fixes[-1] if t.fixes and t.fixes[-1].status == "pass" else None
            result["formats"].setdefault(t.format, {})[f"fix_after_{label}"] = \
                {**_row(fixed), "variant": fixed.variant} if fixed else {"status": "no passing fix",
                                                                          "tried": [f.variant for f in t.fixes]}
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--formats", default="tflite-int8,edgetpu,onnx-int8,tflite-int16x8")
    ap.add_argument("-o", "--out", type=Path, default=None)
    args = ap.parse_args()
    out = args.out or args.run / "int8-search-bench"
    res = measure(args.run, out, args.formats.split(","))
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
