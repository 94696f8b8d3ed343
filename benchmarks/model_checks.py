#!/usr/bin/env python
"""Cost of the model-file checks of issue 8 (manifest sha256, structural check, guarded OpenCV trial).

In-process medians of:
  preflight       verify_manifest + check_file on MODEL (beside its manifest.json)
  sha256 64 MiB   hashing throughput (what verify costs on a big artifact)
  load verify     runtime.load(MODEL) vs load(MODEL, verify=False)
  opencv guard    first load of an unvouched ONNX with --backend opencv (child trial) vs cached verdict
and, in fresh processes (interleaved, --repeat each), `edgeproof run MODEL IMAGE` with and without
--no-verify: wall time and peak RSS (ru_maxrss of the child).

    python benchmarks/model_checks.py MODEL.tflite IMAGE [--onnx MODEL.onnx] [--repeat 7]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _median_ms(fn, n: int = 20) -> float:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1e3)
    return statistics.median(out)


def _oneshot(argv: list[str]) -> tuple[float, float]:
    t = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(argv)} failed")
    return time.perf_counter() - t, usage.ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("image")
    ap.add_argument("--onnx", help="an .onnx for the OpenCV guard figures")
    ap.add_argument("--repeat", type=int, default=7)
    a = ap.parse_args()
    from edgeproof.runtime import load
    from edgeproof.runtime.integrity import sha256_file, verify_manifest
    from edgeproof.runtime.model_check import preflight

    model = Path(a.model)
    print(f"manifest entry verified: {verify_manifest(model) is not None}")
    print(f"preflight (sha256 + structure), {model.stat().st_size / 1024:.1f} KiB: "
          f"{_median_ms(lambda: preflight(model)):.3f} ms")
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "big.bin"
        big.write_bytes(os.urandom(64 << 20))
        print(f"sha256 of 64 MiB: {_median_ms(lambda: sha256_file(big), 5):.1f} ms")
        print(f"load(): verify {_median_ms(lambda: load(model).close()):.2f} ms, "
              f"verify=False {_median_ms(lambda: load(model, verify=False).close()):.2f} ms")
        if a.onnx:
            os.environ["EDGEPROOF_CACHE"] = tmp
            lone = Path(tmp) / Path(a.onnx).name
            shutil.copyfile(a.onnx, lone)  # no manifest beside it: not vouched
            t = time.perf_counter()
            load(lone, backend="opencv").close()
            first = (time.perf_counter() - t) * 1e3
            print(f"opencv load, unvouched: first {first:.1f} ms (guarded child), cached "
                  f"{_median_ms(lambda: load(lone, backend='opencv').close(), 5):.1f} ms")
    cmd = [sys.executable, "-m", "edgeproof", "run", str(model), a.image]
    runs: dict[str, list[tuple[float, float]]] = {"verify": [], "--no-verify": []}
    _oneshot(cmd)  # warm the page cache
    for _ in range(a.repeat):
        runs["verify"].append(_oneshot(cmd))
        runs["--no-verify"].append(_oneshot(cmd + ["--no-verify"]))
    for k, v in runs.items():
        print(f"one-shot run ({k}): median {statistics.median(t for t, _ in v):.3f} s, "
              f"min {min(t for t, _ in v):.3f} s, peak RSS {statistics.median(r for _, r in v):.1f} MiB")


if __name__ == "__main__":
    main()
