"""Edge TPU: the full-int8 uint8-I/O TFLite model, compiled by `edgetpu_compiler` when it is on PATH.

The compiler must see the bare flatbuffer, so edgeproof's appended metadata is stripped before
compiling and re-appended after. Without the compiler the artifact is the compiler-ready model
(it runs on CPU as a plain int8 model) and one line says how to compile it later:

    python -m edgeproof.convert.edgetpu OUT/model.edgetpu.tflite
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from edgeproof.errors import CheckFailed, UsageError

COMPILER = "edgetpu_compiler"
COMPILE_HINT = ("edgetpu_compiler is not on PATH: this is the compiler-ready (uncompiled, CPU-runnable) model; "
                "compile it on Linux x86-64 with the Coral compiler (apt-get install edgetpu-compiler) via "
                "'python -m edgeproof.convert.edgetpu {path}' (strips and re-appends edgeproof metadata)")


def compiler_path() -> str | None:
    return shutil.which(COMPILER)


def parse_summary(text: str) -> dict[str, Any]:
    """Op placement from `edgetpu_compiler -s` output: Edge TPU / CPU operation counts."""
    def grab(pattern: str) -> int | None:
        m = re.search(pattern, text, flags=re.IGNORECASE)
        return int(m.group(1)) if m else None

    tpu = grab(r"operations that will run on Edge TPU:\s*(\d+)")
    cpu = grab(r"operations that will run on CPU:\s*(\d+)")
    out: dict[str, Any] = {"accelerator": tpu, "cpu": cpu}
    if tpu is not None and cpu is not None:
        out["total"] = tpu + cpu
    return out


def compile_tflite(bare: bytes, timeout: float = 600.0) -> tuple[bytes, str]:
    """Run edgetpu_compiler -s on bare flatbuffer bytes -> (compiled bytes, compiler stdout)."""
    exe = compiler_path()
    if not exe:
        raise UsageError(f"{COMPILER} is not on PATH; install the Coral compiler (apt-get install edgetpu-compiler)")
    from edgeproof.atomic import scratch_dir

    with scratch_dir("edgetpu") as folder:
        tmp = str(folder)
        src = folder / "model.tflite"
        src.write_bytes(bare)
        proc = subprocess.run([exe, "-s", "-o", tmp, str(src)], capture_output=True, text=True, timeout=timeout,
                              check=False)
        out = Path(tmp) / "model_edgetpu.tflite"
        if proc.returncode != 0 or not out.is_file():
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-5:]
            raise CheckFailed(f"edgetpu: {COMPILER} failed (exit {proc.returncode}): {' | '.join(tail)}")
        return out.read_bytes(), proc.stdout


def make_edgetpu(model: Any, calib: np.ndarray, fmt_name: str = "edgetpu") -> tuple[bytes, bytes, dict[str, Any]]:
    """(compiler-ready bytes, final bytes, info): final is compiled when the compiler is present."""
    from edgeproof.convert.tflite import to_tflite

    ready = to_tflite(model, fmt_name, calib=calib, io_type="uint8")
    if not compiler_path():
        return ready, ready, {"compiled": False}
    compiled, log = compile_tflite(ready)
    return ready, compiled, {"compiled": True, "compiler": compiler_path(), "placement": parse_summary(log),
                             "summary": log.strip()[-4000:]}


def compile_artifact(path: str | Path) -> dict[str, Any]:
    """Compile an existing (uncompiled) model.edgetpu.tflite in place, keeping its metadata and updating
    its manifest.json entry (in the kill-safe order of convert.manifest: the runtime checks that sha256)."""
    import hashlib

    from edgeproof.atomic import write_bytes
    from edgeproof.convert.manifest import load_manifest
    from edgeproof.runtime.metadata import read_tflite_metadata, strip_tflite_metadata, tflite_with_metadata

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"'{path}' does not exist; give the model.edgetpu.tflite written by 'edgeproof convert'")
    raw = path.read_bytes()
    meta = read_tflite_metadata(path)
    compiled, log = compile_tflite(strip_tflite_metadata(raw))
    info = {"compiled": True, "compiler": compiler_path(), "placement": parse_summary(log),
            "summary": log.strip()[-4000:]}
    if meta is not None:
        meta.extra["edgetpu"] = info
        data = tflite_with_metadata(compiled, meta)
    else:
        data = compiled
    manifest = load_manifest(path.parent)
    entry = manifest.entry_for(path)
    sha = hashlib.sha256(data).hexdigest()
    if entry is not None:
        manifest.mark_pending(entry.format, sha)
    write_bytes(path, data)
    if entry is not None:
        entry.status, entry.error, entry.sha256, entry.bytes = "ok", None, sha, len(data)
        entry.notes = [n for n in entry.notes if COMPILER not in n] + ["compiled in place by edgetpu_compiler"]
        manifest.write()
    return info


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print("usage: python -m edgeproof.convert.edgetpu MODEL.edgetpu.tflite\n"
              "Compile an edgeproof Edge TPU artifact in place with edgetpu_compiler, keeping its metadata.")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    try:
        info = compile_artifact(argv[0])
    except (UsageError, CheckFailed) as exc:
        print(f"edgeproof: error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(f"compiled {argv[0]}: {info['placement']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
