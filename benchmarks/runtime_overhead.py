"""Runtime overhead benchmark: `edgeproof run` one-shot cost and Model.predict per-call overhead.

    python benchmarks/runtime_overhead.py make DIR        # once; needs TensorFlow (MobileNetV2 a=0.5 128x128,
                                                          # and a small 64x64 CNN like the demo's)
    python benchmarks/runtime_overhead.py oneshot DIR     # wall time + peak RSS via /usr/bin/time -v
    python benchmarks/runtime_overhead.py overhead DIR [--model small] [--format int8] [--threads 1]
                                                          # Model.predict vs bare interpreter loops, interleaved

Per-call overhead is reported as the best round (the least disturbed one on a shared machine) of each
contender, rounds interleaved in one run; `overhead_vs_*_us` is the difference of the best rounds and
`ratio_vs_*` their quotient. For int8 there are two bare loops: `bare` feeds input already quantized
(so the quantization a float caller needs counts against edgeproof), `bare+cv2-quantize` quantizes the
float input the fastest way known (OpenCV's one SIMD pass, as Model.predict does) and is the like-for-like
baseline; `bare+numpy-quantize` is what a hand-written loop usually does. Two edgeproof contenders:
`edgeproof` is Model.predict on float32 model input, `edgeproof-pixels` (keys `pixels_*`) is
Model.predict_pixels on the decoded uint8 pixels, the path `run`/run_session's per-image session takes: for
an int8 model whose quantization is an exact integer map of the pixels it quantizes by one XOR written into
the interpreter's input tensor. The input is random whole pixel values, the same for every contender.

One-shot compares `edgeproof run MODEL IMAGE` against two bare ai-edge-litert scripts run the same
way: one that decodes+resizes the image with OpenCV and classifies it (same work), and one that
only loads the model and runs one inference on zeros (the design note's ~0.10 s / 44 MiB figure).
Runs alternate between the commands; the median wall and max peak RSS are reported.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

BARE_SAME = """
import sys, cv2, numpy as np
from ai_edge_litert.interpreter import Interpreter
it = Interpreter(model_path=sys.argv[1]); it.allocate_tensors()
d, o = it.get_input_details()[0], it.get_output_details()[0]
h, w = int(d["shape"][1]), int(d["shape"][2])
img = cv2.cvtColor(cv2.resize(cv2.imread(sys.argv[2]), (w, h)), cv2.COLOR_BGR2RGB).astype(np.float32)
it.set_tensor(d["index"], img[None]); it.invoke(); p = it.get_tensor(o["index"])[0]
for i in np.argsort(-p)[:5]: print(f"class_{i} {p[i]:.3f}")
"""
BARE_MIN = """
import sys, numpy as np
from ai_edge_litert.interpreter import Interpreter
it = Interpreter(model_path=sys.argv[1]); it.allocate_tensors()
d, o = it.get_input_details()[0], it.get_output_details()[0]
it.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"])); it.invoke(); print(it.get_tensor(o["index"]).argmax())
"""


def make(out: Path) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import cv2
    import keras
    import numpy as np

    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(0)
    base = keras.applications.MobileNetV2(input_shape=(128, 128, 3), alpha=0.5, weights=None, classes=10)
    inp = keras.Input((128, 128, 3))
    model = keras.Model(inp, base(keras.layers.Rescaling(1 / 127.5, offset=-1)(inp)))
    rng = np.random.default_rng(0)
    calib = rng.uniform(0, 255, (16, 128, 128, 3)).astype(np.float32)
    _convert(model, calib, out, "", 128)
    s_in = keras.Input((64, 64, 3))  # the demo's size and kind: a small CNN whose invoke takes tens of microseconds
    h = keras.layers.Rescaling(1 / 255)(s_in)
    for filters in (16, 32, 64):
        h = keras.layers.MaxPooling2D()(keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(h))
    h = keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(h))
    _convert(keras.Model(s_in, h), calib[:, :64, :64], out, "small.", 64, classes=3)
    try:
        from skimage import data as skdata

        img = cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR)
    except ImportError:
        img = rng.integers(0, 255, (512, 512, 3), dtype=np.uint8)
    cv2.imwrite(str(out / "image.png"), img)
    print(f"wrote {out}")


def _convert(model, calib, out: Path, prefix: str, size: int, classes: int = 10) -> None:
    import tensorflow as tf

    from edgeproof.contract import ArtifactMeta, Preprocess, TensorSpec
    from edgeproof.runtime.metadata import tflite_with_metadata

    for name, int8 in (("fp32", False), ("int8", True)):
        conv = tf.lite.TFLiteConverter.from_keras_model(model)
        if int8:
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.representative_dataset = lambda: ([calib[i:i + 1]] for i in range(len(calib)))
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            conv.inference_input_type = conv.inference_output_type = tf.int8
        data = conv.convert()
        (out / f"{prefix}bare.{name}.tflite").write_bytes(data)
        meta = ArtifactMeta(labels=[f"class_{i}" for i in range(classes)], preprocess=Preprocess(size, size),
                            format=f"tflite-{name}", input=TensorSpec("image", [None, size, size, 3], "float32"),
                            output=TensorSpec("probs", [None, classes], "float32"))
        (out / f"{prefix}model.tflite-{name}.tflite").write_bytes(tflite_with_metadata(data, meta))


def _timev(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of one command, from GNU time -v."""
    r = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise SystemExit(f"command failed: {' '.join(cmd)}\n{r.stderr[-2000:]}")
    wall = re.search(r"Elapsed \(wall clock\) time.*?: (?:(\d+):)?(\d+):([\d.]+)", r.stderr)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr)
    h, m, s = wall.groups()
    return int(h or 0) * 3600 + int(m) * 60 + float(s), int(rss.group(1)) / 1024


def oneshot(d: Path, repeat: int, fmt: str) -> dict:
    model, image = d / f"model.tflite-{fmt}.tflite", d / "image.png"
    exe = str(Path(sys.executable).parent / "edgeproof")
    cmds = {
        "edgeproof run": [exe, "run", str(model), str(image)],
        "bare litert + cv2 (same work)": [sys.executable, "-c", BARE_SAME, str(d / f"bare.{fmt}.tflite"), str(image)],
        "bare litert (load + 1 inference)": [sys.executable, "-c", BARE_MIN, str(d / f"bare.{fmt}.tflite")],
    }
    res: dict[str, list[tuple[float, float]]] = {k: [] for k in cmds}
    for c in cmds.values():  # warm the page cache
        _timev(c)
    for _ in range(repeat):
        for k, c in cmds.items():
            res[k].append(_timev(c))
    out = {k: {"wall_s_median": round(statistics.median(w for w, _ in v), 3),
               "wall_s_min": round(min(w for w, _ in v), 3),
               "peak_rss_mib_max": round(max(r for _, r in v), 1)} for k, v in res.items()}
    return out


def overhead(d: Path, rounds: int, iters: int, fmt: str, prefix: str = "", threads: int | None = None) -> dict:
    import cv2
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    from edgeproof.runtime import load

    model = load(d / f"{prefix}model.tflite-{fmt}.tflite", threads=threads)
    it = Interpreter(model_path=str(d / f"{prefix}bare.{fmt}.tflite"), num_threads=threads)
    it.allocate_tensors()
    di, do = it.get_input_details()[0], it.get_output_details()[0]
    size = int(di["shape"][1])
    u8 = np.random.default_rng(0).integers(0, 256, (1, size, size, 3), dtype=np.uint8)  # decoded pixels
    x = u8.astype(np.float32)  # the same pixels as model input (this contract does not normalize)
    scale, zp = di["quantization"]
    oscale, ozp = do["quantization"]
    xq = np.clip(np.rint(x / scale + zp), -128, 127).astype(np.int8) if fmt == "int8" else x
    ii, oi, set_t, invoke, get_t = di["index"], do["index"], it.set_tensor, it.invoke, it.get_tensor

    def bare() -> None:  # already-quantized input: the runtime's quantize step counts as overhead
        set_t(ii, xq)
        invoke()
        get_t(oi)

    def ours() -> None:  # float32 model input
        model.predict(x)

    def ours_pixels() -> None:  # what run/serve's per-image session feeds: the decoded uint8 pixels
        model.predict_pixels(u8)

    def bare_numpy() -> None:  # the quantization a float caller needs, as a hand-written loop does it
        set_t(ii, np.clip(np.rint(x / scale + zp), -128, 127).astype(np.int8))
        invoke()
        (get_t(oi).astype(np.float32) - ozp) * oscale

    x2 = x.reshape(-1, size * 3)

    def bare_cv2() -> None:  # the same, quantized the fastest way known (one OpenCV pass), dequantized
        set_t(ii, cv2.addWeighted(x2, 1.0 / scale, x2, 0.0, float(zp), dtype=cv2.CV_8S).reshape(xq.shape))
        invoke()
        (get_t(oi).astype(np.float32) - ozp) * oscale

    fns = {"bare": bare, "edgeproof": ours, "edgeproof-pixels": ours_pixels}
    if fmt == "int8":
        fns["bare+cv2-quantize"] = bare_cv2
        fns["bare+numpy-quantize"] = bare_numpy
    for f in fns.values():
        for _ in range(20):
            f()
    per: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(rounds):
        order = list(fns)[r % len(fns):] + list(fns)[:r % len(fns)]  # rotate who goes first
        for k in order:
            f = fns[k]
            t = time.perf_counter()
            for _ in range(iters):
                f()
            per[k].append((time.perf_counter() - t) / iters * 1e6)
    best = {k: min(v) for k, v in per.items()}
    res = {"model": f"{prefix}model.tflite-{fmt}.tflite", "input": [1, size, size, 3], "format": fmt,
           "threads": threads, "rounds": rounds, "iters": iters,
           **{f"{k}_us_best": round(v, 2) for k, v in best.items()},
           **{f"{k}_us_median": round(statistics.median(per[k]), 2) for k in per}}
    for e in ("edgeproof", "edgeproof-pixels"):
        for k in fns:
            if not k.startswith("edgeproof"):
                pre = "" if e == "edgeproof" else "pixels_"
                res[f"{pre}overhead_vs_{k}_us"] = round(best[e] - best[k], 2)
                res[f"{pre}ratio_vs_{k}"] = round(best[e] / best[k], 4)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=("make", "oneshot", "overhead"))
    ap.add_argument("dir", type=Path)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--rounds", type=int, default=300)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--format", choices=("fp32", "int8"), default="fp32")
    ap.add_argument("--model", choices=("mobilenet", "small"), default="mobilenet")
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args()
    if a.what == "make":
        make(a.dir)
    elif a.what == "oneshot":
        print(json.dumps(oneshot(a.dir, a.repeat, a.format), indent=2))
    else:
        prefix = "small." if a.model == "small" else ""
        print(json.dumps(overhead(a.dir, a.rounds, a.iters, a.format, prefix, a.threads), indent=2))


if __name__ == "__main__":
    main()
