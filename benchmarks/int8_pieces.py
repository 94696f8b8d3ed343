#!/usr/bin/env python
"""Where an int8 Model call's time goes outside the interpreter: each step timed alone.

    python benchmarks/int8_pieces.py DIR/small.model.tflite-int8.tflite   # (runtime_overhead.py make DIR)

The interpreter's invoke is replaced by a no-op (in the Model's backend and in a bare ai-edge-litert loop fed a
pre-quantized input), so what is left is the per-call work around it. Best of 15 rounds x 3 repeats of 5,000 calls,
the contenders interleaved. Reaches into private attributes on purpose: it dissects Model.predict_pixels.
"""

from __future__ import annotations

import sys
import timeit

import numpy as np


def main(path: str) -> None:
    from ai_edge_litert.interpreter import Interpreter

    from edgeproof.runtime import load

    m = load(path, threads=1)
    u8 = np.random.default_rng(0).integers(0, 256, (1, *m._hwc), dtype=np.uint8)
    x = u8.astype(np.float32)
    xq = (u8 ^ 0x80).view(np.int8)
    it = Interpreter(model_path=path)
    it.allocate_tensors()
    ii, oi = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
    be = m.backend
    if m._pixel_mask is None or not getattr(be, "_raw_calls", False):
        raise SystemExit(f"{path}: its input quantization is not an integer map of the pixels (see runtime/pixels.py)")
    m.predict_pixels(u8)  # takes the interpreter's tensor views
    raw = be._it._interpreter
    be._it._interpreter = type("NoInvoke", (), {"Invoke": staticmethod(lambda: None), "GetTensor": raw.GetTensor,
                                                "SetTensor": raw.SetTensor})()
    it.invoke = lambda: None
    out0 = np.array(be.run_bytes(m._px1, lambda b: None))
    view, flat = be._views[0], x.reshape(-1)
    fns = {
        "bare loop: set_tensor + get_tensor": lambda: (it.set_tensor(ii, xq), it.invoke(), it.get_tensor(oi)),
        "predict_pixels": lambda: m.predict_pixels(u8),
        "  XOR of the pixels into the input tensor": lambda: np.bitwise_xor(u8, m._pixel_mask, out=view),
        "  dequantize (table take)": lambda: m._deq.take(out0),
        "  output -> scores (_finish)": lambda: m._finish(out0, 1, u8),
        "predict (float32 input)": lambda: m.predict(x),
        "  NaN/inf input check (x.x)": lambda: float(np.dot(flat, flat)),
        "  quantize (OpenCV addWeighted)": lambda: m._quantize(x, True),
    }
    best = {k: float("inf") for k in fns}
    for _ in range(15):
        for k, f in fns.items():
            best[k] = min(best[k], min(timeit.repeat(f, number=5000, repeat=3)) / 5000 * 1e6)
    for k, v in best.items():
        print(f"{k:45s} {v:6.2f} us")


if __name__ == "__main__":
    main(sys.argv[1])
