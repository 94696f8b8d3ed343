"""Architecture coverage: keras.applications backbones x every format x every backend, judged by parity.

    nice python benchmarks/zoo.py                       # every architecture below
    python benchmarks/zoo.py --only mobilenet_v2,resnet50 --keep

Each architecture of the train.models table is built with weights=None at a small width and 64 px, trained
briefly on the embedded shapes dataset (BatchNorm statistics from the 450 training images, then the softmax
head fit on the backbone's pooled features: confident, meaningful outputs in seconds, where 2-3 epochs of
end-to-end training from scratch left MobileNet a=0.25 at chance, 32 % on 3 classes), saved as model.keras
and taken through the bring-your-own-model path: convert to every format (--labels, --calib-data train/, int8
calibrated on 100 images) and parity on the test split with every installed backend. A cell (architecture x
format) is "pass" when every backend that ran it passed, "fail" (the first failing metric and backend)
otherwise, "error" when the conversion failed (its one line).

Writes benchmarks/results/zoo.json ({"architectures": [{"name", "params", "formats": {fmt: {"status",
"reason", "size_bytes", "p50_ms", "backends"}}}], ...}) after every architecture, and benchmarks/ZOO.md.
The zoo is a benchmark, not a test: the figures are whatever this machine measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "zoo.json"
ZOO_MD = HERE / "ZOO.md"

# name in train.models.BACKBONES -> width multiplier (small widths); lighter first, so a time limit cuts the
# heaviest (convnext_tiny, 28 M parameters) only.
ZOO = {
    "mobilenet": 0.25,
    "mobilenet_v2": 0.35,
    "mobilenet_v3_small": 0.75,
    "mobilenet_v3_large": 0.75,
    "efficientnet_b0": 1.0,
    "efficientnetv2_b0": 1.0,
    "nasnet_mobile": 1.0,
    "densenet121": 1.0,
    "resnet50": 1.0,
    "resnet50_v2": 1.0,
    "convnext_tiny": 1.0,
}
PROBE_EPOCHS = 300  # full-batch Adam steps of the softmax head on the pooled features (a few seconds)
IMG_SIZE = 64  # at 32 px most backbones end in a 1x1 map
DATASET, PER_CLASS = "shapes", 150
CALIB = 100


def cell(fmt: str, manifest_entry, rows: list) -> dict:
    """One architecture x format cell from its conversion result and its parity rows (one per backend)."""
    size = manifest_entry.bytes if manifest_entry is not None else None
    if manifest_entry is None or manifest_entry.status != "ok":
        reason = (manifest_entry.error if manifest_entry is not None else "not converted") or "conversion failed"
        return {"status": "error", "reason": " ".join(reason.split())[:300], "size_bytes": size, "p50_ms": None,
                "backends": {}}
    backends = {r.backend: {"status": r.status, "reason": r.reason[:200] if r.status != "pass" else "",
                            "p50_ms": r.latency_p50_ms,
                            "failures": [f.to_dict() for f in r.failures]} for r in rows}
    judged = [r for r in rows if r.status in ("pass", "fail", "error")]
    failing = [r for r in judged if r.status != "pass"]
    p50 = next((r.latency_p50_ms for r in rows if r.status == "pass" and r.latency_p50_ms is not None), None)
    if not judged:
        return {"status": "fail", "reason": "no backend could run it", "size_bytes": size, "p50_ms": None,
                "backends": backends}
    if failing:
        r = failing[0]
        f = r.failures[0] if r.failures else None
        why = f"{r.backend}: {f.metric} {f.message}" if f else f"{r.backend}: {r.status} {r.reason}"
        return {"status": "fail", "reason": " ".join(why.split())[:300], "size_bytes": size, "p50_ms": p50,
                "backends": backends}
    return {"status": "pass", "reason": "", "size_bytes": size, "p50_ms": p50, "backends": backends}


def fit_probe(model, x: np.ndarray, y: np.ndarray, classes: int, seed: int = 0) -> float:
    """Train the model briefly: BatchNorm statistics from the training images, then the softmax head fit on
    the backbone's (standardized) pooled features, the standardization folded into the head's weights."""
    import keras

    from edgeproof.train.models import recalibrate_batchnorm

    recalibrate_batchnorm(model, x, max_images=len(x), seed=seed)
    features = keras.Model(model.inputs[0], model.get_layer("gap").output).predict(x, batch_size=64, verbose=0)
    mu = features.mean(0)
    std = features.std(0)
    sigma = np.maximum(std, 0.05 * float(std.max()) + 1e-12)  # a near-constant feature must not get a huge weight
    keras.utils.set_random_seed(seed)
    head = keras.Sequential([keras.Input((features.shape[1],)), keras.layers.Dense(
        classes, activation="softmax", kernel_regularizer=keras.regularizers.L2(1e-3))])
    head.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy", metrics=["accuracy"])
    hist = head.fit((features - mu) / sigma, y, epochs=PROBE_EPOCHS, batch_size=len(y), verbose=0)
    w, bias = head.layers[-1].get_weights()
    model.get_layer("probs").set_weights([w / sigma[:, None], bias - (mu / sigma) @ w])
    return float(hist.history["accuracy"][-1])


def _split(data: Path, name: str, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    from edgeproof.contract import Preprocess
    from edgeproof.runtime.preprocess import load_batch

    paths = [(p, i) for i, c in enumerate(classes) for p in sorted((data / name / c).iterdir())]
    x, used, skipped = load_batch([p for p, _ in paths], Preprocess(IMG_SIZE, IMG_SIZE))
    assert not skipped, skipped
    return x, np.asarray([i for _, i in paths], np.int64)


def run_architecture(name: str, alpha: float, data: Path, work: Path) -> dict:
    """Build (weights=None), train briefly, save model.keras, then convert and judge it as a bring-your-own
    model: `edgeproof convert model.keras --labels ... --calib-data train/` and `edgeproof parity model.keras
    --artifacts ... --data test/`."""
    from edgeproof.convert import convert_run
    from edgeproof.formats import FORMATS
    from edgeproof.parity import run_parity
    from edgeproof.train.models import BACKBONES, build_model

    t0 = time.perf_counter()
    entry: dict = {"name": name, "application": BACKBONES[name].app, "alpha": alpha, "img_size": IMG_SIZE}
    classes = sorted(p.name for p in (data / "train").iterdir() if p.is_dir())
    root = work / name
    root.mkdir(parents=True, exist_ok=True)
    try:
        model = build_model(name, IMG_SIZE, len(classes), alpha)
        x, y = _split(data, "train", classes)
        entry["train_accuracy"] = round(fit_probe(model, x, y, len(classes)), 3)
        model.save(root / "model.keras")
    except Exception as exc:  # noqa: BLE001 - a benchmark records what failed and goes on
        entry.update(error=f"build/train: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}", formats={})
        return entry
    entry.update(params=int(model.count_params()), train_seconds=round(time.perf_counter() - t0, 1))
    t1 = time.perf_counter()
    art = root / "artifacts"
    manifest = convert_run(root / "model.keras", art, formats=list(FORMATS), calib_count=CALIB,
                           overrides={"labels": classes}, calib_data=data / "train")
    entry["convert_seconds"] = round(time.perf_counter() - t1, 1)
    t2 = time.perf_counter()
    report = run_parity(root / "model.keras", artifacts_dir=art, data_dir=data / "test", triage=False, e2e=False,
                        progress=False, out_dir=root / "parity")
    entry["parity_seconds"] = round(time.perf_counter() - t2, 1)
    entry["parity_images"] = report.n_images
    entry["keras_test_accuracy"] = report.reference.get("accuracy")
    entry["formats"] = {fmt: cell(fmt, manifest.get(fmt), [r for r in report.rows if r.format == fmt])
                        for fmt in FORMATS}
    sizes = {f: c["size_bytes"] for f, c in entry["formats"].items()}
    if sizes.get("tflite-int8") and sizes.get("tflite-fp32"):
        entry["int8_fp32_size_ratio"] = round(sizes["tflite-int8"] / sizes["tflite-fp32"], 3)
    entry["seconds"] = round(time.perf_counter() - t0, 1)
    return entry


def summary(archs: list[dict]) -> dict:
    cells = [c for a in archs for c in a.get("formats", {}).values()]
    passed = sum(c["status"] == "pass" for c in cells)
    return {"cells": len(cells), "pass": passed, "fail": sum(c["status"] == "fail" for c in cells),
            "error": sum(c["status"] == "error" for c in cells),
            "pass_fraction": round(passed / len(cells), 3) if cells else None}


def write_json(archs: list[dict], started: str) -> None:
    from edgeproof.convert.pipeline import versions

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    data = {"architectures": archs, "summary": summary(archs), "dataset": f"{DATASET} (embedded, {PER_CLASS}/class)",
            "img_size": IMG_SIZE, "calibration_images": CALIB, "started": started,
            "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
            "versions": versions(), "command": "nice python benchmarks/zoo.py"}
    tmp = RESULTS.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    tmp.replace(RESULTS)


def _cell_text(c: dict) -> str:
    size = f"{c['size_bytes'] / 2**20:.2f} MB" if c.get("size_bytes") else ""
    lat = f"{c['p50_ms']:.2f} ms" if c.get("p50_ms") is not None else ""
    figures = ", ".join(v for v in (size, lat) if v)
    if c["status"] == "pass":
        return f"pass ({figures})"
    what = "fail" if c["status"] == "fail" else "error"
    return f"**{what}**: {c['reason'][:140]}" + (f" ({figures})" if figures else "")


def write_md(archs: list[dict]) -> None:
    """The generated table; the hand-written analysis lives below the marker and is kept."""
    from edgeproof.formats import FORMATS

    try:
        from edgeproof.tables import markdown_table
    except ImportError:  # before the seams refactor it lived in the CLI's console module
        from edgeproof.cli.console import markdown_table
    s = summary(archs)
    rows = []
    for a in archs:
        head = f"{a['name']} (α {a['alpha']:g}, {a.get('params', 0) / 1e6:.2f} M params, Keras test acc " \
               f"{(a.get('keras_test_accuracy') or 0):.0%})" if "params" in a else a["name"]
        rows.append([head] + ([_cell_text(a["formats"][f]) if f in a.get("formats", {}) else a.get("error", "")
                               for f in FORMATS]))
    ratios = [(a["name"], a["int8_fp32_size_ratio"]) for a in archs if "int8_fp32_size_ratio" in a]
    marker = "<!-- analysis below is kept when zoo.py rewrites the table -->"
    kept = ZOO_MD.read_text().split(marker, 1)[1] if ZOO_MD.exists() and marker in ZOO_MD.read_text() else "\n"
    text = (
        "# Architecture zoo: keras.applications × every format × every backend\n\n"
        "Generated by `nice python benchmarks/zoo.py` (figures in `benchmarks/results/zoo.json`). Each "
        f"architecture is built with `weights=None` at {IMG_SIZE}×{IMG_SIZE} px, trained briefly on the embedded "
        f"shapes dataset ({PER_CLASS} training images per class: BatchNorm statistics, then the softmax head on the "
        "pooled features), saved as `model.keras` and taken through the bring-your-own-model path: converted to "
        f"every format (`--labels`, `--calib-data`, int8 calibrated on {CALIB} training images) and judged by "
        "`edgeproof parity model.keras --data test/` with every installed "
        "backend (litert, onnxruntime, opencv, openvino). A cell passes when every backend that ran the "
        "artifact passed its format's gate; size is the artifact, p50 the first passing backend's latency "
        "(1 image, this 2-core machine).\n\n"
        f"**{s['pass']} of {s['cells']} cells pass ({(s['pass_fraction'] or 0):.0%})**; {s['fail']} fail, "
        f"{s['error']} conversion errors.\n\n"
        + markdown_table(["architecture", *FORMATS], rows) + "\n\n"
        + "int8 TFLite size / fp32 TFLite size: "
        + ", ".join(f"{n} {r:.3f}" for n, r in ratios) + "\n\n" + marker + kept)
    ZOO_MD.write_text(text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", metavar="LIST", help=f"comma-separated subset of: {', '.join(ZOO)}")
    p.add_argument("--work", default="/tmp/edgeproof-zoo", help="where run folders and artifacts go")
    p.add_argument("--keep", action="store_true", help="keep results of architectures not in --only")
    p.add_argument("--md-only", action="store_true", help="rewrite ZOO.md from zoo.json, run nothing")
    args = p.parse_args(argv)
    if args.md_only:
        write_md(json.loads(RESULTS.read_text())["architectures"])
        return 0
    names = [n.strip() for n in args.only.split(",")] if args.only else list(ZOO)
    unknown = [n for n in names if n not in ZOO]
    if unknown:
        print(f"unknown architecture(s) {unknown}; valid: {', '.join(ZOO)}", file=sys.stderr)
        return 2
    from edgeproof.train.datasets import build_dataset

    data = build_dataset(DATASET, image_size=IMG_SIZE, per_class=PER_CLASS)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    archs: list[dict] = []
    if args.keep and RESULTS.exists():
        archs = [a for a in json.loads(RESULTS.read_text())["architectures"] if a["name"] not in names]
    for name in names:
        print(f"[zoo] {name}: training, converting, parity ...", file=sys.stderr, flush=True)
        entry = run_architecture(name, ZOO[name], data, Path(args.work))
        archs.append(entry)
        archs.sort(key=lambda a: list(ZOO).index(a["name"]))
        write_json(archs, started)
        write_md(archs)
        statuses = {f: c["status"] for f, c in entry.get("formats", {}).items()}
        statuses["accuracy (train, test)"] = (entry.get("train_accuracy"), entry.get("keras_test_accuracy"))
        print(f"[zoo] {name}: {entry.get('seconds')} s {statuses} {entry.get('error', '')}", file=sys.stderr,
              flush=True)
    s = summary(archs)
    print(f"[zoo] {s['pass']}/{s['cells']} cells pass ({(s['pass_fraction'] or 0):.0%}); {RESULTS}, {ZOO_MD}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
