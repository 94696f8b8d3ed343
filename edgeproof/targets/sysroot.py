"""A built target: where its sysroot lies, what its manifest says, and how to run its Python under qemu-user.

Layout of CACHE/targets/NAME (CACHE: $EDGEPROOF_CACHE, else $XDG_CACHE_HOME/edgeproof, else ~/.cache/edgeproof):
  root/                      the Debian arm64 userland (dpkg -x of each package) and the board's /proc/cpuinfo
  root/opt/edgeproof/site    the aarch64 wheels (pip install --target)
  root/opt/edgeproof/app/FP  edgeproof's own package, copied from the host's and refreshed when it changes (FP)
  target.json                the manifest: versions, the wheels that had no aarch64 build, size, build time

qemu-aarch64-static is run directly with -L ROOT (no binfmt_misc needed) and -cpu MODEL: qemu then reports the
model's CPU features (AT_HWCAP) to the userland, which is what XNNPACK and onnxruntime's MLAS pick kernels by.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from edgeproof.errors import UsageError
from edgeproof.paths import cache_dir
from edgeproof.targets.catalog import Target, get_target

QEMU_NAMES = ("qemu-aarch64-static", "qemu-aarch64")
QEMU_INSTALL = "sudo apt-get install qemu-user-static"
# The host environment the emulated Python may see: edgeproof's own settings and the terminal's; never the host's
# PYTHONPATH, LD_LIBRARY_PATH or site-packages (x86-64 code).
PASS_ENV_PREFIXES = ("EDGEPROOF_", "OPENCV_")
PASS_ENV = ("HOME", "LANG", "TERM", "COLUMNS", "NO_COLOR", "TZ")


def target_dir(name: str) -> Path:
    return cache_dir("targets", name)


def find_qemu() -> str | None:
    for name in QEMU_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def emulation_problem() -> str | None:
    """Why aarch64 code cannot be emulated here (one line), or None."""
    if find_qemu() is None:
        return f"qemu-user is not installed (no {' or '.join(QEMU_NAMES)} on PATH): {QEMU_INSTALL}"
    return None


@dataclass
class Sysroot:
    target: Target
    path: Path  # CACHE/targets/NAME
    manifest: dict

    @property
    def root(self) -> Path:
        return self.path / "root"

    @property
    def backends(self) -> list[str]:
        return list(self.manifest.get("backends", []))

    @property
    def missing(self) -> dict[str, str]:
        """wheel -> why it is not in the sysroot (no aarch64 build for this Python, ...)."""
        return dict(self.manifest.get("missing", {}))

    def python_command(self, args: list[str]) -> list[str]:
        qemu = find_qemu()
        if qemu is None:
            raise UsageError(emulation_problem() or "")
        py = self.root / "usr" / "bin" / f"python{self.target.python}"
        return [qemu, "-L", str(self.root), "-cpu", self.target.cpu.qemu, str(py), "-s", *args]

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k in PASS_ENV or k.startswith(PASS_ENV_PREFIXES)}
        env.update(PATH="/usr/bin:/bin", PYTHONNOUSERSITE="1", LANG=env.get("LANG", "C.UTF-8"),
                   PYTHONPATH=os.pathsep.join([str(self.root / "opt/edgeproof/site"), str(sync_app(self.root))]))
        return env

    def run_python(self, args: list[str], timeout_s: float | None = None, capture: bool = True,
                   cwd: str | None = None) -> subprocess.CompletedProcess:
        """Run the emulated python with `args`; capture: return its stdout/stderr (else they pass through)."""
        return subprocess.run(self.python_command(args), env=self.environment(), timeout=timeout_s, cwd=cwd,
                              capture_output=capture, text=True, check=False)


def open_target(name: str) -> Sysroot:
    """The built sysroot of target `name` (UsageError naming the build command when there is none)."""
    target = get_target(name)
    if target.unsupported:
        raise UsageError(f"target '{name}' is not supported: {target.unsupported}")
    path = target_dir(name)
    manifest = path / "target.json"
    if not manifest.is_file():
        raise UsageError(f"target '{name}' is not built (no {manifest}); build it first: "
                         f"edgeproof targets build {name}")
    return Sysroot(target, path, json.loads(manifest.read_text()))


def _app_source() -> Path:
    import edgeproof

    return Path(edgeproof.__file__).resolve().parent


def _app_files(src: Path) -> list[Path]:
    """edgeproof's files as the host imports them (links into the stage folders followed), no caches."""
    out = []
    for dirpath, dirnames, filenames in os.walk(src, followlinks=True):
        dirnames[:] = [d for d in dirnames if d != "__pycache__" and not d.startswith(".")]
        out += [Path(dirpath) / f for f in filenames if not f.endswith((".pyc", ".pyo")) and not f.startswith(".")]
    return sorted(out)


def app_fingerprint(src: Path, files: list[Path]) -> str:
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        h.update(f"{f.relative_to(src)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def sync_app(root: Path) -> Path:
    """The folder to put on the emulated PYTHONPATH holding this host's edgeproof package: copied (atomically, by
    a rename) when it is new or the host's copy changed, so the target always runs the code the host runs."""
    src = _app_source()
    files = _app_files(src)
    apps = root / "opt" / "edgeproof" / "app"
    dest = apps / app_fingerprint(src, files)
    if (dest / "edgeproof" / "__init__.py").is_file():
        return dest
    apps.mkdir(parents=True, exist_ok=True)
    tmp = apps / f".tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    for f in files:
        out = tmp / "edgeproof" / f.relative_to(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, out)
    try:
        os.rename(tmp, dest)
    except OSError:  # another process put the same copy in place first
        shutil.rmtree(tmp, ignore_errors=True)
    for old in apps.iterdir():  # earlier copies (another checkout's may be in use: only those over a day old)
        if old != dest and not old.name.startswith(".") and _age_s(old) > 86400:
            shutil.rmtree(old, ignore_errors=True)
    return dest


def _age_s(p: Path) -> float:
    import time

    return time.time() - p.stat().st_mtime


def folder_bytes(path: Path) -> int:
    total = 0
    for dirpath, _, filenames in os.walk(path):
        for f in filenames:
            p = Path(dirpath) / f
            if not p.is_symlink():
                total += p.stat().st_size
    return total
