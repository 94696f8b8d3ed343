"""`edgeproof export web ARTIFACT... -o SITE`: a static, offline site that classifies in the browser."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export artifacts for another target (web: a static in-browser site)",
                       description="Export artifacts for another target.")
    targets = p.add_subparsers(dest="target", metavar="TARGET", required=True)
    w = targets.add_parser(
        "web", help="a static offline site: LiteRT.js/onnxruntime-web in WebAssembly, photo or live camera",
        description="Write a self-contained static folder (index.html, the models, their labels and "
                    "preprocessing contract from the embedded metadata, and the WebAssembly runtimes) that "
                    "classifies a chosen photo or live camera frames in the browser, offline (a PWA). The "
                    "runtimes come from the npm registry once (pinned versions, verified sha512) and are cached "
                    "in $EDGEPROOF_CACHE/web; without a connection put 'npm pack' tarballs there or in --npm-cache.")
    w.add_argument("artifacts", nargs="+", metavar="ARTIFACT", help=".tflite/.onnx files made by 'edgeproof convert'")
    w.add_argument("-o", "--out", required=True, metavar="SITE", help="the site folder (new, empty, or an earlier export)")
    w.add_argument("--npm-cache", metavar="DIR", help="a folder of 'npm pack' tarballs to take the runtimes from")
    w.add_argument("--json", action="store_true", help="machine-readable summary")
    w.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from edgeproof.cli.console import info, print_json, warn
    from edgeproof.runtime.web.site import build

    site = build([Path(a) for a in args.artifacts], Path(args.out),
                 npm_cache=Path(args.npm_cache) if args.npm_cache else None, leave_out_unsupported=True)
    if args.json:
        print_json(site.to_dict())
        return 0
    for name, why in site.left_out:
        warn(f"left out {name}: {why}")
    for m in site.models:
        info(f"{m['file']}  ({m['format']}, {m['runtime']} {m['runtime_version']})")
    runtimes = ", ".join(f"{r['name']} {r['version']} ({r['license']})" for r in site.runtimes)
    info(f"site: {site.folder}  ({len(site.files)} files, {site.bytes / 2**20:.1f} MiB; runtimes: {runtimes})")
    info(f"serve it over HTTP(S) (e.g. 'python -m http.server -d {site.folder}' or 'edgeproof serve MODEL --web "
         f"{site.folder}'); it works offline after the first visit")
    return 0
