"""`edgeproof inspect MODEL`: what a .tflite/.onnx artifact is, says about itself, and where it loads."""

from __future__ import annotations

import argparse

HEAD_TEXT = {"probabilities": "softmax probabilities", "logits": "logits (the runtime applies softmax)",
             "sigmoid": "one sigmoid unit p (binary: class 0 = 1-p, class 1 = p)",
             "sigmoid-logit": "one logit z (binary: p = sigmoid(z), class 0 = 1-p, class 1 = p)",
             "multi-label": "independent sigmoids (each score is P(label applies); they do not sum to 1)"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "inspect", help="show a model's I/O, ops, embedded metadata and which runtimes here can load it",
        description="Inspect a .tflite or .onnx model without TensorFlow: inputs/outputs (name, shape, dtype, "
        "quantization scale/zero point), op histogram, TFLite op versions and the runtime version they need, "
        "embedded edgeproof metadata, size, and a load attempt in every runtime installed here.",
        epilog="example:\n  edgeproof inspect runs/x/artifacts/model.tflite-int8.tflite\n\n"
               "Set EDGEPROOF_LEGACY_VENV (or --legacy-venv) to a venv with tflite-runtime 2.14 "
               "(benchmarks/legacy_tflite_runtime.sh makes one) to also load it there.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", metavar="MODEL", help="a .tflite or .onnx file")
    p.add_argument("--runtime-version", default="2.14.0", metavar="X.Y.Z",
                   help="TFLite runtime version to check op versions against (default 2.14.0, the last tflite-runtime)")
    p.add_argument("--legacy-venv", metavar="DIR", help="venv with tflite-runtime to try loading the model in")
    p.add_argument("--no-load", action="store_true", help="do not try loading the model in each runtime")
    p.add_argument("--no-verify", action="store_true", help="do not compare the file with the sha256 in manifest.json")
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    p.set_defaults(func=run)


def _spec_line(s: dict) -> str:
    shape = "x".join("?" if d is None or isinstance(d, str) else str(d) for d in s["shape"])
    q = f"  scale={s['scale']:.6g} zero_point={s['zero_point']}" if s.get("scale") else ""
    return f"  {s['name']}: {s['dtype']} [{shape}]{q}"


def _integrity_line(i: dict) -> str:
    if i["matches"] is True:
        return f"integrity: sha256 matches {i['manifest']}"
    if i["matches"] is False:
        return (f"integrity: MISMATCH: {i['manifest']} records sha256 {i['expected'][:16]}; the file was changed "
                "since 'edgeproof convert' (run/bench/parity refuse it unless --no-verify)")
    return f"integrity: {i['note']}"


def run(args: argparse.Namespace) -> int:
    import re

    from edgeproof.cli.console import print_json
    from edgeproof.errors import UsageError
    from edgeproof.runtime.inspect import inspect_model
    from edgeproof.text import printable

    if not re.fullmatch(r"\d+(\.\d+){0,2}", args.runtime_version):
        raise UsageError(f"--runtime-version '{args.runtime_version}' is not a version; give X.Y.Z such as 2.14.0")

    r = inspect_model(args.model, runtime_version=args.runtime_version, legacy_venv=args.legacy_venv,
                      check_runtimes=not args.no_load, verify=not args.no_verify)
    # Damaged or invalid embedded metadata: the whole report is still shown (inspecting a suspicious file is
    # inspect's job), then exit 2, because run, bench and parity refuse this file.
    bad_meta = next((n for n in r.get("notes", []) if n.startswith("metadata unreadable")), None)
    if args.json:
        print_json(r)
        return 2 if bad_meta else 0
    lines = [f"{r['path']}  ({r['bytes'] / 1024:.1f} KiB, sha256 {r['sha256'][:16]})",
             f"format: {r['format'] or 'unknown'}  family: {r['family']}", _integrity_line(r["integrity"])]
    if r.get("converter_tensorflow_version") or r.get("producer"):
        lines.append(f"made by: {('TensorFlow ' + r['converter_tensorflow_version']) if r.get('converter_tensorflow_version') else r.get('producer')}")
    if r.get("opsets"):
        lines.append("opsets: " + ", ".join(f"{k} {v}" for k, v in r["opsets"].items()))
    lines.append("inputs:")
    lines += [_spec_line(s) for s in r.get("inputs", [])]
    lines.append("outputs:")
    lines += [_spec_line(s) for s in r.get("outputs", [])]
    if r.get("op_histogram"):
        lines.append("ops: " + ", ".join(f"{k}×{v}" for k, v in r["op_histogram"].items()))
    if r.get("operator_codes"):
        lines.append("op versions: " + ", ".join(f"{c['op']} v{c['version']}" for c in r["operator_codes"]))
    if r.get("min_runtime_version"):
        lines.append(f"min TFLite runtime (converter): {r['min_runtime_version']}")
    for c in r.get("compat", []):
        mark = {True: "ok", False: "TOO OLD", None: "unknown"}[c["ok"]]
        lines.append(f"compat {c['runtime']}: {mark} — {c['reason']}")
    m = r.get("metadata")
    if m:
        pp = m["preprocess"]
        lines.append(f"metadata: {len(m['labels'])} labels ({', '.join(m['labels'][:6])}{', ...' if len(m['labels']) > 6 else ''})")
        channels = pp.get("channels", 3)
        kind = {1: "gray (ITU-R BT.601 luma)", 3: pp["color"], 4: f"{pp['color']}A"}.get(channels, f"{channels}-channel")
        lines.append(f"  contract: x = (pixels * {pp['scale']:g} - mean) / std, mean={pp['mean']} std={pp['std']}")
        lines.append(f"  preprocess: {pp['height']}x{pp['width']} {channels} channel(s) {kind} {pp['interpolation']} "
                     f"{pp['layout']}")
        if pp.get("in_graph"):
            lines.append(f"  in the graph: {', '.join(pp['in_graph'])} (the model rescales raw pixels itself)")
        lines.append(f"  output head: {HEAD_TEXT.get(m.get('output_kind'), m.get('output_kind'))}")
        lines.append(f"  source sha256: {(m.get('source_sha256') or '?')[:16]}  versions: "
                     + ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items()))
    elif any(n.startswith("metadata unreadable") for n in r.get("notes", [])):
        lines.append("metadata: embedded but damaged (see the note below); re-convert the model")
    else:
        lines.append("metadata: none embedded (a model made outside edgeproof; the runtime infers size/layout)")
    for rt in r.get("runtimes", []):
        lines.append(f"runtime {rt['runtime']}: {rt['status']}" + (f" — {rt['detail']}" if rt["detail"] else ""))
    lines += [f"note: {n}" for n in r.get("notes", [])]
    print("\n".join(printable(line) for line in lines))  # labels, names and paths come from the file
    if bad_meta:
        from edgeproof.cli.console import error_line

        error_line(bad_meta.split(": ", 2)[-1])
        return 2
    return 0
