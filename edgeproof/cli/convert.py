"""`edgeproof convert MODEL --to LIST|all -o OUT`: every artifact an edge user needs.

MODEL: a run folder from `edgeproof train`, or any Keras image classifier (.keras, .h5, SavedModel folder)
with its labels/contract from the file or from the flags shared with `edgeproof run` (cli.contract_flags).
"""

from __future__ import annotations

import argparse

from edgeproof.cli.contract_flags import add_contract_flags, overrides_from
from edgeproof.cli.trust_flag import add_trust_flag
from edgeproof.formats import FORMATS, INT8_RECIPE


def register(sub: argparse._SubParsersAction) -> None:
    fmts = ", ".join(FORMATS)
    p = sub.add_parser(
        "convert", help="convert a trained model to TFLite / Edge TPU / ONNX artifacts",
        description="Convert a trained Keras model (a run folder, or any .keras / .h5 / SavedModel image "
        "classifier) to edge artifacts. "
        "Each file embeds its labels, preprocessing contract and I/O quantization, is verified to load in "
        "its runtime, and is listed in OUT/manifest.json (sha256, size, seconds, options, calibration hash). "
        f"Formats: {fmts}.",
        epilog="examples:\n  edgeproof convert runs/x --to all -o runs/x/artifacts\n"
               "  edgeproof convert runs/x --to tflite-int8,onnx-int8 --int8-io uint8 -o out\n"
               "  edgeproof convert runs/x --device rpi4 -o out\n"
               "  edgeproof convert model.keras --labels cat,dog --calib-data imgs/ --to all -o out\n"
               "  edgeproof convert model.h5 --labels labels.txt --scale 0.00392157 --to tflite-fp32,onnx-fp32\n"
               "\nbring your own model: labels from --labels (default class_0..class_N-1, with a warning); the\n"
               "preprocessing contract is raw 0-255 RGB when the model has Rescaling/Normalization layers (as\n"
               "keras.applications models with their preprocessing do), else what --scale/--mean/--std/--bgr/--size\n"
               "declare; heads: softmax, logits, one sigmoid unit (binary: class 0 = 1-p, class 1 = p); multi-label\n"
               "(N sigmoids) is refused. int8/edgetpu/onnx-int8 need --calib-data (never random data).\n"
               "exit status: 0 every format converted and every int8 artifact passes the gate on its held-out\n"
               "calibration images; 1 an int8 artifact misses it even after the fix ladder (written, marked failed in\n"
               "manifest.json; --allow-failing exits 0); 2 bad input or a format that could not be converted (the\n"
               "formats that did convert are kept).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("source", metavar="MODEL", help="a run folder from 'edgeproof train' (or its model.keras), or a "
                   ".keras / .h5 file or SavedModel folder of any Keras image classifier")
    p.add_argument("--to", metavar="LIST", help=f"comma-separated formats or 'all' ({fmts})")
    p.add_argument("--device", metavar="PROFILE",
                   help="convert the formats a device profile prefers (see 'edgeproof devices list')")
    p.add_argument("-o", "--out", metavar="OUT", help="output folder (default: RUN_DIR/artifacts, or 'artifacts' "
                   "beside a bare model)")
    p.add_argument("--calib-count", type=int, default=200, metavar="N",
                   help="calibration images from the train split (or --calib-data), stratified by class (default 200)")
    p.add_argument("--calib-data", metavar="DIR", help="calibration images for int8/edgetpu/onnx-int8 (class "
                   "subfolders optional; needed for a bare model, replaces a run's train split)")
    p.add_argument("--int8-io", choices=INT8_RECIPE.io_types, default="int8",
                   help="input/output type of tflite-int8 (default int8; edgetpu is always uint8)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    add_trust_flag(p)
    p.add_argument("--head", choices=("probabilities", "logits", "sigmoid", "sigmoid-logit", "multi-label"),
                   metavar="HEAD",
                   help="the output head where the model's graph does not say it (a SavedModel, an ONNX graph not "
                        "ending in Softmax/Sigmoid): probabilities (softmax), logits (raw), sigmoid (one sigmoid "
                        "unit), sigmoid-logit (one raw unit), or multi-label (N independent sigmoids); default: "
                        "read from the last layer, else from the outputs")
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration sample (default 0)")
    p.add_argument("--no-int8-search", action="store_true",
                   help="use the format table's int8 recipe as is (default: compare the int8 recipes on held-out "
                        "calibration images and keep the most faithful; see README 'int8 that passes the gate')")
    p.add_argument("--auto-fix", action=argparse.BooleanOptionalAction, default=True,
                   help="judge each int8 artifact with the parity gate on its held-out calibration images and, when it "
                        "misses, climb the fix ladder (more calibration images and every calibration recipe, "
                        "per-channel/per-tensor, the worst tensors in int16 or float, int16 activations) until a "
                        "variant passes (default on; --no-auto-fix: judge only)")
    p.add_argument("--prefer", choices=("balanced", "fidelity", "speed"), default="balanced",
                   help="a passing variant more than 2x slower than the artifact (p50 side by side): balanced (default) "
                        "takes it only when nothing faster passes, fidelity takes it, speed never does")
    p.add_argument("--allow-failing", action="store_true",
                   help="exit 0 even when an int8 artifact misses the gate on its held-out images (it is written and "
                        "marked failed in manifest.json either way)")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON on stdout")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_contract_flags(p, "bring-your-own model: labels and preprocessing (the flags of 'edgeproof run')")
    p.set_defaults(func=run)


def device_formats(name: str) -> list[str]:
    """The formats a device profile prefers, in its order (only those in the format table)."""
    from edgeproof.errors import UsageError

    try:
        from edgeproof.devices import get_profile
    except ImportError:
        raise UsageError("--device needs the device profiles (edgeproof.devices), missing from this install; "
                         "use --to LIST instead") from None
    profile = get_profile(name)
    wanted = [a for a in getattr(profile, "artifacts", []) if a in FORMATS]
    if not wanted:
        raise UsageError(f"device profile '{name}' prefers no format edgeproof can make "
                         f"({getattr(profile, 'artifacts', [])}); use --to with one of: {', '.join(FORMATS)}")
    return wanted


def run(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from edgeproof.cli.console import error_line, info, print_json, progress_bars, table, warn
    from edgeproof.convert import convert_run
    from edgeproof.convert.options import ConvertOptions
    from edgeproof.convert.source import open_source
    from edgeproof.errors import UsageError

    if args.to and args.device:
        raise UsageError("give either --to LIST or --device PROFILE, not both")
    if not args.to and not args.device:
        raise UsageError(f"no formats requested; give --to LIST|all (valid: {', '.join(FORMATS)}) or --device PROFILE")
    # every conversion option checked here, once, before the model is opened
    options = ConvertOptions(args.to or device_formats(args.device), calib_count=args.calib_count,
                             int8_io=args.int8_io, opset=args.opset, seed=args.seed,
                             int8_search=not args.no_int8_search)
    formats = options.names
    src = Path(args.source)
    from edgeproof.stderr_filter import kept_library_log

    # TensorFlow/converter chatter (fd 1/2, print, warnings) goes to a temp log, kept only when a format failed
    with kept_library_log("convert") as log:
        ov = {**overrides_from(args), **({"head": args.head} if args.head else {})}
        source = open_source(src, ov, args.calib_data, trust_model=args.trust_model)
        if not args.json:
            for line in source.notes:
                info(f"note: {src.name}: {line}")
        for line in source.warnings:
            warn(f"{src.name}: {line}")
        out = Path(args.out) if args.out else (source.root if not source.bare else src.parent) / "artifacts"
        manifest = convert_run(source, out, options, progress=progress_bars(not args.no_progress and not args.json))
        converted = {a.format for a in manifest.artifacts if a.status == "ok"}
        from edgeproof.parity.escalate import escalate

        held = escalate(source, out, [f for f in options.formats if f.name in converted], options.calib_count,
                        options.seed, auto_fix=args.auto_fix, prefer=args.prefer)
        from edgeproof.convert.manifest import load_manifest

        manifest = load_manifest(out)
        log.keep = any(a.status != "ok" for a in manifest.artifacts if a.format in formats)
    done = [a for a in manifest.artifacts if a.format in formats]
    if args.json:
        data = manifest.to_dict()
        data["requested"] = formats
        print_json(data)
    else:
        rows = [[a.format, a.status, f"{a.bytes / 1024:.1f} KiB" if a.bytes else "-", f"{a.seconds:.1f}",
                 a.path.name if a.path else "-"] for a in done]
        table(f"edgeproof convert -> {out}", ["Format", "Status", "Size", "Seconds", "File"], rows)
        for a in done:
            if a.error:
                error_line(a.error)
            for note in a.notes:
                info(f"note: {a.format}: {note}")
        cal = manifest.calibration
        if cal and any(FORMATS[f].calibrated for f in formats):
            info(f"calibration: {cal['used']} images (requested {cal['requested']}, {cal['skipped']} unreadable "
                 f"skipped), sha256 {cal['sha256'][:12]}")
        info(f"manifest: {manifest.path}")
        if log.keep:
            info(f"note: what TensorFlow and the converters printed: {log.path}")
    for h in held:  # a miss is the entry's error: the table's lines print it, --json prints it here
        if h.failed and args.json:
            error_line(h.line)
        elif not h.failed and not args.json:
            info(f"held-out gate: {h.line}")
    missed = {h.format for h in held if h.failed}
    failed = [a for a in done if a.status != "ok" and a.format not in missed]
    if failed:
        error_line(f"{len(failed)} of {len(done)} format(s) could not be converted: "
                   f"{', '.join(a.format for a in failed)} (the others are kept in {out})")
        return 2
    if missed and not args.allow_failing:
        return 1
    return 0
