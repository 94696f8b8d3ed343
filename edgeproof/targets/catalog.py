"""The emulated targets: which Debian userland, which Python, which CPU model qemu emulates, which wheels.

A target is data; edgeproof.targets.build turns one into a sysroot, edgeproof.targets.sysroot runs Python in it.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeproof.errors import UsageError

# The wheels every target gets (the runtime's own dependencies, pyproject's `dependencies`), with the backends
# each one provides. A wheel with no aarch64 build for the target's Python leaves its backends 'unsupported'.
RUNTIME_WHEELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("numpy", ()),
    ("ai-edge-litert", ("litert",)),
    ("onnxruntime", ("onnxruntime",)),
    ("opencv-python-headless", ("opencv",)),
    ("rich", ()),
)


@dataclass(frozen=True)
class Cpu:
    """What the board's /proc/cpuinfo says (the sysroot gets this file: qemu-user would show the host's x86 one,
    and onnxruntime's cpuinfo crashes on it) and the qemu CPU model whose features qemu reports (AT_HWCAP)."""

    qemu: str  # qemu-aarch64 -cpu NAME
    core: str  # the board's core, in words
    part: str  # MIDR part number as /proc/cpuinfo prints it
    variant: str
    revision: str
    features: str  # the board's own Features line (a real kernel's, from the core's ID registers)
    cores: int = 4

    def cpuinfo(self, model: str) -> str:
        block = ("processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: {f}\nCPU implementer\t: 0x41\n"
                 "CPU architecture: 8\nCPU variant\t: {v}\nCPU part\t: {p}\nCPU revision\t: {r}\n")
        body = "\n".join(block.format(i=i, f=self.features, v=self.variant, p=self.part, r=self.revision)
                         for i in range(self.cores))
        return body + (f"\nModel\t\t: {model}\n" if model else "")


A76 = Cpu("cortex-a76", "Cortex-A76 (BCM2712)", "0xd0b", "0x4", "1",
          "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp")
A72 = Cpu("cortex-a72", "Cortex-A72 (BCM2711)", "0xd08", "0x0", "3", "fp asimd evtstrm crc32 cpuid")
# Neoverse-N1 (Graviton2, Ampere Altra): the same Armv8.2 feature set as the A76 plus the server core's id.
N1 = Cpu("neoverse-n1", "Neoverse-N1 (a generic Armv8.2 server core)", "0xd0c", "0x3", "1",
         "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp ssbs")


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    suite: str  # Debian suite of the userland (Raspberry Pi OS is built on it)
    python: str  # the suite's python3 version, "3.11"
    glibc: tuple[int, int]  # the suite's glibc: the newest manylinux tag its wheels may have
    cpu: Cpu
    board: str  # the device-tree model the board reports ('' for a generic machine)
    unsupported: str = ""  # why no sysroot can be built for it (one line), '' when it can

    @property
    def debian_packages(self) -> tuple[str, ...]:
        # The interpreter, and the C/C++ runtime libraries the manylinux wheels expect from the system.
        return (f"python{self.python}", "libstdc++6", "libgcc-s1", "libgomp1", "zlib1g")

    @property
    def platform_tags(self) -> list[str]:
        """The manylinux tags a wheel for this userland may carry (pip --platform does not expand them)."""
        major, minor = self.glibc
        return ["manylinux2014_aarch64"] + [f"manylinux_{major}_{m}_aarch64" for m in range(17, minor + 1)]


BOOKWORM = {"suite": "bookworm", "python": "3.11", "glibc": (2, 36)}

TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("rpi5", "Raspberry Pi 5 on Raspberry Pi OS Bookworm (64-bit)", cpu=A76,
           board="Raspberry Pi 5 Model B Rev 1.0", **BOOKWORM),
    Target("rpi4", "Raspberry Pi 4 on Raspberry Pi OS Bookworm (64-bit)", cpu=A72,
           board="Raspberry Pi 4 Model B Rev 1.5", **BOOKWORM),
    Target("generic-aarch64", "a generic Armv8.2 aarch64 machine on Debian 12 bookworm", cpu=N1, board="",
           **BOOKWORM),
    Target("rpi4-bullseye", "Raspberry Pi 4 on the legacy Raspberry Pi OS Bullseye (64-bit), tflite-runtime 2.14",
           suite="bullseye", python="3.9", glibc=(2, 31), cpu=A72, board="Raspberry Pi 4 Model B Rev 1.5",
           unsupported="Debian bullseye's (and so Raspberry Pi OS Bullseye's) Python is 3.9 and edgeproof's runtime "
                       "needs Python >= 3.10; tflite-runtime 2.14 has a cp39 aarch64 wheel, but nothing of ours "
                       "can drive it there"),
)}


def get_target(name: str) -> Target:
    try:
        return TARGETS[name]
    except KeyError:
        raise UsageError(f"unknown target '{name}'; valid targets: {', '.join(TARGETS)} "
                         "(see 'edgeproof targets list')") from None
