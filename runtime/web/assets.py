"""The WebAssembly runtimes an exported site carries: pinned npm packages, fetched once, verified, cached.

They are not in the wheel (about 35 MB of .wasm): `edgeproof export web` takes each package's tarball from
$EDGEPROOF_CACHE/web (default ~/.cache/edgeproof/web), and the first time has npm itself fetch it
(`npm pack NAME@VERSION`, through the user's own npm configuration: registry, proxy, offline cache).
A tarball is used only when its sha512 equals the pinned `integrity` (the value npm itself checks),
wherever it came from: npm, a tarball put in the cache by hand, or --npm-cache DIR. Each site records the versions, licenses and
integrity it was built from (runtime/THIRD_PARTY.json).
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edgeproof.errors import EdgeproofError, UsageError
from edgeproof.paths import cache_dir

log = logging.getLogger(__name__)
MAX_TARBALL = 64 << 20  # the largest pinned tarball is 35 MB


@dataclass(frozen=True)
class NpmPackage:
    name: str
    version: str
    integrity: str  # "sha512-<base64>", as in the registry's dist.integrity
    license: str  # SPDX, from its package.json
    repository: str
    files: dict[str, str]  # path in the tarball -> path under the site's runtime/ folder

    @property
    def tarball_name(self) -> str:
        """The file name `npm pack NAME@VERSION` writes (scope folded in: @litertjs/core -> litertjs-core-2.5.3.tgz)."""
        return f"{self.name.lstrip('@').replace('/', '-')}-{self.version}.tgz"

    @property
    def spec(self) -> str:
        return f"{self.name}@{self.version}"

    def record(self) -> dict:
        return {"name": self.name, "version": self.version, "license": self.license, "integrity": self.integrity,
                "repository": self.repository, "source": f"npm pack {self.spec}", "files": sorted(self.files.values())}


LITERTJS = NpmPackage(
    "@litertjs/core", "2.5.3",
    "sha512-PlGmbMOq9WitX7FO0jhbdJw9GthatsyuCQXjTt/wJZo0FLaw48q4tz8IwqgqCIkviYGr9OFDL1kCnN4nzWoyJQ==",
    "Apache-2.0", "https://github.com/google-ai-edge/LiteRT (litert/js/packages/core)",
    # The relaxed-SIMD build and the compat build (browsers without relaxed SIMD: loadLiteRt picks one).
    {"package/dist/index.js": "litertjs/index.js",
     "package/wasm/litert_wasm_internal.js": "litertjs/litert_wasm_internal.js",
     "package/wasm/litert_wasm_internal.wasm": "litertjs/litert_wasm_internal.wasm",
     "package/wasm/litert_wasm_compat_internal.js": "litertjs/litert_wasm_compat_internal.js",
     "package/wasm/litert_wasm_compat_internal.wasm": "litertjs/litert_wasm_compat_internal.wasm"})
LITERTJS_UTILS = NpmPackage(
    "@litertjs/wasm-utils", "2.5.3",
    "sha512-4fJiw6tBQnIs+0jH/OQ16nYOiSl8/+zZnn5h2ul8aTKHi05sVqZW580Tmk78pC2kT39A9OYBVdFawteZ/sI1kQ==",
    "Apache-2.0", "https://github.com/google-ai-edge/LiteRT (litert/js/packages/wasm-utils)",
    {"package/dist/index.js": "litertjs/wasm-utils.js"})
ORT_WEB = NpmPackage(
    "onnxruntime-web", "1.31.1",
    "sha512-5GeH+bWQ+HxM10z7erGlsWqryrwMbSvm/1tkIsKTT48g0fI19VXVVC435t4t7VsPdSQeS7NmuZPXrQ73k82URw==",
    "MIT", "https://github.com/microsoft/onnxruntime (js/web)",
    # The WebAssembly-only ES module and its CPU build (no WebGPU/WebGL/JSPI variants).
    {"package/dist/ort.wasm.min.mjs": "ort/ort.wasm.min.mjs",
     "package/dist/ort-wasm-simd-threaded.mjs": "ort/ort-wasm-simd-threaded.mjs",
     "package/dist/ort-wasm-simd-threaded.wasm": "ort/ort-wasm-simd-threaded.wasm"})

# Which packages each in-browser runtime needs, and its version as the page reports it.
RUNTIME_PACKAGES: dict[str, tuple[NpmPackage, ...]] = {"litertjs": (LITERTJS, LITERTJS_UTILS), "ort-web": (ORT_WEB,)}
RUNTIME_VERSION = {"litertjs": LITERTJS.version, "ort-web": ORT_WEB.version}


def _sha512(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def tarball(pkg: NpmPackage, npm_cache: Path | None = None, fetch: bool = True) -> bytes:
    """The package's verified tarball: from `npm_cache`, else the edgeproof cache, else (fetch) the registry."""
    cached = cache_dir("web") / pkg.tarball_name
    for place in ([npm_cache / pkg.tarball_name] if npm_cache else []) + [cached]:
        if place.is_file():
            data = place.read_bytes()
            if _sha512(data) == pkg.integrity:
                return data
            log.warning("%s does not match the pinned %s@%s integrity; ignoring it", place, pkg.name, pkg.version)
    if not fetch:
        raise UsageError(f"no verified {pkg.tarball_name} in {npm_cache or cached.parent}; run "
                         f"'npm pack {pkg.name}@{pkg.version}' there, or export once with a connection")
    data = _npm_pack(pkg, cached.parent)
    if _sha512(data) != pkg.integrity:
        raise EdgeproofError(f"npm pack {pkg.spec} gave a tarball that does not match the pinned integrity; "
                             "refusing to use it (a mirror that rewrites packages?)")
    from edgeproof.atomic import write_bytes

    cached.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(cached, data)
    return data


def _npm_pack(pkg: NpmPackage, cache: Path) -> bytes:
    """The tarball as npm fetches it (`npm pack`), read from a temporary folder with a size bound."""
    npm = shutil.which("npm")
    if npm is None:
        raise EdgeproofError(f"no verified {pkg.tarball_name} in {cache} and no npm here to fetch it; install "
                             f"npm (apt-get install npm), or run 'npm pack {pkg.spec}' elsewhere and put "
                             f"{pkg.tarball_name} in {cache} (or pass --npm-cache DIR)")
    log.info("fetching %s with npm pack (once; cached in %s)", pkg.spec, cache)
    with tempfile.TemporaryDirectory(prefix="edgeproof-npm-") as tmp:
        try:
            r = subprocess.run([npm, "pack", pkg.spec, "--pack-destination", tmp, "--silent"],
                               capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise EdgeproofError(f"npm pack {pkg.spec} did not finish in 300 s; put {pkg.tarball_name} in "
                                 f"{cache} by hand (or pass --npm-cache DIR)") from None
        got = Path(tmp) / pkg.tarball_name
        if r.returncode != 0 or not got.is_file():
            why = (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1][:200]
            raise EdgeproofError(f"npm pack {pkg.spec} failed ({why}); without a connection run it elsewhere "
                                 f"and put {pkg.tarball_name} in {cache} (or pass --npm-cache DIR)")
        if got.stat().st_size > MAX_TARBALL:
            raise EdgeproofError(f"npm pack {pkg.spec} gave {got.stat().st_size} bytes, more than the "
                                 f"{MAX_TARBALL >> 20} MiB any pinned runtime has; refusing it")
        return got.read_bytes()


def extract(pkg: NpmPackage, dest: Path, npm_cache: Path | None = None) -> list[Path]:
    """Write the package's runtime files under `dest` (the site's runtime/ folder); returns them."""
    data = tarball(pkg, npm_cache)
    written = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tf:
        for member, target in pkg.files.items():
            src = tf.extractfile(member)
            if src is None:
                raise EdgeproofError(f"{pkg.tarball_name} has no {member}; the pinned file list is out of date")
            out = dest / target
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(src.read())
            written.append(out)
    return written
