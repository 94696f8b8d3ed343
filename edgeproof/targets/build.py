"""`edgeproof targets build NAME`: a sysroot from Debian's arm64 packages and the aarch64 wheels, built atomically.

1. apt-get with a private configuration (its own lists and archive cache under CACHE/targets/.apt-SUITE, the
   system's keyring; no root, the host's apt state untouched) resolves and downloads the interpreter's packages;
2. `dpkg -x` unpacks each into root/; the board's /proc/cpuinfo is written into root/proc (qemu-user opens
   ROOT/proc/cpuinfo in place of the host's x86 one);
3. pip downloads each runtime wheel for the target's Python and glibc (the host's version where the host has it,
   so host and target differ in the CPU architecture only), then installs them with their dependencies;
4. the folder is renamed into place (an existing sysroot is replaced only by a finished one), then probed.
"""

from __future__ import annotations

import json
import logging
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from edgeproof.atomic import Flock, clean_stale, replace_dir, temp_dir_beside, write_json
from edgeproof.errors import EdgeproofError, UsageError
from edgeproof.progress import Progress, ProgressCallback
from edgeproof.targets.catalog import RUNTIME_WHEELS, Target, get_target
from edgeproof.targets.sysroot import Sysroot, emulation_problem, folder_bytes, target_dir

log = logging.getLogger(__name__)

DEBIAN_MIRROR = "http://deb.debian.org/debian"
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
TOOLS = {"apt-get": "apt (Debian/Ubuntu)", "dpkg-deb": "dpkg"}


@dataclass
class BuildResult:
    sysroot: Sysroot
    seconds: float
    size_bytes: int
    missing: dict[str, str] = field(default_factory=dict)
    probe: dict | None = None


def build_target(name: str, progress: ProgressCallback | None = None) -> BuildResult:
    target = get_target(name)
    if target.unsupported:
        raise UsageError(f"target '{name}' cannot be built: {target.unsupported}")
    for tool, pkg in TOOLS.items():
        if shutil.which(tool) is None:
            raise UsageError(f"'{tool}' not found: building a target needs {pkg}'s {tool} to fetch Debian's arm64 "
                             "packages; build it on a Debian or Ubuntu machine")
    if not KEYRING.is_file():
        raise UsageError(f"{KEYRING} not found: install Debian's archive keyring (sudo apt-get install "
                         "debian-archive-keyring) so the arm64 packages can be verified")
    dest = target_dir(name)
    dest.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(dest.parent, name)
    t0 = time.perf_counter()
    try:
        lock = Flock(dest.parent / f".{name}.lock")
    except BlockingIOError:
        raise UsageError(f"target '{name}' is being built by another process; wait for it to finish") from None
    with lock, Progress(progress) as prog:
        task = prog.add_task(f"target {name}", total=4)
        tmp = temp_dir_beside(dest, "tmp")
        try:
            root = tmp / "root"
            prog.update(task, description=f"{name}: Debian {target.suite} arm64 packages")
            packages = _debian_userland(target, root, dest.parent / f".apt-{target.suite}")
            prog.advance(task)
            (root / "proc").mkdir(exist_ok=True)
            (root / "proc" / "cpuinfo").write_text(target.cpu.cpuinfo(target.board))
            prog.update(task, description=f"{name}: aarch64 wheels")
            wheels, missing = _wheels(target, root / "opt" / "edgeproof" / "site", tmp / "wheels")
            prog.advance(task)
            shutil.rmtree(tmp / "wheels", ignore_errors=True)
            backends = [b for wheel, bs in RUNTIME_WHEELS if wheel not in missing for b in bs]
            manifest = {"name": name, "description": target.description, "suite": target.suite,
                        "python": target.python, "cpu": target.cpu.qemu, "core": target.cpu.core,
                        "board": target.board, "debian_packages": packages, "wheels": wheels, "missing": missing,
                        "backends": backends, "built_on": f"{platform.machine()} {platform.node()}",
                        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            manifest["size_bytes"] = folder_bytes(tmp)
            manifest["build_seconds"] = round(time.perf_counter() - t0, 1)
            write_json(tmp / "target.json", manifest)
            replace_dir(tmp, dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        sysroot = Sysroot(target, dest, manifest)
        prog.update(task, description=f"{name}: probing the emulated CPU")
        probe = None
        if emulation_problem() is None:
            from edgeproof.targets.remote import probe as run_probe

            probe = run_probe(sysroot)
            manifest["probe"] = probe
            write_json(dest / "target.json", manifest)
        prog.advance(task, 2)
    return BuildResult(sysroot, time.perf_counter() - t0, manifest["size_bytes"], missing, probe)


def _run(cmd: list[str], what: str, env: dict | None = None) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        lines = [ln for ln in (done.stderr or done.stdout).splitlines() if ln.strip()
                 and not ln.startswith("WARNING: Location")]
        raise EdgeproofError(f"{what} failed (exit {done.returncode}): {lines[-1] if lines else ''}".rstrip(": "))
    return done.stdout


def _apt_env(target: Target, state: Path) -> dict:
    """A private apt: arm64 only, the target's suite, its own lists and archive cache; the system keyring."""
    import os

    for d in ("lists/partial", "cache/archives/partial", "etc/sources.list.d", "etc/preferences.d", "etc/apt.conf.d"):
        (state / d).mkdir(parents=True, exist_ok=True)
    (state / "status").touch()  # an empty dpkg database: apt resolves the whole closure
    suites = [(DEBIAN_MIRROR, target.suite), (DEBIAN_MIRROR, f"{target.suite}-updates"),
              ("http://deb.debian.org/debian-security", f"{target.suite}-security")]
    (state / "etc" / "sources.list").write_text("".join(
        f"deb [arch=arm64 signed-by={KEYRING}] {uri} {suite} main\n" for uri, suite in suites))
    conf = {"APT::Architecture": "arm64", "Dir::State": state, "Dir::State::Lists": state / "lists",
            "Dir::State::status": state / "status", "Dir::Cache": state / "cache",
            "Dir::Cache::Archives": state / "cache" / "archives", "Dir::Etc::SourceList": state / "etc" / "sources.list",
            "Dir::Etc::SourceParts": state / "etc" / "sources.list.d", "Dir::Etc::Parts": state / "etc" / "apt.conf.d",
            "Dir::Etc::Preferences": state / "etc" / "preferences",
            "Dir::Etc::PreferencesParts": state / "etc" / "preferences.d",
            "Debug::NoLocking": "true", "Acquire::Languages": "none", "APT::Sandbox::User": "root"}
    text = "".join(f'{k} "{v}";\n' for k, v in conf.items()) + 'APT::Architectures { "arm64"; };\n'
    (state / "apt.conf").write_text(text)
    env = dict(os.environ, APT_CONFIG=str(state / "apt.conf"), DEBIAN_FRONTEND="noninteractive")
    return env


def _debian_userland(target: Target, root: Path, state: Path) -> dict[str, str]:
    """Resolve, download and unpack the target's Debian packages into root; {package: version}."""
    env = _apt_env(target, state)
    lists = state / "lists"
    if not any(lists.glob("*Packages*")) or time.time() - max(p.stat().st_mtime for p in lists.glob("*")) > 86400:
        _run(["apt-get", "update", "-q"], f"apt-get update (Debian {target.suite} arm64)", env)
    out = _run(["apt-get", "install", "-d", "-y", "-q", "--no-install-recommends", *target.debian_packages],
               f"apt-get download of {' '.join(target.debian_packages)} (arm64)", env)
    log.debug("%s", out)
    archives = state / "cache" / "archives"
    wanted = _resolved(target, env)
    root.mkdir(parents=True, exist_ok=True)
    versions = {}
    for pkg, version in wanted.items():
        debs = sorted(archives.glob(f"{pkg}_{version.replace(':', '%3a')}_*.deb"))
        if not debs:
            raise EdgeproofError(f"apt resolved {pkg} {version} but no .deb of it is in {archives}")
        _run(["dpkg-deb", "-x", str(debs[0]), str(root)], f"dpkg -x {debs[0].name}")
        versions[pkg] = version
    return versions


def _resolved(target: Target, env: dict) -> dict[str, str]:
    """{package: version} apt installs for the target's packages (from the simulated install's 'Inst' lines)."""
    out = _run(["apt-get", "install", "-s", "-y", "-q", "--no-install-recommends", *target.debian_packages],
               "apt-get install --simulate", env)
    found = {}
    for line in out.splitlines():
        if line.startswith("Inst "):
            parts = line.split()  # Inst NAME (VERSION SUITE [ARCH])
            found[parts[1].split(":")[0]] = parts[2].lstrip("(")
    return found


def _host_version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def _pip_platform_args(target: Target) -> list[str]:
    args = ["--only-binary=:all:", "--python-version", target.python, "--implementation", "cp",
            "--abi", f"cp{target.python.replace('.', '')}", "--abi", "abi3", "--abi", "none"]
    for tag in target.platform_tags:
        args += ["--platform", tag]
    return args


def _wheels(target: Target, site: Path, scratch: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Download each runtime wheel for the target (the host's version first), install them with their dependencies
    into `site`; ({installed distribution: version}, {wheel with no aarch64 build: one line why})."""
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    plat = _pip_platform_args(target)
    files, missing = [], {}
    for wheel, _backends in RUNTIME_WHEELS:
        host = _host_version(wheel)
        tried = [f"{wheel}=={host}", wheel] if host else [wheel]
        got, why = None, ""
        for req in tried:
            d = scratch / wheel
            try:
                _run([*pip, "download", "-q", "--no-deps", "-d", str(d), *plat, req], f"pip download {req}")
            except EdgeproofError as exc:
                why = str(exc)
                continue
            got = sorted(d.glob("*.whl"))[0]
            if req != tried[0]:
                log.warning("%s: the host's %s has no aarch64 wheel for Python %s; using %s", target.name,
                            tried[0], target.python, got.name)
            break
        if got is None:
            missing[wheel] = (f"no aarch64 wheel of {wheel} for CPython {target.python} "
                              f"(manylinux, glibc {target.glibc[0]}.{target.glibc[1]}): {why}")
            log.warning("%s: %s", target.name, missing[wheel])
            continue
        files.append(str(got))
    if not files:
        raise EdgeproofError(f"no runtime wheel for target '{target.name}' could be downloaded: "
                             + "; ".join(missing.values()))
    _run([*pip, "install", "-q", "--no-compile", "--no-warn-conflicts", "--no-warn-script-location",
          "--ignore-installed", "--target", str(site), *plat, *files], "pip install --target (aarch64 wheels)")
    installed = {}
    for info in sorted(site.glob("*.dist-info")):
        head = (info / "METADATA").read_text(errors="replace").split("\n\n", 1)[0].splitlines()
        fields = dict(ln.split(": ", 1) for ln in head if ": " in ln and not ln.startswith(" "))
        installed[fields.get("Name", info.name)] = fields.get("Version", "?")
    return installed, missing


def describe(result: BuildResult) -> dict:
    """What `targets build --json` prints."""
    return {"target": result.sysroot.target.name, "path": str(result.sysroot.path),
            "size_bytes": result.size_bytes, "seconds": round(result.seconds, 1), "missing": result.missing,
            "probe": result.probe, "manifest": json.loads((result.sysroot.path / "target.json").read_text())}
