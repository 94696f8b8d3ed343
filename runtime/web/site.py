"""`edgeproof export web`: artifacts -> one self-contained static folder that classifies in the browser, offline.

    site/index.html, app.js, engine.js   the page and its code (engine.js: preprocessing, runtimes, scores)
    site/sw.js, manifest.webmanifest      the PWA: every file cached on the first visit (files.json lists them)
    site/models.json                      per artifact: file, format, runtime, labels, the preprocessing
                                          contract and the I/O tensors, all read from its embedded metadata
    site/models/                          the artifacts, byte for byte (for LiteRT.js: with the dynamic batch
                                          of the tensor signatures set to 1, runtime.web.tflite_batch)
    site/runtime/                         LiteRT.js and/or onnxruntime-web (runtime.web.assets), THIRD_PARTY.json

Nothing on the page is fetched from anywhere but this folder.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from edgeproof.errors import UsageError
from edgeproof.formats import family_of, format_of
from edgeproof.runtime.web.assets import RUNTIME_PACKAGES, RUNTIME_VERSION, extract
from edgeproof.runtime.web.tflite_batch import fix_batch

STATIC = ("index.html", "app.js", "engine.js", "sw.js", "manifest.webmanifest", "icon.svg")
RUNTIME_OF_FAMILY = {"tflite": "litertjs", "onnx": "ort-web"}
RUNTIME_NAME = {"litertjs": "LiteRT.js", "ort-web": "onnxruntime-web"}
# The page implements cv2.resize's 8-bit arithmetic for these (engine.js resizeRGBA), bit for bit.
PAGE_INTERPOLATIONS = ("bilinear", "nearest")
# The tensor types each runtime's JavaScript API takes (LiteRT.js 2.5: "Element type INT8 is not supported").
INPUT_DTYPES = {"litertjs": ("float32", "int32", "uint8"), "ort-web": ("float32", "int8", "uint8", "int32")}


@dataclass
class Site:
    folder: Path
    models: list[dict]
    runtimes: list[dict]
    files: list[str] = field(default_factory=list)
    bytes: int = 0
    left_out: list[tuple[str, str]] = field(default_factory=list)  # (artifact, why the page cannot run it)

    def to_dict(self) -> dict:
        return {"folder": str(self.folder), "models": [{k: m[k] for k in ("file", "format", "runtime")}
                                                       for m in self.models],
                "runtimes": self.runtimes, "files": len(self.files), "bytes": self.bytes,
                "left_out": [{"artifact": a, "reason": r} for a, r in self.left_out]}


def model_entry(path: Path, runtime: str | None = None) -> dict:
    """What the page needs to know about one artifact, from its embedded metadata (UsageError when it cannot)."""
    from edgeproof.runtime.metadata import read_metadata

    family = family_of(path)
    if not path.is_file():
        raise UsageError(f"artifact '{path}' not found; give .tflite or .onnx files made by 'edgeproof convert'")
    runtime = runtime or RUNTIME_OF_FAMILY[family]
    meta = read_metadata(path)
    if meta is None or meta.input is None or meta.output is None:
        raise UsageError(f"'{path.name}' carries no edgeproof metadata (labels, preprocessing, I/O tensors), which "
                         "the page reads; export artifacts made by 'edgeproof convert'")
    pp = meta.preprocess
    if pp.interpolation not in PAGE_INTERPOLATIONS:
        raise UsageError(f"'{path.name}' resizes with '{pp.interpolation}'; the page implements OpenCV's "
                         f"{' and '.join(PAGE_INTERPOLATIONS)} exactly, not that")
    if meta.input.dtype not in INPUT_DTYPES[runtime]:
        raise UsageError(f"'{path.name}' takes {meta.input.dtype} input, and {RUNTIME_NAME[runtime]} "
                         f"{RUNTIME_VERSION[runtime]} tensors are {', '.join(INPUT_DTYPES[runtime][:-1])} or "
                         f"{INPUT_DTYPES[runtime][-1]} only")
    fmt = format_of(path)
    return {"file": f"models/{path.name}", "format": meta.format or (fmt.name if fmt else None), "runtime": runtime,
            "runtime_version": RUNTIME_VERSION[runtime], "labels": list(meta.labels),
            "preprocess": pp.to_dict(), "input": meta.input.to_dict(), "output": meta.output.to_dict(),
            "output_kind": meta.output_kind, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def build(artifacts: list[Path], folder: Path, npm_cache: Path | None = None,
          runtime: str | None = None, leave_out_unsupported: bool = False) -> Site:
    """Write the site for `artifacts` into `folder` (an existing folder must be empty or an earlier export).

    runtime: force one in-browser runtime (the backends pass theirs); default: by file family.
    leave_out_unsupported: an artifact the page cannot run (int8 I/O under LiteRT.js, say) is left out and
    named in Site.left_out instead of refusing the whole site (still refused when none is left)."""
    from edgeproof.atomic import fsync_dir, replace_dir, temp_dir_beside

    if not artifacts:
        raise UsageError("no artifacts given; pass .tflite/.onnx files, e.g. RUN/artifacts/model.tflite-fp32.tflite")
    if npm_cache is not None and not Path(npm_cache).is_dir():  # a typo would silently fetch from the registry
        raise UsageError(f"--npm-cache '{npm_cache}' is not a folder; give the folder holding the 'npm pack' "
                         "tarballs, or leave --npm-cache out to use the edgeproof cache and npm")
    names = [p.name for p in artifacts]
    if len(set(names)) != len(names):
        raise UsageError(f"two artifacts share a file name ({', '.join(n for n in names if names.count(n) > 1)}); "
                         "the site keeps one models/ folder: rename one")
    entries, kept, left_out = [], [], []
    for p in map(Path, artifacts):
        family_of(p)  # not a model file at all: refused whatever leave_out_unsupported says
        try:
            entries.append(model_entry(p, runtime))
            kept.append(p)
        except UsageError as exc:
            if not leave_out_unsupported or not p.is_file():
                raise
            left_out.append((p.name, str(exc)))
    if not entries:
        raise UsageError(f"the page can run none of the artifacts: {'; '.join(r for _, r in left_out)}")
    artifacts = kept
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or (any(folder.iterdir()) and not (folder / "models.json").is_file())):
        raise UsageError(f"-o '{folder}' exists and is not an empty folder or an earlier 'edgeproof export web' "
                         "site; give a new or empty folder")
    tmp = temp_dir_beside(folder, "site")
    try:
        static = resources.files("edgeproof.runtime.web") / "static"
        for name in STATIC:
            (tmp / name).write_bytes((static / name).read_bytes())
        (tmp / "models").mkdir()
        for p, e in zip(artifacts, entries):
            data = Path(p).read_bytes()
            if e["runtime"] == "litertjs":  # LiteRT.js runs no dynamic batch: the signature's -1 becomes 1
                data, e["batch_fixed_tensors"] = fix_batch(data)
            e["served_sha256"] = hashlib.sha256(data).hexdigest()
            (tmp / "models" / Path(p).name).write_bytes(data)
        records = []
        for rt in dict.fromkeys(e["runtime"] for e in entries):
            for pkg in RUNTIME_PACKAGES[rt]:
                extract(pkg, tmp / "runtime", npm_cache)
                records.append(pkg.record())
        (tmp / "runtime" / "THIRD_PARTY.json").write_text(json.dumps(records, indent=1) + "\n")
        (tmp / "models.json").write_text(json.dumps(entries, indent=1) + "\n")
        files = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())
        digest = hashlib.sha256()
        for f in files:
            digest.update(f.encode() + hashlib.sha256((tmp / f).read_bytes()).digest())
        files.append("files.json")
        (tmp / "files.json").write_text(json.dumps({"version": digest.hexdigest()[:16],
                                                    "files": ["./"] + files}, indent=1) + "\n")
        size = sum((tmp / f).stat().st_size for f in files)
        fsync_dir(tmp)
        replace_dir(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Site(folder, entries, records, files, size, left_out)
