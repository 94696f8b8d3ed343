"""Throughput of `edgeproof run` on the local engine vs `--engine ray` with 1 and 2 actors, side by side.

    python benchmarks/scale_out.py [--images 5000] [--rounds 2] [--size 96] [-o benchmarks/results]

Makes a folder of --images JPEGs (--size px, smooth noise, 1 in 500 a truncated file so skips are exercised
too) and a small TF-free CNN (ONNX: three strided 3x3 convolutions + ReLU, global pooling, dense, softmax;
64x64 input), then runs, in interleaved rounds, each configuration as the user would: one `edgeproof run
MODEL --source DIR --json` process. Per run it records the wall time of the whole command (Python start, Ray
start and teardown included), the run's own seconds (the summary's `seconds`: from the first input to the
last result; on Ray this includes starting the actors and loading the model in each) and the images per
second of each Ray worker while busy. Each configuration also runs on the first --small images (a list
file), so (images - small) / (wall - wall_small) is its marginal throughput once the fixed costs (Python
start, Ray start, actor start, teardown) are paid. Medians over the rounds are printed and written to
scale_out.json.
Every configuration must print the same results (checked; the bench fails otherwise).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CONFIGS = {"local": [], "ray, 1 actor": ["--engine", "ray", "--workers", "1"],
           "ray, 2 actors": ["--engine", "ray", "--workers", "2"]}


def make_images(folder: Path, n: int, size: int) -> None:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    base = cv2.GaussianBlur(rng.integers(0, 255, (size * 4, size * 4, 3), dtype=np.uint8), (0, 0), 2)
    for i in range(n):
        y, x = rng.integers(0, size * 3, size=2)
        ok, buf = cv2.imencode(".jpg", base[y:y + size, x:x + size], [cv2.IMWRITE_JPEG_QUALITY, 90])
        data = buf.tobytes()
        (folder / f"img_{i:06d}.jpg").write_bytes(data[: len(data) // 2] if i % 500 == 499 else data)


def make_model(path: Path, side: int = 64, classes: int = 10) -> Path:
    """A small CNN in ONNX (NCHW), with edgeproof metadata so `run` knows its preprocessing and labels."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgeproof.contract import ArtifactMeta, Preprocess, TensorSpec
    from edgeproof.runtime.metadata import set_onnx_metadata

    rng = np.random.default_rng(0)
    inits, nodes, prev, ch = [], [], "image", 3
    for i, out_ch in enumerate((16, 32, 64)):
        w = rng.normal(0, (2 / (9 * ch)) ** 0.5, (out_ch, ch, 3, 3)).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(np.zeros(out_ch, np.float32), f"b{i}")]
        nodes += [helper.make_node("Conv", [prev, f"w{i}", f"b{i}"], [f"c{i}"], kernel_shape=[3, 3], strides=[2, 2],
                                   pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"])]
        prev, ch = f"r{i}", out_ch
    inits += [numpy_helper.from_array(rng.normal(0, 0.1, (ch, classes)).astype(np.float32), "wd"),
              numpy_helper.from_array(np.zeros(classes, np.float32), "bd")]
    nodes += [helper.make_node("GlobalAveragePool", [prev], ["gap"]),
              helper.make_node("Flatten", ["gap"], ["flat"]),
              helper.make_node("Gemm", ["flat", "wd", "bd"], ["logits"]),
              helper.make_node("Softmax", ["logits"], ["probs"], axis=1)]
    graph = helper.make_graph(nodes, "small_cnn",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, side, side])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", classes])],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    set_onnx_metadata(model, ArtifactMeta(
        labels=[f"class_{i}" for i in range(classes)], format="onnx-fp32",
        preprocess=Preprocess(side, side, scale=1 / 255, layout="NCHW"),
        input=TensorSpec("image", [None, 3, side, side], "float32"),
        output=TensorSpec("probs", [None, classes], "float32")))
    onnx.save(model, str(path))
    return path


def run_once(model: Path, folder: Path, extra: list[str]) -> dict:
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "edgeproof", "run", str(model), "--source", str(folder), "--json",
                        *extra], capture_output=True, text=True, timeout=1800, check=False)
    wall = time.perf_counter() - t
    if r.returncode not in (0, 3):
        raise SystemExit(f"run {' '.join(extra) or 'local'} failed ({r.returncode}): {r.stderr.strip()[-500:]}")
    lines = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
    summary = lines[-1]["summary"]
    answers = [(d["input"], d["top_k"][0]["label"]) for d in lines[:-1]]
    engine = summary.get("engine") or {}
    return {"wall_s": wall, "run_s": summary["seconds"], "count": summary["count"],
            "skipped": summary["skipped_total"], "answers": answers, "startup_s": engine.get("startup_s"),
            "per_worker": [w["images_per_s"] for w in engine.get("per_worker", [])]}


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--size", type=int, default=96, help="image side in pixels (default 96)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--small", type=int, help="also run on the first N images (default --images / 5): the "
                    "difference between the two sizes is the marginal throughput, without the fixed costs")
    ap.add_argument("-o", "--out", default="benchmarks/results")
    args = ap.parse_args()
    small = args.small or max(1, args.images // 5)
    with tempfile.TemporaryDirectory(prefix="scale_out_") as tmp:
        folder, model = Path(tmp, "images"), make_model(Path(tmp, "small_cnn.onnx-fp32.onnx"))
        make_images(folder, args.images, args.size)
        subset = Path(tmp, "first.txt")  # a list file: the first `small` images of the same folder
        subset.write_text("".join(f"{p}\n" for p in sorted(folder.iterdir())[:small]))
        results: dict[str, list[dict]] = {name: [] for name in CONFIGS}
        smalls: dict[str, list[dict]] = {name: [] for name in CONFIGS}
        for rnd in range(args.rounds):
            for name, extra in (CONFIGS.items() if rnd % 2 == 0 else reversed(CONFIGS.items())):
                results[name].append(run_once(model, folder, extra))
                smalls[name].append(run_once(model, subset, extra))
                print(f"round {rnd + 1} {name}: {results[name][-1]['wall_s']:.1f} s ({args.images} images), "
                      f"{smalls[name][-1]['wall_s']:.1f} s ({small})", file=sys.stderr)
    reference = results["local"][0]["answers"]
    rows = []
    for name, runs in results.items():
        assert all(r["answers"] == reference for r in runs), f"{name} gave different results than the local engine"
        count = runs[0]["count"]
        wall = statistics.median(r["wall_s"] for r in runs)
        run_s = statistics.median(r["run_s"] for r in runs)
        workers = [statistics.median(ws) for ws in zip(*(r["per_worker"] for r in runs))] if runs[0]["per_worker"] \
            else []
        startup = statistics.median(r["startup_s"] for r in runs) if runs[0]["startup_s"] is not None else None
        wall_small = statistics.median(r["wall_s"] for r in smalls[name])
        marginal = (count - smalls[name][0]["count"]) / (wall - wall_small) if wall > wall_small else None
        rows.append({"engine": name, "images": count, "small_images": smalls[name][0]["count"],
                     "small_wall_s": round(wall_small, 2),
                     "marginal_images_per_s": None if marginal is None else round(marginal, 1), "skipped": runs[0]["skipped"], "wall_s": round(wall, 2),
                     "images_per_s_wall": round(count / wall, 1), "run_s": round(run_s, 2),
                     "images_per_s_run": round(count / run_s, 1),
                     "ray_startup_s": None if startup is None else round(startup, 2),
                     "per_worker_images_per_s_busy": [round(w, 1) for w in workers]})
    base = rows[0]["images_per_s_wall"]
    print(f"\n{args.images} images of {args.size} px, small CNN (ONNX, 64x64), {os.cpu_count()} CPUs, "
          f"median of {args.rounds} interleaved round(s)\n")
    print(f"| engine | wall s | img/s (wall) | vs local | wall s, {small} img | marginal img/s | run s | img/s (run) "
          "| Ray start s | per worker img/s busy |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['engine']} | {r['wall_s']:.1f} | {r['images_per_s_wall']:.0f} | "
              f"{r['images_per_s_wall'] / base:.2f}× | {r['small_wall_s']:.1f} | {_num(r['marginal_images_per_s'])} | "
              f"{r['run_s']:.1f} | {r['images_per_s_run']:.0f} | "
              f"{_num(r['ray_startup_s'])} | "
              f"{', '.join(f'{w:.0f}' for w in r['per_worker_images_per_s_busy']) or '-'} |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "scale_out.json").write_text(json.dumps({"images": args.images, "small": small, "size": args.size,
                                                    "rounds": args.rounds,
                                                    "cpus": os.cpu_count(), "load_avg": os.getloadavg(),
                                                    "results": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
