"""`edgeproof run MODEL --source S`: classify images, folders, videos, cameras and streams, TF-free.

Kept light for one-shot use: no rich, no onnxruntime unless the model needs it; results are
plain aligned rows on stdout (or JSON lines with --json), the summary goes to stderr.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from edgeproof.cli.contract_flags import add_contract_flags
from edgeproof.cli.trust_flag import add_trust_flag
from edgeproof.errors import EdgeproofError, UsageError
from edgeproof.formats import BACKENDS
from edgeproof.text import printable

if TYPE_CHECKING:  # pragma: no cover
    from edgeproof.runtime.pipeline import Summary

NAME_W = 40
SKIP_LINES = 10  # skipped inputs listed by name in the text summary (--json lists up to 100)
EXIT_SKIPPED = 3
DEFAULT_INFER_TIMEOUT = 60.0
EXIT_SOURCE_LOST = 4
EXIT_CODES = (
    "exit codes:\n"
    "  0    every input was processed\n"
    "  3    the run finished but some inputs were skipped (unreadable, truncated, not an image, too many\n"
    "       pixels, a video that cannot be opened, ...): listed in the summary with the reason\n"
    "  4    a camera or stream stopped delivering frames mid-run and did not come back after the retries\n"
    "       (the results before it are printed; a service manager can restart on it)\n"
    "  2    bad input or usage (model, source, flags), or nothing at all could be processed\n"
    "  130  interrupted (Ctrl-C); the summary of what ran is still printed\n"
    "  143  terminated (SIGTERM: systemd, docker stop, Kubernetes): stopped as on Ctrl-C, summary printed,\n"
    "       camera released, --save video finalized\n"
    "  Live frames dropped because inference was slower than the camera are reported, not an error.\n"
    "\n"
    "Images are checked before decoding; one whose header declares more than EDGEPROOF_MAX_IMAGE_PIXELS\n"
    "(default 100M) pixels is skipped (--max-image-pixels overrides it for one run).")


class _IntermixedParser(argparse.ArgumentParser):
    """Options may sit between MODEL and SOURCE (`run m.tflite --backend opencv img.png`).

    Plain argparse binds both positionals at the first positional run, so a SOURCE after an option
    was rejected as 'unrecognized'; intermixed parsing reads the options first, then the positionals.
    """

    _inner = False
    _plain = False

    def parse_known_args(self, args=None, namespace=None):
        if self._inner:
            return super().parse_known_args(args, namespace)
        self._inner = True
        try:
            if namespace is None:
                # Most command lines put MODEL and SOURCE first: plain parsing takes those as they are, without
                # the usage text that intermixed parsing formats before it starts (2 % of a one-shot run's
                # instructions). Anything else (leftovers, an error) is parsed again intermixed, which reports.
                self._plain = True
                try:
                    ns, extras = super().parse_known_args(args, None)
                    if not extras:
                        return ns, extras
                except _PlainFailed:
                    pass
                finally:
                    self._plain = False
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inner = False

    def error(self, message):
        if self._plain:
            raise _PlainFailed
        super().error(message)


class _PlainFailed(Exception):
    """Plain parsing could not take the command line: the intermixed parse decides and reports."""


def register(sub: argparse._SubParsersAction) -> None:
    parser_class = sub._parser_class
    sub._parser_class = type("RunParser", (_IntermixedParser, parser_class), {})
    try:
        _register(sub)
    finally:
        sub._parser_class = parser_class


def _register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run", help="run a .tflite/.onnx model on images, folders, videos, cameras or streams (no TensorFlow)",
        description="Classify inputs with a converted model using the lightweight runtime (no TensorFlow).\n"
                    "SOURCE: an image, a folder (recursive), a glob ('imgs/**/*.jpg'), a text file listing\n"
                    "paths, a video file, a camera index (0), a device path (/dev/video0), an RTSP/HTTP\n"
                    "stream URL, or 'picam' (Raspberry Pi camera, needs picamera2).",
        epilog="examples:\n  edgeproof run model.tflite-int8.tflite photo.jpg\n"
               "  edgeproof run model.onnx-fp32.onnx --source 0 --save out/\n"
               "  edgeproof run mobilenet.tflite --source imgs/ --mean 127.5 --std 127.5 --labels labels.txt --json\n"
               "\n" + EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="the .tflite or .onnx file")
    p.add_argument("source", nargs="?", help="what to classify (same as --source)")
    p.add_argument("--source", dest="source_opt", metavar="S", help="what to classify (see above)")
    p.add_argument("--backend", choices=list(BACKENDS), metavar="BACKEND",
                   help=f"runtime to use: {', '.join(BACKENDS)} (default: from the file type/format)")
    p.add_argument("--threads", type=int, metavar="N", help="CPU threads for the runtime")
    p.add_argument("--device", metavar="PROFILE", help="device profile (see 'edgeproof devices'): backend, delegates, "
                                                    "execution providers, threads")
    p.add_argument("--delegate", action="append", metavar="LIB",
                   help="TFLite delegate library to load, e.g. libedgetpu.so.1 (repeatable; overrides --device's)")
    p.add_argument("--provider", action="append", metavar="EP",
                   help="ONNX Runtime execution provider, in order, e.g. CUDAExecutionProvider (repeatable), or the "
                        "OpenVINO device (CPU/GPU/NPU) with --backend openvino")
    p.add_argument("--no-verify", action="store_true",
                   help="load the model even if it does not match the sha256 in the manifest.json beside it")
    add_trust_flag(p)
    p.add_argument("--max-image-pixels", metavar="N",
                   help="skip images whose header declares more than N pixels, e.g. 100M (default: "
                        "$EDGEPROOF_MAX_IMAGE_PIXELS or 100M)")
    p.add_argument("--allow-fallback", action="store_true",
                   help="if a delegate/execution provider fails, warn loudly and run on the CPU instead of failing")
    p.add_argument("--infer-timeout", type=float, default=DEFAULT_INFER_TIMEOUT, metavar="S",
                   help="end the run with an error (exit 2) when one inference call takes longer than S seconds: a "
                   f"damaged or hostile model can loop forever (default {DEFAULT_INFER_TIMEOUT:g}; 0 = no limit)")
    p.add_argument("--top-k", type=int, default=5, metavar="K", help="labels to show per input (default 5)")
    p.add_argument("--batch", type=int, default=1, metavar="N", help="images per inference call (default 1)")
    p.add_argument("--limit", type=int, metavar="N", help="stop after N inputs")
    p.add_argument("--json", action="store_true", help="one JSON object per line on stdout (last line: summary)")
    p.add_argument("--save", metavar="DIR", help="write annotated images (or annotated.mp4 for video/camera) to DIR")
    p.add_argument("--show", action="store_true", help="show annotated frames in a window (needs a display)")
    p.add_argument("--target", metavar="NAME", help="run the whole runtime (decode, preprocess, infer) in an emulated "
                   "target's aarch64 userland, e.g. rpi5 (see 'edgeproof targets'); same output as here")
    from edgeproof.cli.run_ray import add_engine_flags

    add_engine_flags(p)
    add_contract_flags(p, "preprocessing overrides (for models without edgeproof metadata)")
    p.set_defaults(func=run)


def pixel_limit(max_image_pixels: str | None) -> int:
    """--max-image-pixels (else EDGEPROOF_MAX_IMAGE_PIXELS, else 100M) as a number, passed to the source, the
    pipeline or the server; a bad value is one clear error now, not one per image. OpenCV's own backstop is
    set to it when cv2 is not loaded yet (the CLI owns its process; the library never sets it per run)."""
    from edgeproof.runtime import image_check

    limit = None
    if max_image_pixels is not None:
        try:
            limit = image_check.parse_pixels(max_image_pixels)
        except ValueError:
            raise UsageError(f"--max-image-pixels '{max_image_pixels}' is not a pixel count; give e.g. "
                             "100000000 or 100M") from None
    limit = image_check.max_pixels(limit)
    if max_image_pixels is not None:
        image_check.set_opencv_backstop(limit)
    return limit


def _short(name: str, width: int = NAME_W) -> str:
    return name if len(name) <= width else "…" + name[-(width - 1):]


def run(args: argparse.Namespace, capture_factory=None, picam_factory=None) -> int:
    from edgeproof.runtime.stop_signals import terminate_as_interrupt

    try:
        with terminate_as_interrupt():  # SIGTERM stops the run as Ctrl-C does (exit 143)
            return _run(args, capture_factory, picam_factory)
    except BrokenPipeError:  # `edgeproof run ... | head`: the reader left; stop quietly
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _run(args: argparse.Namespace, capture_factory=None, picam_factory=None) -> int:
    source_spec = args.source_opt if args.source_opt is not None else args.source
    if args.source_opt is not None and args.source is not None:
        raise UsageError(f"two sources given ('{args.source}' and --source '{args.source_opt}'); give one")
    if source_spec is not None and not source_spec.strip():  # "" would mean the working directory, recursively
        raise UsageError("the source is an empty string; give an image, folder ('.' for the current one), glob, "
                         "list file, video, camera index, URL or 'picam'")
    if source_spec is None:
        raise UsageError("no source given; pass an image, folder, glob, list file, video, camera index, URL or "
                         "'picam' (e.g. edgeproof run MODEL photo.jpg)")
    from edgeproof.runtime.session import RunOptions

    options = RunOptions(batch=args.batch, top_k=args.top_k, limit=args.limit, infer_timeout=args.infer_timeout)
    max_pixels = pixel_limit(args.max_image_pixels)
    from edgeproof.cli.run_ray import check_engine_flags

    check_engine_flags(args)
    if args.target:
        from edgeproof.cli.run_target import run_on_target

        return run_on_target(args)
    return _run_checked(args, source_spec, options, capture_factory, picam_factory, max_pixels)


def _run_checked(args: argparse.Namespace, source_spec: str, options, capture_factory, picam_factory,
                 max_pixels: int | None = None) -> int:
    from edgeproof.cli.load_flags import load_spec_from
    from edgeproof.runtime.session import run_session
    from edgeproof.runtime.sources import open_source

    sinks: list = []
    if args.show:
        from edgeproof.runtime.annotate import Viewer

        sinks.append(Viewer())
    # Every load option is checked here, once (the LoadSpec), before the source is opened.
    spec = load_spec_from(args)
    # The source first: a missing camera is reported before any model loading. --save into the input folder:
    # an earlier --save's outputs there are not inputs.
    exclude = None
    if args.save:
        from edgeproof.runtime.annotate import saved_output_filter

        exclude = saved_output_filter(args.save, source_spec)
    try:
        source = open_source(source_spec, capture_factory=capture_factory, picam_factory=picam_factory,
                             max_pixels=max_pixels, exclude=exclude)
    except UsageError as exc:
        if not spec.path.exists():  # both are missing: say so at once, not one per try
            raise UsageError(f"model file '{spec.path}' not found, and {exc}; give an existing .tflite or .onnx "
                             "model and an existing source") from None
        raise
    engine = None
    if args.engine == "ray":
        from edgeproof.scaleout.ray_run import RayEngine, file_inputs

        source = file_inputs(source)
        engine = RayEngine(workers=args.workers, address=args.address)
    printer = _Printer(args)
    saver = None
    try:
        if args.save:
            from edgeproof.runtime.annotate import Saver

            saver = Saver(args.save, video=source.is_stream, fps=source.fps)
            if source.excluded:
                from edgeproof.cli.console import warn

                warn(f"left out {len(source.excluded)} annotated output(s) of an earlier --save in '{saver.dir}' "
                     f"(e.g. {source.excluded[0].name}); they are not inputs")
    except BaseException:
        source.close()
        raise
    sinks = [printer, *([saver] if saver is not None else []), *sinks]
    summary = run_session(spec, source, sinks, options=options, engine=engine, on_timeout=printer.on_timeout)
    _report(args, summary, saver)
    return exit_code(summary)


class _Printer:
    """The rows on stdout (aligned text, or JSON lines with --json) and the model line on stderr."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.json, self.top_k, self.out = args.json, args.top_k, sys.stdout
        self.model = None

    def start(self, model) -> None:
        self.model = model
        if not self.json:
            where = (model.placement or {}).get("where", "?")
            print(printable(f"model: {model.path.name} ({model.format or 'no edgeproof metadata'}; "
                            f"{model.backend_name}; {where})"), file=sys.stderr)
            self.out.write(f"{'input':<{NAME_W}}  {'top-1':<16} {'score':>6}   top-{self.top_k}\n")

    def add(self, r) -> None:
        if self.json:
            import json

            self.out.write(json.dumps({"index": r.index, "input": r.name,
                                       "top_k": [{"label": lb, "score": round(s, 6)} for lb, s in r.topk],
                                       "latency_ms": round(r.latency_ms, 4)}) + "\n")
        else:
            label, score = r.topk[0]  # labels and names come from files: control characters shown escaped
            rest = "  ".join(f"{printable(lb)} {s:.3f}" for lb, s in r.topk[1:])
            self.out.write(f"{printable(_short(r.name)):<{NAME_W}}  {printable(label):<16} {score:6.3f}   {rest}\n")
        self.out.flush()

    def on_timeout(self, what: str, limit: float) -> None:
        """--infer-timeout: a native call cannot be interrupted, so the process ends (exit 2) after one line."""
        import os

        from edgeproof.cli.console import error_line

        m = self.model
        sys.stdout.flush()
        error_line(f"{m.path.name}: inference on {what} did not finish within {limit:g} s ({m.backend_name}); "
                   "the model may loop forever (damaged or hostile file) or the accelerator hung; re-convert it, or "
                   "raise --infer-timeout for a model that is really this slow")
        sys.stderr.flush()
        os._exit(2)  # the inference thread is stuck in native code: nothing else can stop it


def exit_code(summary: Summary) -> int:
    """130 interrupted (143 by SIGTERM); 2 (an error line) when nothing was processed; 4 when a live source was lost mid-run;
    3 when some inputs were skipped; else 0."""
    if summary.interrupted:
        from edgeproof.runtime.stop_signals import EXIT_TERMINATED

        return EXIT_TERMINATED if summary.terminated else 130
    if summary.count == 0:
        if summary.skipped_total:
            name, why = summary.skipped[0]
            raise EdgeproofError(f"none of the {summary.skipped_total} input(s) could be read (first: {name}: "
                                 f"{why}); see the reasons in the summary above")
        why = f" ({summary.stopped})" if summary.stopped else ""
        raise EdgeproofError(f"nothing was processed from '{summary.source}'{why}")
    if summary.source_lost:
        return EXIT_SOURCE_LOST
    return EXIT_SKIPPED if summary.skipped_total else 0


def _report(args, summary: Summary, saver) -> None:
    d = summary.to_dict()
    engine = summary.engine
    if args.json:
        import json

        if saver is not None:
            d["saved"] = [str(p) for p in saver.written]
        sys.stdout.write(json.dumps({"summary": d}, default=str) + "\n")
        sys.stdout.flush()
        return
    p50 = f"{d['p50_ms']:.2f} ms" if d["p50_ms"] is not None else "-"
    pre = f"{d['p50_preprocess_ms']:.2f} ms" if d["p50_preprocess_ms"] is not None else "-"
    lines = [(f"summary: {d['count']} input(s) in {d['seconds']:.3f} s ({d['fps']:.1f} FPS); "
              f"p50 inference {p50}/image, p50 decode+preprocess {pre}")]
    from edgeproof.runtime.sources import StopReason

    if summary.stopped and summary.stopped != StopReason.END_OF_VIDEO:
        lines.append(f"stopped: {summary.stopped}")
    if summary.skipped_total:
        reasons = ", ".join(f"{why}: {n}" for why, n in d["skipped_by_reason"].items())
        lines.append(f"skipped {summary.skipped_total} (by reason: {reasons})")
        lines += [f"  {name}: {why}" for name, why in summary.skipped[:SKIP_LINES]]
        if summary.skipped_total > SKIP_LINES:
            lines.append(f"  ... and {summary.skipped_total - SKIP_LINES} more (--json lists the first "
                         f"{len(summary.skipped)})")
    if summary.dropped:
        lines.append(f"dropped {summary.dropped} live frame(s): inference was slower than the source (not an error)")
    if engine is not None:
        from edgeproof.cli.run_ray import engine_lines

        lines += engine_lines(engine)
    if saver is not None and saver.written:
        what = saver.video_path if saver.video else f"{len(saver.written)} annotated image(s) in {saver.dir}"
        lines.append(f"saved: {what}")
    print("\n".join(printable(line) for line in lines), file=sys.stderr)
