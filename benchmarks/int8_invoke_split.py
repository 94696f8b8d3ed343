#!/usr/bin/env python
"""Is the int8 per-call gap of `predict_pixels` over the bare loop Python work or the interpreter?

    python benchmarks/int8_invoke_split.py DIR [--model small|mobilenet] [--rounds 200] [--iters 5]

DIR is what `benchmarks/runtime_overhead.py make DIR` writes. Six contenders, rounds interleaved in one process
(the first rotated each round), the best round of each, 1 thread:
  bare                         set_tensor(pre-quantized int8) / invoke / get_tensor on bare.int8.tflite
  bare-on-model-file           the same loop on a second interpreter of edgeproof's file (model.tflite-int8.tflite)
  edgeproof-pixels             Model.predict_pixels(uint8 pixels), what `run` feeds
  invoke-only(bare interp)     the raw Invoke() alone, on a third bare interpreter
  invoke-only(edgeproof interp) the raw Invoke() alone, on the Model's own interpreter
  python-path-only             what predict_pixels does besides Invoke: the XOR into the input tensor, the table
                               dequantization and _finish
Two interpreters running the same graph differ by a few µs in their best round on a shared machine; the
python-path-only figure is the part edgeproof adds and cannot hide in that noise.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir")
    ap.add_argument("--model", choices=("small", "mobilenet"), default="mobilenet")
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--iters", type=int, default=5)
    a = ap.parse_args()
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    from edgeproof.runtime import load

    prefix = "small." if a.model == "small" else ""
    model = load(f"{a.dir}/{prefix}model.tflite-int8.tflite", threads=1)

    def interpreter(path: str):
        it = Interpreter(model_path=path, num_threads=1)
        it.allocate_tensors()
        return it

    it = interpreter(f"{a.dir}/{prefix}bare.int8.tflite")
    it2 = interpreter(f"{a.dir}/{prefix}model.tflite-int8.tflite")
    it3 = interpreter(f"{a.dir}/{prefix}bare.int8.tflite")
    di, do = it.get_input_details()[0], it.get_output_details()[0]
    size = int(di["shape"][1])
    u8 = np.random.default_rng(0).integers(0, 256, (1, size, size, 3), dtype=np.uint8)
    scale, zp = di["quantization"]
    xq = np.clip(np.rint(u8.astype(np.float32) / scale + zp), -128, 127).astype(np.int8)
    ii, oi = di["index"], do["index"]
    it3.set_tensor(ii, xq)

    def bare_loop(interp):
        s, inv, g = interp.set_tensor, interp.invoke, interp.get_tensor

        def f() -> None:
            s(ii, xq)
            inv()
            g(oi)
        return f

    model.predict_pixels(u8)  # takes the input/output tensor views
    backend = model.backend
    vin, vout = backend._views
    mask, deq = model._pixel_mask, model._deq
    if mask is None or deq is None:
        raise SystemExit("int8_invoke_split: this model takes the float path (no exact pixel map)")
    raw_invoke = backend._it._interpreter.Invoke

    def python_path() -> None:
        np.bitwise_xor(u8, mask, out=vin)
        model._finish(deq.take(vout), 1, u8)

    fns = {"bare": bare_loop(it), "bare-on-model-file": bare_loop(it2),
           "edgeproof-pixels": lambda: model.predict_pixels(u8),
           "invoke-only(bare interp)": lambda: it3._interpreter.Invoke(),
           "invoke-only(edgeproof interp)": raw_invoke, "python-path-only": python_path}
    for f in fns.values():
        for _ in range(30):
            f()
    per: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(a.rounds):
        order = list(fns)[r % len(fns):] + list(fns)[:r % len(fns)]
        for k in order:
            f = fns[k]
            t = time.perf_counter()
            for _ in range(a.iters):
                f()
            per[k].append((time.perf_counter() - t) / a.iters * 1e6)
    print(json.dumps({"model": f"{prefix}model.tflite-int8.tflite", "rounds": a.rounds, "iters": a.iters,
                      "best_us": {k: round(min(v), 2) for k, v in per.items()},
                      "median_us": {k: round(statistics.median(v), 2) for k, v in per.items()}}))


if __name__ == "__main__":
    main()
