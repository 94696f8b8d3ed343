"""`edgeproof version`: versions of edgeproof and of every runtime/converter found."""

from __future__ import annotations

import argparse

import edgeproof

PACKAGES = ("numpy", "ai-edge-litert", "tflite-runtime", "onnxruntime", "opencv-python-headless",
            "opencv-python", "openvino", "tensorflow", "tensorflow-cpu", "keras", "tf2onnx", "onnx")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("version", help="print edgeproof's version and those of the runtimes found",
                       description="Print edgeproof's version and the versions of installed runtimes.")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def installed_versions() -> dict[str, str]:
    from edgeproof.runtime.machine import package_versions

    return package_versions(PACKAGES)


def run(args: argparse.Namespace) -> int:
    versions = {"edgeproof": edgeproof.__version__, **installed_versions()}
    if args.json:
        from edgeproof.cli.console import print_json

        print_json(versions)
    else:
        for k, v in versions.items():
            print(f"{k:24s} {v}")
    return 0
