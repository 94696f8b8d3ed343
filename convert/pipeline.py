"""convert_run: one Keras model -> every requested artifact, each self-describing and verified to load.

Dispatch reads the format table (edgeproof.formats.FORMATS); one format failing never stops the
others; each artifact is written atomically (temp file, verified, then renamed) and the manifest is
rewritten atomically after every format, merged with the one already in OUT. The artifact/manifest
pair is replaced in the kill-safe order described in convert.manifest; temp files of a killed
earlier run into OUT (and its scratch folder in the system temp dir) are removed first.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata as md
import logging
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from edgeproof.atomic import Flock, atomic_path, clean_stale, no_space, scratch_dir, temp_dir_beside
from edgeproof.contract import ArtifactMeta, TensorSpec
from edgeproof.convert.manifest import MANIFEST_FILE, ArtifactResult, Manifest, load_manifest, refuse_foreign_files
from edgeproof.convert.options import DEFAULT_OPSET, ConvertOptions
from edgeproof.convert.reasons import failure_reason
from edgeproof.errors import EdgeproofError, UsageError
from edgeproof.formats import FORMATS, Format, artifact_filename
from edgeproof.progress import Progress, ProgressCallback
from edgeproof.runtime.integrity import sha256_file

log = logging.getLogger(__name__)

VERSION_PACKAGES = {"edgeproof": "edgeproof", "tensorflow": ("tensorflow", "tensorflow-cpu"), "keras": "keras",
                    "tf2onnx": "tf2onnx", "onnx": "onnx", "onnxruntime": "onnxruntime",
                    "ai-edge-litert": "ai-edge-litert", "onnx2tf": "onnx2tf"}


@functools.cache
def _versions() -> tuple[tuple[str, str], ...]:
    out = {}
    for key, dists in VERSION_PACKAGES.items():
        for dist in (dists,) if isinstance(dists, str) else dists:
            try:
                out[key] = md.version(dist)
                break
            except md.PackageNotFoundError:
                continue
    return tuple(out.items())


def versions() -> dict[str, str]:
    """Installed edgeproof/TF/converter/runtime versions (looked up once per process)."""
    return dict(_versions())


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@contextlib.contextmanager
def _quiet():
    """Converters print to stdout (keras export) and log chatter: keep stdout clean for --json."""
    tf2onnx_log = logging.getLogger("tf2onnx")
    level = tf2onnx_log.level
    tf2onnx_log.setLevel(logging.ERROR)
    with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            yield
        finally:
            tf2onnx_log.setLevel(level)


class _Job:
    """Shared state of one convert_run: model, calibration, cached intermediate files."""

    def __init__(self, run, model, manifest: Manifest, calib, options: ConvertOptions, tmp: Path):
        self.run, self.model, self.manifest, self.calib = run, model, manifest, calib
        self.out_dir = manifest.out_dir
        self.int8_io, self.opset, self.tmp = options.int8_io, options.opset, tmp
        self._saved_model: Path | None = None
        self.onnx_fp32: Path | None = None  # an fp32 .onnx usable as the int8 source
        self.chosen: dict[str, tuple[dict, Any]] = {}  # format -> (recipe options, quant_search.SearchResult)
        self.int8_search = options.int8_search  # False: the table's recipe only (convert --no-int8-search)

    def saved_model(self) -> Path:
        """Export the Keras model once; every TFLite conversion starts from it."""
        if self._saved_model is None:
            path = self.tmp / "saved_model"
            if hasattr(self.model, "save_onnx"):  # an ONNX source (convert.onnx_source): through onnx2tf
                self.model.export(str(path), verbose=False, calib=self.calib)
            else:
                self.model.export(str(path), verbose=False)
            self._saved_model = path
        return self._saved_model

    def sample(self) -> np.ndarray:
        if self.calib is not None and len(self.calib):
            return self.calib[:1]
        shape = [1, *[int(d) for d in self.model.inputs[0].shape[1:]]]
        return np.full(shape, 127.0, np.float32)


def _options(fmt: Format, job: _Job) -> dict[str, Any]:
    """The manifest's `options`: the recipe applied (the format's, or the one the int8 search chose, with the
    search's record) plus this run's choices."""
    chosen = job.chosen.get(fmt.name)
    opts = dict(chosen[0]) if chosen else fmt.recipe.options(job.int8_io)
    if chosen:
        opts.update(chosen[1].record())
    if fmt.family == "onnx":
        opts["opset"] = job.opset
    if fmt.calibrated and job.calib is not None:
        opts["calibration_images"] = len(job.calib)
    return opts


def _build_tflite(fmt: Format, job: _Job) -> tuple[bytes, bytes, dict[str, Any]]:
    """(bytes to read I/O specs from, bytes of the artifact, info about the compiler step if any)."""
    from edgeproof.convert.edgetpu import make_edgetpu
    from edgeproof.convert.tflite import to_tflite

    if fmt.recipe.compiler == "edgetpu":
        from edgeproof.convert import quant_search

        built = make_edgetpu(job.saved_model(), job.calib, fmt.name)
        opts = fmt.recipe.options(job.int8_io)
        job.chosen[fmt.name] = (opts, quant_search.unsearched("tflite-converter", opts, len(job.calib),
                                                              quant_search.EDGETPU_NOTE))
        return built
    if fmt.calibrated:  # the most faithful int8 recipe on held-out calibration images (convert.quant_search)
        from edgeproof.convert import int8_recipes, quant_search

        fp32 = to_tflite(job.saved_model(), "tflite-fp32") \
            if job.int8_search and int8_recipes.litert_recipe(fmt.name, job.int8_io) else None
        cands = int8_recipes.tflite_candidates(fmt.name, job.saved_model(), fp32, job.int8_io)
        cands = cands if job.int8_search else cands[:1]
        chosen, path, result = quant_search.search(cands, job.calib, int8_recipes.keras_reference(job.model, job.run.head),
                                                   job.tmp / f"search-{fmt.name}", fmt.backends)
        job.chosen[fmt.name] = (chosen.options, result)
        data = path.read_bytes()
        return data, data, {}
    data = to_tflite(job.saved_model(), fmt.name, calib=job.calib, io_type=job.int8_io)
    return data, data, {}


def _meta(fmt: Format, job: _Job, source_sha: str, ispec: dict, ospec: dict, extra: dict) -> ArtifactMeta:
    pp = job.run.preprocess
    if fmt.family == "tflite" and pp.layout != "NHWC":  # an NCHW ONNX source: its TFLite artifacts are NHWC
        from dataclasses import replace

        extra = {**extra, "source_layout": pp.layout}
        pp = replace(pp, layout="NHWC")
    return ArtifactMeta(labels=list(job.run.labels), preprocess=pp, format=fmt.name,
                        output_kind=job.run.head,
                        input=TensorSpec(**ispec), output=TensorSpec(**ospec), source_sha256=source_sha,
                        versions=versions(), created=_now(), extra=extra)


def _write_tflite(fmt: Format, job: _Job, dest: Path, source_sha: str, calib_sha: str | None
                  ) -> tuple[list[str], str]:
    from edgeproof.convert.edgetpu import COMPILE_HINT
    from edgeproof.convert.tflite import read_specs
    from edgeproof.convert.verify import verify_tflite
    from edgeproof.runtime.metadata import tflite_with_metadata

    ready, bare, info = _build_tflite(fmt, job)
    compiler = fmt.recipe.compiler
    compiled = bool(info.get("compiled"))
    notes = [COMPILE_HINT.format(path=dest)] if compiler == "edgetpu" and not compiled else []
    if compiled:
        place = info.get("placement") or {}
        notes.append(f"edgetpu_compiler mapped {place.get('accelerator', '?')} of {place.get('total', '?')} "
                     "ops to the Edge TPU (the rest run on the CPU); full log in the metadata")
    # A compiled Edge TPU model hides its ops in a custom op: read I/O specs from the compiler input.
    ispec, ospec = read_specs(ready)
    extra = {"options": _options(fmt, job), "calibration_sha256": calib_sha if fmt.calibrated else None}
    if compiler:
        extra[compiler] = info
    if fmt.calibrated:
        from edgeproof.convert.tflite import float_ops

        if floats := float_ops(ready):  # the recipe's float fallback: never silent
            extra["float_ops"] = floats
            notes.append(f"{sum(floats.values())} op(s) compute in float: "
                         + ", ".join(f"{n} x{c}" for n, c in sorted(floats.items()))
                         + f" (no kernel for them in {fmt.recipe.ops}; the rest is quantized)")
    notes += _compat_notes(ready)
    meta = _meta(fmt, job, source_sha, ispec, ospec, extra)
    with atomic_path(dest) as tmp:
        tmp.write_bytes(tflite_with_metadata(bare, meta))
        notes += verify_tflite(tmp, meta, job.sample(), compiled_edgetpu=compiled)
        sha = sha256_file(tmp)  # the bytes atomic_path renames onto dest
        job.manifest.mark_pending(fmt.name, sha)  # before the rename: see convert.manifest
    return notes, sha


def _compat_notes(data: bytes) -> list[str]:
    """Say when the file needs a newer TFLite runtime than the last tflite-runtime wheel."""
    from edgeproof.runtime.inspect import LEGACY_RUNTIME, compat_checks, tflite_flatbuffer

    check = compat_checks(tflite_flatbuffer(data), LEGACY_RUNTIME)[0]
    if check["ok"] is False:
        return [f"legacy {check['runtime']} cannot load it: {check['reason']}; ai-edge-litert can"]
    return []


def _write_onnx(fmt: Format, job: _Job, dest: Path, source_sha: str, calib_sha: str | None
                ) -> tuple[list[str], str]:
    import onnx

    from edgeproof.convert.onnx_export import to_onnx
    from edgeproof.convert.verify import verify_onnx
    from edgeproof.runtime.backends.onnx_graph import proto_io
    from edgeproof.runtime.metadata import set_onnx_metadata

    quantized = fmt.recipe.quant_format is not None
    onnx_source = hasattr(job.model, "save_onnx")  # convert.onnx_source: the source file is the fp32 graph
    if not quantized:
        proto = onnx.load_from_string(job.model.proto.SerializeToString()) if onnx_source else \
            to_onnx(job.model, opset=job.opset)
    else:
        if job.onnx_fp32 is None:
            job.onnx_fp32 = job.tmp / "fp32.onnx"
            if onnx_source:
                job.model.save_onnx(job.onnx_fp32)
            else:
                onnx.save(to_onnx(job.model, opset=job.opset), str(job.onnx_fp32))
        from edgeproof.convert import int8_recipes, quant_search

        cands = int8_recipes.onnx_candidates(fmt.name, job.onnx_fp32)
        cands = cands if job.int8_search else cands[:1]
        chosen, q, result = quant_search.search(cands, job.calib, int8_recipes.keras_reference(job.model, job.run.head),
                                                job.tmp / f"search-{fmt.name}", fmt.backends)
        job.chosen[fmt.name] = (chosen.options, result)
        proto = onnx.load(str(q))
    ispec, ospec = (spec.to_dict() for spec in proto_io(proto))
    extra = {"options": _options(fmt, job), "calibration_sha256": calib_sha if fmt.calibrated else None}
    meta = _meta(fmt, job, source_sha, ispec, ospec, extra)
    set_onnx_metadata(proto, meta)
    with atomic_path(dest) as tmp:
        onnx.save(proto, str(tmp))
        notes = verify_onnx(tmp, meta, job.sample())
        sha = sha256_file(tmp)  # the bytes atomic_path renames onto dest
        job.manifest.mark_pending(fmt.name, sha)  # before the rename: see convert.manifest
    if not quantized:
        job.onnx_fp32 = dest
    return notes, sha


def convert_run(source: str | Path, out_dir: str | Path, formats: Iterable[str] | str | ConvertOptions = "all",
                calib_count: int = 200, int8_io: str = "int8", opset: int = DEFAULT_OPSET,
                progress: ProgressCallback | bool | None = None,
                seed: int = 0, on_result: Callable[[ArtifactResult], None] | None = None,
                overrides: dict | None = None, calib_data: str | Path | None = None,
                int8_search: bool = True) -> Manifest:
    """Convert MODEL to `formats` in `out_dir`; return the manifest.

    MODEL: a run folder (or its model.keras), a bare .keras/.h5/SavedModel (see convert.source: `overrides`
    are the contract flags, `calib_data` the calibration image folder), or a ModelSource already opened.
    formats, calib_count, int8_io, opset, seed, int8_search: what to make and how, validated once as a
    ConvertOptions (or pass a ConvertOptions as `formats`; the CLI builds one before it opens anything).
    int8_search: pick each int8 artifact's recipe on held-out calibration images (convert.quant_search);
    False: the format table's recipe, calibrated on every image.
    progress: a callback for progress events (edgeproof.progress); on_result: called with each format's
    result as soon as it is written.
    """
    from edgeproof.convert.source import ModelSource, open_source

    options = formats if isinstance(formats, ConvertOptions) else ConvertOptions(
        formats, calib_count=calib_count, int8_io=int8_io, opset=opset, seed=seed, int8_search=int8_search)
    fmts = options.formats
    run = source if isinstance(source, ModelSource) else open_source(source, overrides, calib_data)
    calibrated = [f.name for f in fmts if f.calibrated]
    if calibrated and run.bare and not run.splits.get("train"):
        raise UsageError(f"{', '.join(calibrated)} need calibration images and '{run.model_path.name}' is a bare "
                         "model with no training split; pass --calib-data DIR (images like the training ones, class "
                         "subfolders optional) or convert only float formats (never calibrated on random data)")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"output '{out_dir}' exists and is not a folder; give a folder for the artifacts")
    import importlib.util

    from edgeproof.errors import MissingDependency

    if importlib.util.find_spec("tensorflow") is None:  # before anything is written
        raise MissingDependency("tensorflow", "train", "edgeproof convert")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        os.rmdir(temp_dir_beside(out_dir / "edgeproof", "probe"))
        lock = Flock(out_dir, folder=True)  # one writer per OUT: two would lose each other's manifest entries
    except BlockingIOError:
        raise UsageError(f"another 'edgeproof convert' is writing to '{out_dir}' right now; wait for it to finish "
                         "or choose another -o") from None
    except OSError as exc:
        raise UsageError(f"cannot write artifacts to '{out_dir}': {exc.strerror or exc}; "
                         "give a writable folder with -o") from None
    mpath = out_dir / MANIFEST_FILE
    if os.path.lexists(mpath) and not mpath.is_file():
        lock.close()
        raise UsageError(f"'{mpath}' is not a file; remove or rename it (convert writes the artifacts' sha256 "
                         "there), or choose another -o")
    with lock:
        # the user's own manifest.json or same-named files are kept: refused before anything is written
        refuse_foreign_files(out_dir, {f.name: artifact_filename(f) for f in options.formats})
        return _convert_locked(run, out_dir, options, progress, on_result)


def _convert_locked(run, out_dir: Path, options: ConvertOptions, progress: ProgressCallback | bool | None,
                    on_result: Callable[[ArtifactResult], None] | None) -> Manifest:
    """convert_run's work, with the lock on `out_dir` held."""
    from edgeproof.convert.calibration import calibration_batch, describe
    from edgeproof.convert.keras_model import source_sha256
    from edgeproof.convert.onnx_export import check_opset
    from edgeproof.train.tf_quiet import import_tensorflow

    import_tensorflow("edgeproof convert")
    fmts = options.formats
    with _quiet():
        if any(f.family == "onnx" for f in fmts):
            check_opset(options.opset)  # the installed tf2onnx's upper bound (ConvertOptions checked the rest)
        calib, calib_sha, calib_info = None, None, None
        if options.calibrated:
            calib, calib_sha, skipped = calibration_batch(run, options.calib_count, seed=options.seed)
            calib_info = describe(calib, calib_sha, skipped, options.calib_count, run.calib_dir)
        source_sha = source_sha256(run.model_path)
        model = run.keras_model("edgeproof convert")

    _clean_stale(out_dir)
    manifest = load_manifest(out_dir)
    manifest.source, manifest.source_sha256 = str(run.model_path.resolve()), source_sha
    manifest.versions, manifest.updated = versions(), _now()
    if calib_info is not None:
        manifest.calibration = calib_info
    with scratch_dir("convert") as tmp, Progress(progress) as bar:
        job = _Job(run, model, manifest, calib, options, tmp)
        task = bar.add_task("converting", total=len(fmts))
        for fmt in fmts:
            bar.update(task, description=f"converting {fmt.name}")
            try:
                result = _convert_one(fmt, job, source_sha, calib_sha)
                manifest.put(result)
                manifest.write()
            except Exception as exc:
                if not no_space(exc):
                    raise
                # Every later format would fail the same way. The temp file is gone; the steps of
                # convert.manifest leave each artifact matching its entry (or an unchecked 'pending' one).
                raise EdgeproofError(
                    f"{fmt.name}: no space left on the device ({getattr(exc, 'filename', None) or out_dir}); free "
                    f"some space or choose another -o, then re-run (what '{out_dir}' already holds is complete and "
                    "matches manifest.json)") from None
            if on_result:
                on_result(result)
            bar.advance(task)
    return manifest


def _clean_stale(out_dir: Path) -> None:
    """Remove temp files of killed earlier conversions into `out_dir` (only names edgeproof writes)."""
    for name in [artifact_filename(f) for f in FORMATS.values()] + [MANIFEST_FILE, "edgeproof"]:
        for line in clean_stale(out_dir, name):
            log.info("note: %s: %s (left by a killed earlier run)", out_dir, line)


def _convert_one(fmt: Format, job: _Job, source_sha: str, calib_sha: str | None) -> ArtifactResult:
    dest = job.out_dir / artifact_filename(fmt)
    t0 = time.perf_counter()
    result = ArtifactResult(format=fmt.name, path=None, status="failed", options=_options(fmt, job),
                            calibration_sha256=calib_sha if fmt.calibrated else None,
                            source_sha256=source_sha, created=_now())
    try:
        with _quiet():
            writer = _write_tflite if fmt.family == "tflite" else _write_onnx
            result.notes, sha = writer(fmt, job, dest, source_sha, calib_sha)
        result.options = _options(fmt, job)  # with the recipe the int8 search chose
        if fmt.name in job.chosen:
            result.notes.insert(0, job.chosen[fmt.name][1].line())
        result.status, result.path = "ok", dest
        result.sha256, result.bytes = sha, dest.stat().st_size
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # one format failing never stops the others  # noqa: BLE001
        if no_space(exc):  # not this format's fault: keep the earlier artifact (convert_run stops)
            raise
        result.error = failure_reason(fmt.name, exc)
        if dest.exists():  # never leave an artifact that no longer matches its manifest entry
            dest.unlink()
            result.notes.append(f"removed the earlier {dest.name}, made from a previous conversion")
    result.seconds = round(time.perf_counter() - t0, 3)
    return result


__all__ = ["FORMATS", "convert_run"]
