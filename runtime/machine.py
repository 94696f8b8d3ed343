"""Describe the machine a benchmark ran on: CPU, SIMD flags, memory, OS, Python and runtime versions.

Reads /proc files and package metadata only (no runtime is imported), so it is cheap and never
pulls TensorFlow in.
"""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata as md
from pathlib import Path

# SIMD / matrix features that change inference speed (x86 and ARM spellings from /proc/cpuinfo).
INTERESTING_FLAGS = (
    "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
    "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16",
    "neon", "asimd", "asimdhp", "asimddp", "fphp", "sve", "sve2", "i8mm", "bf16",
)

RUNTIME_PACKAGES = ("numpy", "ai-edge-litert", "tflite-runtime", "onnxruntime", "onnxruntime-gpu",
                    "opencv-python-headless", "opencv-python", "openvino", "tensorflow", "tensorflow-cpu",
                    "keras", "matplotlib")


ARM_IMPLEMENTERS = {"0x41": "ARM", "0x51": "Qualcomm", "0x61": "Apple", "0x4e": "NVIDIA"}


def parse_cpuinfo(text: str) -> dict:
    """CPU vendor, model, flags (all, and the SIMD ones) and logical CPU count from /proc/cpuinfo (x86 or ARM)."""
    model = vendor = arm_part = None
    flags: list[str] = []
    processors = 0
    for line in text.splitlines():
        if ":" not in line:
            continue
        key, _, value = line.partition(":")
        key, value = key.strip().lower(), value.strip()
        if key == "processor":
            processors += 1
        elif key in ("model name", "hardware", "model", "cpu model") and not model and value:
            if not value.isdigit():  # x86 "model : 1" is a number, not a name
                model = value
        elif key == "vendor_id" and vendor is None:
            vendor = value
        elif key == "cpu implementer" and vendor is None:
            vendor = ARM_IMPLEMENTERS.get(value.lower(), value)
        elif key in ("flags", "features") and not flags:
            flags = value.split()
        elif key == "cpu part" and arm_part is None:
            arm_part = value
    if model is None and arm_part is not None:
        model = f"ARM CPU part {arm_part}"
    return {
        "cpu_model": model,
        "vendor": vendor,
        "flags": flags,
        "logical_cpus_listed": processors or None,
        "simd": [f for f in INTERESTING_FLAGS if f in set(flags)],
    }


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return None


def _meminfo_total_mib(text: str | None) -> float | None:
    for line in (text or "").splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 1024, 1)
    return None


def package_versions(names: tuple[str, ...] = RUNTIME_PACKAGES) -> dict[str, str]:
    found = {}
    for name in names:
        try:
            found[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    return found


def describe() -> dict:
    """Everything a reader needs to judge a benchmark figure; safe on any OS."""
    cpu = parse_cpuinfo(_read("/proc/cpuinfo") or "")
    if not cpu["cpu_model"]:
        cpu["cpu_model"] = platform.processor() or platform.machine() or None
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        load = None
    import edgeproof

    return {
        "cpu_model": cpu["cpu_model"],
        "arch": platform.machine(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable,
        "simd": cpu["simd"],
        "mem_total_mib": _meminfo_total_mib(_read("/proc/meminfo")),
        "load_avg_1_5_15": load,
        "os": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "python_executable": sys.executable,
        "edgeproof": edgeproof.__version__,
        "packages": package_versions(),
    }


def one_line(m: dict) -> str:
    """'AMD EPYC, x86_64, 2 CPUs (avx2 avx512f ...), 7.8 GiB, Linux-..., CPython 3.11.9'."""
    mem = f"{m['mem_total_mib'] / 1024:.1f} GiB RAM" if m.get("mem_total_mib") else "RAM unknown"
    simd = " ".join(m.get("simd") or []) or "no SIMD flags found"
    return (f"{m.get('cpu_model') or 'unknown CPU'}, {m.get('arch')}, {m.get('usable_cpus')} usable CPUs "
            f"({simd}), {mem}, {m.get('os')}, {m.get('python')}")
