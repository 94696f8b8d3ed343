"""Runs INSIDE the emulated target's Python: `python -m edgeproof.targets.worker JOB.json` or `--probe`.

A job lists (artifact, backend, input .npy, output .npy): each artifact is loaded by edgeproof's runtime with that
backend and run on the host's preprocessed tensors (no decoding here, so host and target differ only in the
conversion's kernels); its probabilities go to the output .npy, and one result per item to the job's result file.
`--probe` prints what the emulated userland reports: the CPU features the kernel (qemu) gives XNNPACK and
onnxruntime, the core /proc/cpuinfo names, the interpreter and the runtime packages.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# Linux arm64 AT_HWCAP / AT_HWCAP2 bits (arch/arm64/include/uapi/asm/hwcap.h), by /proc/cpuinfo's names.
HWCAP = ("fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma lrcpc dcpop "
         "sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs sb paca pacg").split()
HWCAP2 = ("dcpodp sve2 sveaes svepmull svebitperm svesha3 svesm4 flagm2 frint svei8mm svef32mm svef64mm svebf16 "
          "i8mm bf16 dgh rng bti mte").split()
AT_HWCAP, AT_HWCAP2 = 16, 26
# What XNNPACK's hardware config (via cpuinfo's Linux aarch64 detection) turns on from those bits.
XNNPACK_FEATURES = {"asimd": "NEON kernels", "asimdhp": "NEON fp16 arithmetic (F16 kernels)",
                    "asimddp": "NEON dot product (QS8/QU8 NEONDOT kernels)", "i8mm": "int8 matrix multiply (I8MM)",
                    "sve": "SVE", "sve2": "SVE2", "bf16": "BF16"}


def hwcaps() -> list[str]:
    """The CPU features this process was given (AT_HWCAP/AT_HWCAP2 of /proc/self/auxv), by name."""
    import struct

    data = Path("/proc/self/auxv").read_bytes()
    aux = dict(struct.iter_unpack("<QQ", data[: len(data) // 16 * 16]))
    names = [n for i, n in enumerate(HWCAP) if aux.get(AT_HWCAP, 0) >> i & 1]
    return names + [n for i, n in enumerate(HWCAP2) if aux.get(AT_HWCAP2, 0) >> i & 1]


def probe() -> dict:
    import platform
    from importlib.metadata import PackageNotFoundError, version

    feats = hwcaps()
    cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
    part = next((ln.split(":")[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("CPU part")), None)
    model = next((ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("Model")), None)
    versions = {}
    for dist in ("numpy", "ai-edge-litert", "onnxruntime", "opencv-python-headless", "tflite-runtime"):
        try:
            versions[dist] = version(dist)
        except PackageNotFoundError:
            continue
    return {"machine": platform.machine(), "python": platform.python_version(), "libc": "-".join(platform.libc_ver()),
            "hwcaps": feats, "cpu_part": part, "board": model, "packages": versions,
            "xnnpack": [f"{k}: {v}" for k, v in XNNPACK_FEATURES.items() if k in feats]}


def run_job(job: dict) -> list[dict]:
    import numpy as np

    from edgeproof.runtime import load

    results = []
    for item in job["items"]:
        try:
            model = load(item["path"], backend=item["backend"], verify=item.get("verify", True),
                         trust_model=item.get("trust_model", False))
            try:
                probs = model.predict(np.load(item["input"]))
                np.save(item["output"], probs)
                results.append({"ok": True, "format": model.format})
            finally:
                model.close()
        except Exception as exc:  # noqa: BLE001 - each item's failure is its row's, reported to the host
            from edgeproof.errors import IntegrityError

            why = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}" if str(exc) else type(exc).__name__
            results.append({"ok": False, "error": why, "integrity": isinstance(exc, IntegrityError)})
    return results


def main(argv: list[str]) -> int:
    if argv == ["--probe"]:
        print(json.dumps(probe()))
        return 0
    if len(argv) != 1:
        print("usage: python -m edgeproof.targets.worker JOB.json | --probe", file=sys.stderr)
        return 2
    job = json.loads(Path(argv[0]).read_text())
    Path(job["result"]).write_text(json.dumps({"results": run_job(job), "probe": probe()}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
