"""Read the host and name the best device profile, with the reasons.

Gathering (``host_facts``) and deciding (``choose``) are separate so every device path can be
tested here with fake facts: each probe reads from an injectable root folder, module or loader.
"""

from __future__ import annotations

import ctypes
import importlib
import os
import platform
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgeproof.errors import UsageError

EDGETPU_LIBRARY = "libedgetpu.so.1"
# Coral USB Accelerator: 1a6e:089a before its firmware is loaded, 18d1:9302 after.
EDGETPU_USB_IDS = {("1a6e", "089a"), ("18d1", "9302")}
_ARCH_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64", "armv8l": "aarch64",
                 "armv7": "armv7l"}


@dataclass
class HostFacts:
    """What detection knows about a host. Every field can be faked in tests."""

    machine: str  # normalised: x86_64, aarch64, armv7l, ...
    system: str = "Linux"
    model: str | None = None  # /proc/device-tree/model (Raspberry Pi, Jetson, Coral Dev Board)
    cpu_vendor: str | None = None
    cpu_flags: list[str] = field(default_factory=list)  # x86 "flags" or ARM "Features"
    cpu_count: int | None = None
    ort_providers: list[str] | None = None  # None: onnxruntime not installed
    edgetpu_loadable: bool = False
    edgetpu_detail: str = ""
    edgetpu_devices: list[str] = field(default_factory=list)  # USB ids or /dev/apex_N seen
    openvino_version: str | None = None  # None: openvino not installed
    openvino_devices: list[str] = field(default_factory=list)
    tegra_release: str | None = None  # first line of /etc/nv_tegra_release
    android: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---- probes (each takes its source as a parameter so tests can point it at fakes) ----------

def normalize_machine(machine: str) -> str:
    m = machine.strip().lower()
    return _ARCH_ALIASES.get(m, m)


def read_text(path: Path, limit: int = 1 << 16) -> str | None:
    try:
        with open(path, "rb") as fh:
            return fh.read(limit).decode("utf-8", "replace")
    except OSError:
        return None


def probe_model(root: Path = Path("/")) -> str | None:
    """The board name from the device tree ('Raspberry Pi 5 Model B Rev 1.0'), NUL stripped."""
    for rel in ("proc/device-tree/model", "sys/firmware/devicetree/base/model"):
        text = read_text(root / rel)
        if text:
            return text.replace("\x00", "").strip() or None
    return None


def probe_cpu(root: Path = Path("/")) -> tuple[str | None, list[str]]:
    """(vendor, flags) from /proc/cpuinfo: x86 'vendor_id'/'flags', ARM 'CPU implementer'/'Features'."""
    from edgeproof.runtime.machine import parse_cpuinfo

    info = parse_cpuinfo(read_text(root / "proc/cpuinfo", limit=1 << 20) or "")
    return info["vendor"], info["flags"]


def probe_tegra(root: Path = Path("/")) -> str | None:
    text = read_text(root / "etc/nv_tegra_release")
    return text.splitlines()[0].strip() if text and text.strip() else None


def probe_android(root: Path = Path("/"), environ: dict[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return "ANDROID_ROOT" in env or "ANDROID_DATA" in env or (root / "system/build.prop").exists()


def probe_ort_providers(importer: Callable[[str], Any] = importlib.import_module) -> list[str] | None:
    try:
        ort = importer("onnxruntime")
    except ImportError:
        return None
    return list(ort.get_available_providers())


def probe_openvino(importer: Callable[[str], Any] = importlib.import_module) -> tuple[str | None, list[str]]:
    """(version, available devices) or (None, []) without openvino. Listing devices loads plugins."""
    try:
        ov = importer("openvino")
    except ImportError:
        return None, []
    version = str(getattr(ov, "__version__", "") or "unknown")
    try:
        from edgeproof.runtime.backends.openvino_compile import shared_core

        devices = list(shared_core(ov).available_devices)
    except Exception as exc:  # noqa: BLE001 - a broken plugin must not break detection: listed as 'error: ...'
        return version, [f"error: {exc}"]
    return version, devices


def probe_edgetpu_library(loader: Callable[[str], Any] = ctypes.CDLL,
                          name: str = EDGETPU_LIBRARY) -> tuple[bool, str]:
    """Whether the Edge TPU delegate library loads (dlopen), and the loader's message if not."""
    try:
        loader(name)
    except OSError as exc:
        return False, str(exc)
    return True, f"{name} loaded"


def probe_edgetpu_devices(root: Path = Path("/")) -> list[str]:
    """Coral USB Accelerators on the USB bus and PCIe/M.2 Edge TPUs (/dev/apex_N)."""
    found = []
    usb = root / "sys/bus/usb/devices"
    if usb.is_dir():
        for dev in sorted(usb.iterdir()):
            vid = (read_text(dev / "idVendor") or "").strip().lower()
            pid = (read_text(dev / "idProduct") or "").strip().lower()
            if (vid, pid) in EDGETPU_USB_IDS:
                found.append(f"usb {vid}:{pid}")
    dev_dir = root / "dev"
    if dev_dir.is_dir():
        found += [f"pcie /dev/{p.name}" for p in sorted(dev_dir.glob("apex_*"))]
    return found


def host_facts(root: Path = Path("/"), machine: str | None = None,
               importer: Callable[[str], Any] = importlib.import_module,
               loader: Callable[[str], Any] = ctypes.CDLL,
               environ: dict[str, str] | None = None) -> HostFacts:
    """Probe the host (or a fake root/importer/loader in tests)."""
    vendor, flags = probe_cpu(root)
    ok, detail = probe_edgetpu_library(loader)
    ov_version, ov_devices = probe_openvino(importer)
    return HostFacts(
        machine=normalize_machine(machine or platform.machine()),
        system=platform.system(),
        model=probe_model(root),
        cpu_vendor=vendor,
        cpu_flags=flags,
        cpu_count=os.cpu_count(),
        ort_providers=probe_ort_providers(importer),
        edgetpu_loadable=ok,
        edgetpu_detail=detail,
        edgetpu_devices=probe_edgetpu_devices(root),
        openvino_version=ov_version,
        openvino_devices=ov_devices,
        tegra_release=probe_tegra(root),
        android=probe_android(root, environ),
    )


# ---- decision ------------------------------------------------------------------------------

def _cpu_note(f: HostFacts) -> str | None:
    flags = set(f.cpu_flags)
    if f.machine == "x86_64":
        simd = [n for n, k in (("AVX2", "avx2"), ("AVX-512", "avx512f"), ("AVX-512 VNNI", "avx512_vnni"),
                               ("AVX-VNNI", "avx_vnni"), ("AMX", "amx_int8")) if k in flags]
        return f"CPU {f.cpu_vendor or 'unknown vendor'}, SIMD: {', '.join(simd) or 'no AVX2'}"
    if f.machine == "aarch64":
        dot = "asimddp" in flags
        return (f"CPU {f.cpu_vendor or 'unknown vendor'}, "
                + ("int8 dot-product (asimddp) present: int8 kernels are fast" if dot
                   else "no int8 dot-product (asimddp): int8 still beats fp32 on XNNPACK, by less"))
    return None


def _pi_profile(model: str) -> str | None:
    m = model.lower()
    if "raspberry pi" not in m:
        return None
    if any(k in m for k in ("raspberry pi 5", "raspberry pi 500", "compute module 5")):
        return "rpi5"
    if any(k in m for k in ("raspberry pi 4", "raspberry pi 400", "compute module 4")):
        return "rpi4"
    return "other"


def choose(f: HostFacts) -> tuple[Any, list[str]]:
    """Most specific accelerator first, then the board, then a generic CPU profile by architecture."""
    from edgeproof.devices import get_profile

    reasons = [f"architecture {f.machine} ({f.system})"]
    if f.model:
        reasons.append(f"device-tree model: {f.model}")
    note = _cpu_note(f)
    if note:
        reasons.append(note)
    providers = f.ort_providers
    reasons.append("onnxruntime not installed" if providers is None
                   else f"onnxruntime providers: {', '.join(providers)}")
    reasons.append(f"openvino {f.openvino_version}: devices {', '.join(f.openvino_devices) or 'none'}"
                   if f.openvino_version else "openvino not installed")

    def pick(name: str, why: str) -> tuple[Any, list[str]]:
        return get_profile(name), [*reasons, f"chose '{name}': {why}"]

    # 1. Edge TPU: the delegate library loads (and ideally a TPU is on the bus).
    if f.edgetpu_loadable:
        seen = f"; Edge TPU seen: {', '.join(f.edgetpu_devices)}" if f.edgetpu_devices else \
            "; no Edge TPU seen on USB or PCIe: plug it in before running"
        return pick("coral", f"{EDGETPU_LIBRARY} loads{seen}")
    if f.edgetpu_devices:
        reasons.append(f"Edge TPU seen ({', '.join(f.edgetpu_devices)}) but {EDGETPU_LIBRARY} does not load "
                       f"({f.edgetpu_detail}); install libedgetpu1-std ('edgeproof devices show coral')")
    else:
        reasons.append(f"no Edge TPU ({EDGETPU_LIBRARY} does not load)")

    # 2. NVIDIA Jetson: L4T release file or the board name.
    if f.tegra_release or (f.model and "jetson" in f.model.lower()):
        what = f.tegra_release or f.model
        gpu = [p for p in (providers or []) if p in ("TensorrtExecutionProvider", "CUDAExecutionProvider")]
        extra = (f"; GPU EPs available: {', '.join(gpu)}" if gpu else
                 "; this onnxruntime has no CUDA/TensorRT EP: install the Jetson Zoo onnxruntime-gpu wheel")
        return pick("jetson", f"NVIDIA Jetson ({what}){extra}")

    # 3. Qualcomm QNN / Android NNAPI execution providers (only in builds made for those devices).
    if providers and "QNNExecutionProvider" in providers:
        return pick("qnn", "onnxruntime has the QNNExecutionProvider (Qualcomm Hexagon NPU)")
    if providers and "NnapiExecutionProvider" in providers:
        return pick("android-npu", "onnxruntime has the NnapiExecutionProvider")
    if f.android:
        return pick("android-npu", "Android system (ANDROID_ROOT / build.prop); note: this onnxruntime "
                                   "has no NNAPI EP, build it with --use_nnapi")

    # 4. Intel accelerators visible to OpenVINO.
    if f.openvino_version and f.machine == "x86_64":
        if any(d.startswith("NPU") for d in f.openvino_devices):
            return pick("intel-npu", "OpenVINO lists an NPU")
        if any(d.startswith("GPU") for d in f.openvino_devices):
            return pick("intel-gpu", "OpenVINO lists a GPU")

    # 5. Raspberry Pi boards.
    if f.model:
        pi = _pi_profile(f.model)
        if pi in ("rpi4", "rpi5"):
            if f.machine != "aarch64":
                reasons.append(f"{f.model} runs a {f.machine} OS: ai-edge-litert needs 64-bit Raspberry Pi OS")
            return pick(pi, f"{f.model}")
        if pi == "other":
            reasons.append(f"{f.model} has no dedicated profile (Pi 4 and Pi 5 do)")

    # 6. Intel CPU with OpenVINO installed.
    if f.machine == "x86_64" and f.openvino_version and (f.cpu_vendor or "") == "GenuineIntel":
        return pick("intel", "Intel CPU and OpenVINO installed")
    if f.machine == "x86_64" and f.openvino_version:
        reasons.append(f"OpenVINO is installed but the CPU is {f.cpu_vendor or 'not Intel'}: "
                       "'--device intel' still works, CPU profile chosen")

    # 7. Generic CPU by architecture.
    generic = {"x86_64": "generic-x86_64", "aarch64": "generic-aarch64"}.get(f.machine)
    if generic:
        return pick(generic, f"no accelerator found; plain {f.machine} CPU")
    raise UsageError(
        f"no device profile for architecture '{f.machine}'; profiles exist for x86_64 and aarch64; "
        "pick one with --device NAME ('edgeproof devices list')"
    )


def check_profile(profile: Any, f: HostFacts,
                  loader: Callable[[str], Any] = ctypes.CDLL) -> list[tuple[bool, str]]:
    """Can this host run ``profile``? One (ok, message) per requirement: arch, then what its backend needs
    (delegates, EPs, device: ``Backend.host_checks``)."""
    checks = [(f.machine in profile.arch,
               f"architecture {f.machine} {'is' if f.machine in profile.arch else 'is not'} in {profile.arch}")]
    return checks + profile.backend_class.host_checks(profile, f, loader)
