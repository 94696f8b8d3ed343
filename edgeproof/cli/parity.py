"""`edgeproof parity`: every artifact × backend against the Keras model; exit 1 when any fails."""

from __future__ import annotations

import argparse

from edgeproof.cli.trust_flag import add_trust_flag

EPILOG = """\
tolerances (edgeproof/formats.py, edgeproof.formats; --max-abs/--min-agreement/--max-delta-acc/--min-snr replace
that field for EVERY format):
{tolerances}
accuracy: one-sided (a gain never fails); a loss over the limit fails only when the exact paired test on the
images that changed (McNemar, binomial on lost vs gained) gives p < {alpha:g}: two lost near-ties of 192 images
are chance (p = 0.25), 14 lost are not (p = 6e-05). The p-value and the {conf:.0%} interval are in every report.
near-ties: a flip where Keras' own top-1 - top-2 margin is below the artifact's measured margin noise (p95 over
the images, capped by the value above) counts as agreement for the top-1 limit, never for |Δacc|;
--strict-ties counts every flip. Flipped images are listed in parity.md/.json and pictured in contact_sheet.png.
On N images an agreement limit means a count: 99 % of 60 images is 60/60.

backends: every installed backend of the file's family is tried. A backend listed for the format
that cannot load/run it is a failure (status 'error'); an unlisted backend that cannot load it is
'unsupported' (not a failure); any backend that runs the file is judged by the same tolerance;
a backend that is not installed is 'skipped'.

exit status: 0 all pass, 1 any artifact fails (every failure is listed), 2 bad input.
"""


def _fraction(text: str) -> float:
    v = float(text.rstrip("%")) / (100.0 if text.endswith("%") else 1.0)
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"'{text}' is not an agreement fraction; give 0..1 or 0..100%")
    return v


def _number(text: str) -> float:
    import math

    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not math.isfinite(v):  # a NaN or inf limit fails (or passes) every artifact whatever it computes
        raise argparse.ArgumentTypeError(f"'{text}' is not a finite number; give a limit like 0.05")
    return v


def _nonneg(text: str) -> float:
    v = _number(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"'{text}' must be >= 0")
    return v


def _snr_db(text: str) -> float:
    v = _number(text)
    if v < 0:  # below 0 dB the noise is stronger than the signal: a floor there passes any artifact
        raise argparse.ArgumentTypeError(f"'{text}' dB is below 0; an SNR floor is 0 dB or more (int8 formats use "
                                         "12): give e.g. --min-snr 12")
    return v


def _tolerance_lines() -> str:
    from edgeproof.formats import FORMATS

    out = []
    for f in FORMATS.values():
        t = f.tolerance
        parts = ([f"max|Δ| <= {t.max_abs:g}"] if t.max_abs is not None else []) + \
            [f"top-1 agreement >= {t.min_top1_agreement * 100:g} %"] + \
            ([f"accuracy loss <= {t.max_delta_acc_pp:g} pp"] if t.max_delta_acc_pp is not None else []) + \
            ([f"SNR >= {t.min_snr_db:g} dB"] if t.min_snr_db is not None else []) + \
            ([f"near-tie margin <= {t.near_tie_max_margin:g}"] if t.near_tie_max_margin is not None else [])
        out.append(f"  {f.name:15s} {', '.join(parts)}")
    return "\n".join(out)


def _epilog() -> str:
    from edgeproof.parity.significance import ALPHA, CONFIDENCE

    return EPILOG.format(tolerances=_tolerance_lines(), alpha=ALPHA, conf=CONFIDENCE)


def register(sub: argparse._SubParsersAction) -> None:
    from edgeproof.formats import BACKENDS

    p = sub.add_parser("parity", help="prove every artifact matches the Keras model (CI gate)",
                       description="Run the Keras model and every artifact (every backend that can load it) on "
                       "the same held-out images; report tensor and task metrics, preprocessing drift, "
                       "quantization triage; exit 1 when any artifact is outside its tolerance.",
                       epilog=_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", metavar="MODEL", help="run folder from 'edgeproof train', or the .keras / .h5 / "
                   "SavedModel the artifacts were converted from (labels and contract are read from them)")
    p.add_argument("--artifacts", metavar="DIR", help="artifacts folder (default RUN_DIR/artifacts, or 'artifacts' "
                   "beside a bare model: where 'edgeproof convert' writes)")
    p.add_argument("--data", metavar="DIR", help="image folder to use instead of the run's split "
                   "(DIR/<split>/<class>/*, DIR/<class>/* or unlabelled DIR/*)")
    p.add_argument("--split", default="test", help="which split of the run (default test)")
    p.add_argument("--backends", metavar="LIST", help=f"comma-separated subset of: {', '.join(BACKENDS)} "
                   "(default all installed, except the browser ones, litertjs and ort-web, which run in headless "
                   "Chromium only when named)")
    p.add_argument("--max-abs", type=_nonneg, metavar="X", help="override max |Δ| of probabilities, all formats")
    p.add_argument("--min-agreement", type=_fraction, metavar="X",
                   help="override minimum top-1 agreement (0..1 or NN%%), all formats")
    p.add_argument("--max-delta-acc", type=_nonneg, metavar="PP",
                   help="override the largest accuracy loss in pp (one-sided, judged by the paired test), all formats")
    p.add_argument("--min-snr", type=_snr_db, metavar="DB", help="override the SNR floor of the probabilities in dB, "
                   "all formats (int8 formats: 12)")
    p.add_argument("--strict-ties", action="store_true",
                   help="every image whose top-1 changed counts against the agreement limit, near-ties too "
                        "(default: a flip where Keras' own margin is below the artifact's measured noise, capped "
                        "by the format's near_tie_max_margin, counts as agreement; Δaccuracy always counts all)")
    p.add_argument("--triage", action=argparse.BooleanOptionalAction, default=True,
                   help="per-layer quantization error for failing int8 artifacts (default on)")
    p.add_argument("--fix", action="store_true", help="with triage: re-export each failing int8 artifact with variants "
                   "in order of cost (calibration; the lowest-SNR tensors int16 then float; int16x8; the named layers "
                   "float) into REPORT_DIR/fixed, stopping at the first that passes; before/after side by side")
    p.add_argument("--promote", action="store_true",
                   help="with --fix: put the first passing fix in place of the artifact (atomically, recipe recorded in "
                        "manifest.json, the replaced file kept beside it as <name>.replaced-<time>); the gate then "
                        "judges the promoted file")
    p.add_argument("--prefer", choices=("balanced", "fidelity", "speed"), default=None,
                   help="with --fix: what a passing fix more than 2x slower than the artifact it would replace (p50 "
                        "measured side by side) may do: balanced (default) tries the next variant and promotes the "
                        "slow one only when nothing faster passes, saying so; fidelity promotes the first that passes; "
                        "speed never promotes it. Turned-down fixes are listed with why")
    p.add_argument("--no-e2e", action="store_true", help="skip the TF-vs-OpenCV preprocessing drift check")
    p.add_argument("-o", "--out", metavar="REPORT_DIR", help="report folder (default RUN_DIR/parity)")
    p.add_argument("--timeout", type=float, default=600.0, metavar="S",
                   help="seconds allowed per artifact x backend (load + inference + latency, default 600): one that "
                        "never returns (an endless ONNX Loop, a hung delegate) is a failed row and parity goes on")
    p.add_argument("--json", action="store_true", help="print parity.json's content on stdout")
    p.add_argument("--wide", action="store_true", help="every column in the terminal table (default: the table fits "
                   "the terminal, 120 columns when piped, dropping the least needed columns first; parity.md and "
                   "parity.json always have every column)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--no-verify", action="store_true",
                   help="judge artifacts even when they differ from the sha256 in manifest.json (default: such an "
                        "artifact is a failed 'integrity' row)")
    add_trust_flag(p)
    p.add_argument("--target", metavar="NAME",
                   help="also run every artifact in an emulated target (e.g. rpi5; see 'edgeproof targets'): rows "
                        "'backend@NAME' on the host's preprocessed tensors, judged by the same gate, with max|Δ| vs "
                        "the host row (kernel differences only); no latency (emulated)")
    from edgeproof.cli.run_ray import add_engine_flags

    add_engine_flags(p, "decoding and inference over the images (Keras and every artifact)")
    p.set_defaults(func=run)


def _backends(text: str | None) -> list[str] | None:
    if text is None:
        return None
    from edgeproof.errors import UsageError
    from edgeproof.formats import BACKENDS, get_backend

    names = [b.strip() for b in text.split(",") if b.strip()]
    if not names:  # an empty list would judge no artifact at all, and pass
        raise UsageError(f"--backends {text!r} names no backend; give a comma-separated list of: "
                         f"{', '.join(BACKENDS)} (or leave --backends out for every installed one)")
    return [get_backend(b).name for b in names]


def _summary(r) -> str:
    """agreement, accuracy, size, latency of one row (before/after lines of --fix), and why a fix was turned down."""
    c = r.comparison
    if c is None:
        return r.reason
    acc = "" if c.task.accuracy is None else f", acc {c.task.accuracy:.1%} (Δ {c.task.delta_acc_pp:+.2f} pp)"
    lat = "" if r.latency_p50_ms is None else f", p50 {r.latency_p50_ms:.3f} ms"
    sbs = getattr(r, "side_by_side_ms", None)
    if sbs:
        lat = f", p50 {sbs['after']:.3g} ms vs {sbs['before']:.3g} ms before ({r.latency_ratio:.1f}x, side by side)"
    real = getattr(r, "real_format", None)
    kind = f", a {real} file" if real and real != r.format else (", no format in the table" if real == "" else "")
    why = f"; REJECTED: {r.rejected}" if getattr(r, "rejected", None) else ""
    return (f"agreement {c.task.top1_agree_count}/{c.task.n}{acc}, SNR {c.tensor.snr_db:.1f} dB, "
            f"{r.size_bytes / 1024:.1f} KiB{lat}{kind}{why}")


def _run(args: argparse.Namespace):
    from edgeproof.cli.console import progress_bars
    from edgeproof.parity import run_parity

    return run_parity(args.run_dir, artifacts_dir=args.artifacts, data_dir=args.data, split=args.split,
                      backends=_backends(args.backends),
                      tol_flags={"max_abs": args.max_abs, "min_agreement": args.min_agreement,
                                 "max_delta_acc": args.max_delta_acc, "min_snr": args.min_snr, "strict_ties": args.strict_ties or None},
                      triage=args.triage, fix=args.fix, promote=args.promote, prefer=args.prefer or "balanced", out_dir=args.out,
                      e2e=not args.no_e2e,
                      progress=progress_bars(not args.no_progress and not args.json),
                      verify=not args.no_verify, trust_model=args.trust_model,
                      engine=args.engine, address=args.address, workers=args.workers, timeout_s=args.timeout,
                      target=args.target)


def library_log(run_dir: str, out: str | None):
    """REPORT_DIR/library-output.log (None, i.e. nowhere, when the run folder does not exist: no folder is made)."""
    from pathlib import Path

    if out is None and not Path(run_dir).is_dir():
        return None
    return (Path(out) if out else Path(run_dir) / "parity") / LIBRARY_LOG


LIBRARY_LOG = "library-output.log"


def run(args: argparse.Namespace) -> int:
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from edgeproof.cli.console import info, print_json
    from edgeproof.cli.parity_table import print_table
    from edgeproof.errors import UsageError
    from edgeproof.parity import report as report_mod

    if not 0 < args.timeout < float("inf"):  # also NaN
        raise UsageError(f"--timeout {args.timeout} is not valid; give the seconds allowed per artifact (> 0)")
    if args.wide and args.json:
        raise UsageError("--wide shapes the terminal table, and --json prints every column already; give one of them")
    if args.fix and not args.triage:
        raise UsageError("--fix needs triage; drop --no-triage")
    if args.prefer is not None and not args.fix:
        raise UsageError(f"--prefer {args.prefer} decides which --fix is promoted; give --fix (and --promote) or "
                         "drop --prefer")
    if args.promote and not args.fix:
        raise UsageError("--promote puts a passing --fix in place; give --fix --promote")
    from edgeproof.cli.run_ray import check_engine_flags
    from edgeproof.stderr_filter import library_output_to

    check_engine_flags(args)
    # stdout carries only the table / the JSON, stderr only edgeproof's lines: what TensorFlow, absl, XNNPACK
    # and the converters print (fd 1/2, print, warnings) goes to REPORT_DIR/library-output.log
    with library_output_to(library_log(args.run_dir, args.out)):
        rep = _run(args)
    if args.json:
        print_json(rep.to_dict())
    else:
        print_table(rep, wide=args.wide)
        for line in report_mod.near_tie_lines(rep):
            info(line)
        if rep.e2e:
            info(f"end-to-end: {rep.e2e['verdict']}")
        if rep.e2e and rep.e2e.get("page_preprocessing"):
            from edgeproof.parity.browser_pre import summary

            info(f"in the browser: {summary(rep.e2e['page_preprocessing'])}")
        print_triage(rep)
        info(f"report: {rep.files.get('markdown')}  {rep.files.get('json')}")
    return gate_exit(rep)


def gate_exit(rep) -> int:
    """The gate's exit code: 0 when every row passed, else 1 after one 'parity failed:' line per failure."""
    from edgeproof.cli.console import error_line
    from edgeproof.parity import report as report_mod

    if rep.passed:
        return 0
    for line in report_mod.failure_lines(rep):
        error_line(f"parity failed: {line}")
    return 1


def print_triage(rep) -> None:
    """Triage lines: worst layers, the fixes tried with before/after side by side, what was promoted."""
    from edgeproof.cli.console import info

    for t in rep.triage:
        if t.error:
            info(f"triage {t.artifact}: could not run: {t.error}")
            continue
        info(f"triage {t.artifact}: worst layer(s) {', '.join(le.label() for le in t.worst)}"
             + (f" — {t.worst[0].reason}" if t.worst and t.worst[0].reason else ""))
        before = t.before
        for label, r in ([("before", before)] if before and t.fixes else []) + \
                [(f"fix {getattr(f, 'variant', '')}", f) for f in t.fixes]:
            info(f"  {label:50s} {r.status:5s} {_summary(r)}" + (f" -> {r.path}" if label != "before" else ""))
        for note in t.notes:
            if note.startswith("edgetpu: fully"):
                info(f"  {note}")
    for p in rep.promoted:
        info(promoted_line(p))


def promoted_line(p: dict) -> str:
    """What was promoted, as what format, in place of what, at what speed, and whether it passes now."""
    sbs = p.get("side_by_side_ms")
    speed = f"; p50 {sbs['after']:.3g} ms vs {sbs['before']:.3g} ms for the file it replaces" if sbs else ""
    what = p.get("format") or ""
    instead = f" in place of {p['replaces']} (a {what} file, named as one)" if what and what != p.get("replaces") else ""
    note = f"; {p['note']}" if p.get("note") else ""
    fidelity = f"; agreement {p['agreement']}, SNR {p['snr_db']} dB" if p.get("agreement") else ""
    return (f"  promoted {p['variant']} -> {p['path']}{instead}{fidelity}{speed} (replaced file kept as {p['replaced']}); "
            f"judged again: {'passes' if p['passes'] else 'still fails'}{note}")
