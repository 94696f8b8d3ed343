"""The WebAssembly runtimes an exported site carries: pinned npm packages, fetched once, verified, cached.

They are not in the wheel (about 35 MB of .wasm): `edgeproof export web` takes each package's tarball from
$EDGEPROOF_CACHE/web (default ~/.cache/edgeproof/web), and fetches it from the npm registry the first time.
A tarball is used only when its sha512 equals the pinned `integrity` (the value npm itself checks, from the
registry's package document), wherever it came from: the registry, `npm pack NAME@VERSION` put in the cache
by hand on a machine without a connection, or --npm-cache DIR. Each site records the versions, licenses and
integrity it was built from (runtime/THIRD_PARTY.json).
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from edgeproof.errors import EdgeproofError, UsageError
from edgeproof.paths import cache_dir

log = logging.getLogger(__name__)
REGISTRY = "https://registry.npmjs.org"
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
    def url(self) -> str:
        return f"{REGISTRY}/{self.name}/-/{self.name.split('/')[-1]}-{self.version}.tgz"

    def record(self) -> dict:
        return {"name": self.name, "version": self.version, "license": self.license, "integrity": self.integrity,
                "repository": self.repository, "source": self.url, "files": sorted(self.files.values())}


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
    log.info("fetching %s@%s from %s (once; cached in %s)", pkg.name, pkg.version, REGISTRY, cached.parent)
    try:
        with urllib.request.urlopen(pkg.url, timeout=60) as resp:
            data = resp.read(MAX_TARBALL + 1)
    except (urllib.error.URLError, OSError) as exc:
        raise EdgeproofError(f"cannot fetch {pkg.url} ({getattr(exc, 'reason', exc)}); on a machine without a "
                             f"connection run 'npm pack {pkg.name}@{pkg.version}' elsewhere and put "
                             f"{pkg.tarball_name} in {cached.parent} (or pass --npm-cache DIR)") from None
    if _sha512(data) != pkg.integrity:
        raise EdgeproofError(f"{pkg.url} does not match the pinned integrity of {pkg.name}@{pkg.version}; "
                             "refusing to use it (a proxy or mirror that rewrites downloads?)")
    from edgeproof.atomic import write_bytes

    cached.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(cached, data)
    return data


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
