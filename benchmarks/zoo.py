"""Architecture coverage: keras.applications backbones x every format x every backend, judged by parity.

    nice python benchmarks/zoo.py                       # every architecture below (about 2 h on 2 cores)
    python benchmarks/zoo.py --only mobilenet_v2,resnet50 --keep
    python benchmarks/zoo.py --merge a/zoo.json b/zoo.json   # two runs side by side (one per worktree), combined

Each architecture of the train.models table is built with weights=None at 32 px and trained from scratch on
the embedded shapes dataset by `edgeproof train --model NAME --weights none` (the project's own loop, precise
BatchNorm statistics, best epoch by val loss) until its test accuracy is far above chance. Its model.keras is
then copied out of the run folder and taken through the bring-your-own-model path exactly as a user's file:

    edgeproof convert model.keras --to all --labels ... --calib-data train/      (int8 calibrated on 200 images;
                                                  its held-out gate, ladder and qat rival as the CLI runs them)
    edgeproof parity model.keras --artifacts A --data val/ --fix --promote       (only when an artifact fails;
                                                  the ladder ends with the qat fine-tune on train/)
    edgeproof parity model.keras --artifacts A --data test/                      (the verdict in the table)

The two "_onnx" entries are ONNX-source nets: the trained backbone is exported as a PyTorch user's file (NCHW,
its input normalisation moved from the graph to convert's flags) and goes through `convert model.onnx --to all
<flags>` and `parity model.onnx` (onnxruntime runs the source file as the reference) instead.

The fix is chosen on the validation split and judged on the test split, so a repaired cell is not graded on
the images that picked its repair. A cell (architecture x format) is "pass" when every backend that ran it
passed, "fail" (the first failing metric and backend) otherwise, "error" when the conversion failed (its one
line); a cell that passes only after a promoted fix says so ("fixed").

Writes benchmarks/results/zoo.json ({"architectures": [{"name", "params", "formats": {fmt: {"status",
"reason", "size_bytes", "p50_ms", "backends", "fixed"}}}], ...}) after every architecture, and
benchmarks/ZOO.md. The zoo is a benchmark, not a test: the figures are whatever this machine measured.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from zoo_report import summary, write_json, write_md  # benchmarks/ is the script's folder, first on sys.path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "zoo.json"
ZOO_MD = HERE / "ZOO.md"


@dataclass(frozen=True)
class Arch:
    alpha: float = 1.0  # width multiplier (only for the architectures that take one)
    epochs: int = 15
    backbone: str | None = None  # the train.models name when the zoo name differs (the ONNX-source entries)
    onnx_contract: dict | None = None  # an ONNX-source entry: the contract flags its bare .onnx is converted with
    lr: float | None = None  # Adam's learning rate when LR does not train it


# The ONNX-source entries: the Keras backbone is trained as above, then exported as a PyTorch user's file would
# be: without its input Rescaling (the normalisation is the user's flags, not baked in), NCHW input (tf2onnx
# inputs_as_nchw), a bare model.onnx. It is converted and judged as `convert model.onnx --to all <flags>` and
# `parity model.onnx` (onnxruntime runs the source file as the reference).
TF_INCEPTION = {"preset": "tf-inception"}  # --preset tf-inception: x / 127.5 - 1, RGB
MEAN_STD_127 = {"scale": 1.0, "mean": [127.5], "std": [127.5]}  # --mean 127.5 --std 127.5: the same, by flags


# name in train.models.BACKBONES -> how it is trained; lighter first, so a time limit cuts the heaviest only.
ZOO = {
    "mobilenet_v3_small_onnx": Arch(1.0, 20, "mobilenet_v3_small", TF_INCEPTION),
    "mobilenet_onnx": Arch(1.0, 20, "mobilenet", MEAN_STD_127),
    "mobilenet": Arch(1.0, 20),
    "mobilenet_v2": Arch(1.0, 20),
    "mobilenet_v3_small": Arch(1.0, 20),
    "mobilenet_v3_large": Arch(1.0, 20),
    "efficientnet_b0": Arch(1.0, 12),
    "efficientnetv2_b0": Arch(1.0, 12),
    "nasnet_mobile": Arch(1.0, 10),
    "densenet121": Arch(1.0, 10),
    # VGG16 has no BatchNorm: at Adam 3e-3 its loss blew up in the first epoch (900) and it stayed at chance
    "vgg16": Arch(1.0, 15, lr=1e-4),
    "resnet50_v2": Arch(1.0, 10),
    "convnext_tiny": Arch(1.0, 10),
    "resnet50": Arch(1.0, 10),
}
IMG_SIZE = 32  # the smallest size every backbone takes: most end in a 1x1 map, the graphs are the full ones
LR, BATCH = 3e-3, 64
DATASET = "shapes"  # embedded: 300 training, 64 val and 64 test images per class
CALIB = 200
SETTINGS = {"dataset": DATASET, "img_size": IMG_SIZE, "lr": LR, "batch_size": BATCH, "calibration_images": CALIB}


def cell(fmt: str, manifest_entry, rows: list) -> dict:
    """One architecture x format cell from its conversion result and its parity rows (one per backend)."""
    size = manifest_entry.bytes if manifest_entry is not None else None
    if manifest_entry is not None and manifest_entry.status == "failed" and manifest_entry.path is not None \
            and "held_out_gate" in manifest_entry.options:  # converted, then missed convert's held-out gate (a
        # conversion that failed is "failed" too, with no file: that one is an error below)
        return {"status": "fail", "reason": " ".join(f"convert's held-out gate: {manifest_entry.error}".split())[:300],
                "size_bytes": size, "p50_ms": None, "backends": {}}
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


def train_model(name: str, arch: Arch, data: Path, run_dir: Path) -> dict:
    """`edgeproof train --model NAME --weights none` on the dataset folder; returns its metrics.json."""
    from edgeproof.train.trainer import TrainConfig, train

    cfg = TrainConfig(data_dir=data, out_dir=run_dir, model=arch.backbone or name, img_size=IMG_SIZE, epochs=arch.epochs,
                      patience=arch.epochs, lr=arch.lr or LR, batch_size=BATCH, alpha=arch.alpha, weights="none")
    train(cfg, progress=False, checkpoint=False)
    return json.loads((run_dir / "metrics.json").read_text())


def export_onnx_source(keras_path: Path, dest: Path) -> dict:
    """The trained Keras model as a PyTorch user's ONNX file: the graph after its first Rescaling layer (the
    normalisation moves to the contract flags), NCHW input, softmax output; returns that Rescaling's contract."""
    import keras
    import tensorflow as tf
    import tf2onnx

    model = keras.models.load_model(keras_path, compile=False)
    resc = next(layer for layer in model.layers if type(layer).__name__ == "Rescaling")
    body = keras.Model(resc.output, model.output)
    spec = tf.TensorSpec((None, *body.inputs[0].shape[1:]), tf.float32, name="input")

    @tf.function(input_signature=[spec])
    def serve(input):  # noqa: A002 - the ONNX input's name
        return {"output": body(input, training=False)}

    proto, _ = tf2onnx.convert.from_function(serve, input_signature=[spec], opset=17, inputs_as_nchw=["input"])
    dest.write_bytes(proto.SerializeToString())
    return {"scale": float(resc.scale), "offset": float(resc.offset)}


def contract_overrides(flags: dict) -> dict:
    """The convert overrides of the entry's flags (--preset expanded as the CLI does, explicit flags beat it)."""
    from edgeproof.cli.contract_flags import PRESETS

    out = {k: v for k, v in PRESETS[flags["preset"]].items() if k != "bgr" or v} if "preset" in flags else {}
    out.update({k: v for k, v in flags.items() if k != "preset"})
    return out


def run_architecture(name: str, arch: Arch, data: Path, work: Path, fix: bool = True, reuse: bool = False) -> dict:
    """Train (weights=None), copy model.keras out of the run folder, then convert and judge it as a
    bring-your-own model (module docstring: convert, fix on val/, parity on test/). reuse: take the run folder an
    earlier zoo run trained in `work` (its entry says so: reused_training), convert and judge anew."""
    from edgeproof.convert import convert_run
    from edgeproof.convert.manifest import load_manifest
    from edgeproof.convert.source import open_source
    from edgeproof.formats import FORMATS
    from edgeproof.parity import run_parity
    from edgeproof.parity.escalate import escalate
    from edgeproof.train.models import BACKBONES

    t0 = time.perf_counter()
    bb = BACKBONES[arch.backbone or name]
    entry: dict = {"name": name, "application": bb.app, "alpha": arch.alpha, "img_size": IMG_SIZE,
                   "epochs": arch.epochs, "lr": arch.lr or LR, "source": "onnx" if arch.onnx_contract else "keras"}
    classes = sorted(p.name for p in (data / "train").iterdir() if p.is_dir())
    root = work / name
    trained = root / "run" / "metrics.json"
    if reuse and trained.is_file() and (root / "run" / "model.keras").is_file():
        metrics = json.loads(trained.read_text())  # an earlier zoo run's training, kept; everything after it anew
        for old in [p for p in root.iterdir() if p.name != "run"]:
            shutil.rmtree(old) if old.is_dir() else old.unlink()
        entry["reused_training"] = {"run": str(root / "run"), "trained_at": time.strftime(
            "%Y-%m-%dT%H:%M:%SZ", time.gmtime(trained.stat().st_mtime))}
    else:
        if root.exists():
            shutil.rmtree(root)
        root.mkdir(parents=True)
        try:
            metrics = train_model(name, arch, data, root / "run")
        except Exception as exc:  # noqa: BLE001 - a benchmark records what failed and goes on
            entry.update(error=f"train: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}", formats={})
            return entry
    acc = metrics.get("accuracy", {})
    entry.update(params=int(metrics.get("params") or 0), train_accuracy=acc.get("train"), val_accuracy=acc.get("val"),
                 best_epoch=metrics.get("best_epoch"),
                 train_seconds=None if "reused_training" in entry else round(time.perf_counter() - t0, 1))
    overrides: dict = {"labels": classes}
    if arch.onnx_contract:  # a bare model.onnx (NCHW, no normalisation inside) and the flags that declare it
        model = root / "model.onnx"
        entry["onnx_input_rescaling"] = export_onnx_source(root / "run" / "model.keras", model)
        entry["contract_flags"] = arch.onnx_contract
        overrides.update(contract_overrides(arch.onnx_contract))
    else:
        model = root / "model.keras"  # a bare file from here on: labels and contract come from the flags below
        shutil.copyfile(root / "run" / "model.keras", model)
    if bb.preprocess == "caffe":  # no Rescaling/Normalization layer to read: declare raw 0..255 RGB (--scale 1)
        overrides["scale"] = 1.0
    t1 = time.perf_counter()
    art = root / "artifacts"
    source = open_source(model, overrides, data / "train")
    manifest = convert_run(source, art, formats=list(FORMATS), calib_count=CALIB)
    # what `edgeproof convert` does next: the held-out gate, its ladder and the qat rival (parity.escalate)
    held = escalate(source, art, [FORMATS[a.format] for a in manifest.artifacts if a.status == "ok"], CALIB)
    entry["held_out_gate"] = {h.format: {"status": h.status, "line": " ".join(h.line.split())[:400]} for h in held}
    manifest = load_manifest(art)
    entry["convert_seconds"] = round(time.perf_counter() - t1, 1)
    entry["int8_recipes"] = {e.format: e.options.get("recipe") for e in manifest.artifacts
                             if FORMATS[e.format].calibrated and e.options.get("recipe")}
    t2 = time.perf_counter()
    judge = dict(artifacts_dir=art, triage=False, e2e=False, progress=False)
    report = run_parity(model, data_dir=data / "test", out_dir=root / "parity", **judge)
    fixed: dict = {}
    entry["fix_enabled"], entry["fix_tried"] = fix, fix and not report.passed
    if entry["fix_tried"]:  # repair on val/, then judge again on test/
        try:
            fix = run_parity(model, artifacts_dir=art, data_dir=data / "val", triage=True, fix=True, promote=True,
                             e2e=False, progress=False, out_dir=root / "fix")
        except Exception as exc:  # noqa: BLE001 - a benchmark records what failed and goes on
            entry["fix_error"] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
            fix = None
        fixed = {p["artifact"]: p for p in fix.promoted} if fix is not None else {}
        entry["fix_seconds"] = round(fix.seconds, 1) if fix is not None else None
        if fixed:
            before = {fmt: cell(fmt, manifest.get(fmt), [r for r in report.rows if r.format == fmt])
                      for fmt in FORMATS}
            entry["before_fix"] = {f: c["status"] for f, c in before.items()}
            manifest = load_manifest(art)  # the promoted files' sizes and sha256
            report = run_parity(model, data_dir=data / "test", out_dir=root / "parity", **judge)
    entry["parity_seconds"] = round(time.perf_counter() - t2, 1)
    entry["parity_images"] = report.n_images
    entry["keras_test_accuracy"] = report.reference.get("accuracy")
    entry["formats"] = {}
    for fmt in FORMATS:
        rows = [r for r in report.rows if r.format == fmt]
        c = cell(fmt, manifest.get(fmt), rows)
        promoted = next((p for p in fixed.values() if rows and p["artifact"] == rows[0].artifact), None)
        c["fixed"] = promoted.get("variant") if promoted else None
        entry["formats"][fmt] = c
    sizes = {f: c["size_bytes"] for f, c in entry["formats"].items()}
    if sizes.get("tflite-int8") and sizes.get("tflite-fp32"):
        entry["int8_fp32_size_ratio"] = round(sizes["tflite-int8"] / sizes["tflite-fp32"], 3)
    entry["seconds"] = round(time.perf_counter() - t0, 1)
    return entry


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", metavar="LIST", help=f"comma-separated subset of: {', '.join(ZOO)}")
    p.add_argument("--work", default="/tmp/edgeproof-zoo", help="where run folders and artifacts go")
    p.add_argument("--keep", action="store_true", help="keep results of architectures not in --only")
    p.add_argument("--md-only", action="store_true", help="rewrite ZOO.md from zoo.json, run nothing")
    p.add_argument("--no-fix", action="store_true", help="skip the parity --fix --promote repair on val/ (it re-exports "
                   "each failing int8 artifact up to 8 times: minutes on the 25 M-parameter backbones)")
    p.add_argument("--reuse", action="store_true", help="reuse the model an earlier run trained in --work (NAME/run/) "
                   "and convert, fix and judge it anew (recorded as reused_training; training is deterministic)")
    p.add_argument("--merge", nargs="+", metavar="ZOO_JSON", help="combine the architectures of zoo.json files "
                   "written by separate runs (a later file's entry wins) into zoo.json and ZOO.md, run nothing")
    p.add_argument("--stale", metavar="ZOO_JSON", help="with --merge: keep this earlier zoo.json's architectures that "
                   "the merged runs lack, marked stale and counted apart")
    args = p.parse_args(argv)
    if args.merge:
        merged: dict[str, dict] = {}
        for f in args.merge:
            merged.update({a["name"]: a for a in json.loads(Path(f).read_text())["architectures"]})
        started = min(a.get("started", "") for a in merged.values())
        if args.stale:  # an earlier run's architectures that these runs did not measure, kept and marked
            old = json.loads(Path(args.stale).read_text())
            why = f"the run of {old.get('started', '?')[:10]}, judged by that day's gate"
            merged.update({a["name"]: dict(a, stale=why) for a in old["architectures"] if a["name"] not in merged})
        archs = sorted(merged.values(), key=lambda a: list(ZOO).index(a["name"]))
        write_json(archs, started, SETTINGS, RESULTS)
        write_md(archs, SETTINGS, ZOO_MD)
        return 0
    if args.md_only:
        write_md(json.loads(RESULTS.read_text())["architectures"], SETTINGS, ZOO_MD)
        return 0
    names = [n.strip() for n in args.only.split(",")] if args.only else list(ZOO)
    unknown = [n for n in names if n not in ZOO]
    if unknown:
        print(f"unknown architecture(s) {unknown}; valid: {', '.join(ZOO)}", file=sys.stderr)
        return 2
    from edgeproof.train.datasets import build_dataset

    data = build_dataset(DATASET, image_size=IMG_SIZE)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    archs: list[dict] = []
    if args.keep and RESULTS.exists():
        archs = [a for a in json.loads(RESULTS.read_text())["architectures"] if a["name"] not in names]
    for name in names:
        print(f"[zoo] {name}: training, converting, parity ...", file=sys.stderr, flush=True)
        try:
            entry = run_architecture(name, ZOO[name], data, Path(args.work), fix=not args.no_fix, reuse=args.reuse)
        except Exception as exc:  # noqa: BLE001 - one architecture's crash is its row; the others still run
            entry = {"name": name, "error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}", "formats": {}}
        entry.update(started=started, command="nice python benchmarks/zoo.py " + " ".join(sys.argv[1:]))
        archs.append(entry)
        archs.sort(key=lambda a: list(ZOO).index(a["name"]))
        write_json(archs, started, SETTINGS, RESULTS)
        write_md(archs, SETTINGS, ZOO_MD)
        statuses = {f: c["status"] for f, c in entry.get("formats", {}).items()}
        statuses["accuracy (train, val, test)"] = (entry.get("train_accuracy"), entry.get("val_accuracy"),
                                                   entry.get("keras_test_accuracy"))
        print(f"[zoo] {name}: {entry.get('seconds')} s {statuses} {entry.get('error', '')}", file=sys.stderr,
              flush=True)
    s = summary(archs)
    print(f"[zoo] {s['pass']}/{s['cells']} cells pass ({(s['pass_fraction'] or 0):.0%}); {RESULTS}, {ZOO_MD}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
