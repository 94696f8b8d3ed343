"""Quantization triage for a failing int8 artifact: name the worst layers, and with `fix` re-export.

TFLite (tflite-int8, edgetpu): per-layer error from QuantizationDebugger (triage_tflite); ONNX (onnx-int8):
per-tensor error of every QDQ pair (triage_onnx). With `fix`, parity.fix_ladder re-exports the artifact with
variants in order of cost (calibration, protected tensors, int16x8, the named layers in float) and stops at
the first one that passes; each is written to REPORT_DIR/fixed/ and judged exactly like the original (same
images, same tolerance), so before/after accuracy, agreement, size and latency sit side by side.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeproof.errors import EdgeproofError
from edgeproof.formats import FORMATS, Tolerance, artifact_filename
from edgeproof.parity.layer_error import LayerError

TRIAGE_FORMATS = tuple(f.name for f in FORMATS.values() if f.calibrated)  # full-integer: per-layer ranges
MAX_WORST = 3


@dataclass
class TriageResult:
    artifact: str
    format: str
    tool: str
    layers: list[LayerError] = field(default_factory=list)
    fixes: list = field(default_factory=list)  # runner.Row per re-exported variant
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    before: Any = None  # the artifact's row as judged (runner.Row), shown next to the fixes

    @property
    def worst(self) -> list[LayerError]:
        sus = [le for le in self.layers if le.suspect]
        return sus[:MAX_WORST] if sus else self.layers[:1]

    def to_dict(self) -> dict:
        return {"artifact": self.artifact, "format": self.format, "tool": self.tool, "error": self.error,
                "worst": [le.label() for le in self.worst], "suspect_count": sum(le.suspect for le in self.layers),
                "layers": [le.to_dict() for le in self.layers], "notes": self.notes,
                "fixes": [dict(r.to_dict(), variant=getattr(r, "variant", ""), step=getattr(r, "step", ""),
                               recipe=getattr(r, "recipe", {}), edgetpu_full=getattr(r, "edgetpu_full", None),
                               real_format=getattr(r, "real_format", None),
                               latency_ratio=getattr(r, "latency_ratio", None),
                               side_by_side_ms=getattr(r, "side_by_side_ms", None),
                               rejected=getattr(r, "rejected", None))
                          for r in self.fixes]}


def calibration_for(run, artifacts_dir: Path) -> tuple[np.ndarray, list[str]]:
    """The artifact's own calibration batch (count from manifest.json; its sha256 is checked)."""
    from edgeproof.convert.calibration import calibration_batch
    from edgeproof.runtime.integrity import MANIFEST_FILE, read_manifest

    notes, count, sha = [], 200, None
    data, why = read_manifest(artifacts_dir / MANIFEST_FILE)
    cal = data.get("calibration") if isinstance(data, dict) else None
    unreadable = bool(why) or (data is not None and not (isinstance(data, dict) and isinstance(cal, (dict, type(None)))))
    if isinstance(cal, dict):
        try:
            count, sha = int(cal.get("requested") or cal.get("used") or 200), cal.get("sha256")
        except (ValueError, TypeError):
            unreadable = True
    if unreadable:
        notes.append("manifest.json unreadable; calibrating with 200 images")
    batch, digest, _ = calibration_batch(run, count, seed=0)
    if sha and digest != sha:
        notes.append("calibration batch differs from the one recorded in manifest.json (seed or data changed); "
                     "per-layer errors are measured on the current train split")
    return batch, notes


def _suspect_names(layers: list[LayerError]) -> list[str]:
    sus = [le for le in layers if le.suspect][:MAX_WORST] or layers[:1]
    return list(dict.fromkeys(n for le in sus for n in le.exclude))


def is_onnx_source(model) -> bool:
    return hasattr(model, "save_onnx")  # convert.onnx_source.OnnxSource


def layer_names(model) -> list[str]:
    """What triage maps tensor names to: the Keras layers, or an ONNX source's node names."""
    if is_onnx_source(model):
        return [n.name for n in model.proto.graph.node if n.name]
    return [layer.name for layer in model.layers]


def tf_model(model, calib: np.ndarray, work: Path):
    """What the TFLite debugger and re-exports start from: the Keras model, or for an ONNX source the
    SavedModel onnx2tf makes of it (exported once into `work`), as convert's TFLite formats were made."""
    if not is_onnx_source(model):
        return model
    path = work / "onnx2tf_saved_model"
    if not path.exists():
        model.export(str(path), verbose=False, calib=calib)
    return str(path)


ONNX2TF_NAMES = ("the TFLite tensor names are onnx2tf's (tf.math.add_5, ...), which do not map back to the source's "
                 "ONNX nodes: no layer is named; --fix keeps these tensors in float by the same names")


def triage_artifact(row, keras_model, run, artifacts_dir: Path, batches, reference: np.ndarray, tol: Tolerance,
                    fix: bool, out_dir: Path, also: tuple[str, ...] = (), prefer: str = "balanced",
                    work: Path | None = None, qat=None) -> TriageResult:
    """Per-layer error of `row`'s artifact; with `fix`, the ladder (a fix must pass on row.backend and on `also`).
    work: a scratch folder (an ONNX source's SavedModel goes there; a temporary one when None).
    qat: the parity run's parity.qat_rung.QatRung (one fine-tune shared by every artifact), the ladder's last rung."""
    if work is None:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="edgeproof-triage-") as tmp:
            return triage_artifact(row, keras_model, run, artifacts_dir, batches, reference, tol, fix, out_dir,
                                   also, prefer, Path(tmp), qat)
    fmt = FORMATS[row.format]
    res = TriageResult(artifact=row.artifact, format=fmt.name, before=row,
                       tool="tf.lite.experimental.QuantizationDebugger" if fmt.family == "tflite"
                       else "QDQ pair error (onnxruntime)")
    try:
        calib, notes = calibration_for(run, artifacts_dir)
        res.notes += notes
        if fmt.family == "tflite":
            from edgeproof.parity import triage_tflite

            res.layers = triage_tflite.layer_errors(tf_model(keras_model, calib, work), calib, layer_names(keras_model))
            if is_onnx_source(keras_model):
                res.notes.append(ONNX2TF_NAMES)
        else:
            from edgeproof.parity import triage_onnx

            made_by = {o: n.name for n in keras_model.proto.graph.node for o in n.output if n.name} \
                if is_onnx_source(keras_model) else None
            res.layers = triage_onnx.layer_errors(row.path, calib, layer_names(keras_model), made_by)
        if not any(le.suspect for le in res.layers):
            res.notes.append("no layer is over the suspect thresholds; the worst one is shown")
        if fmt.family == "tflite" and fmt.recipe.compiler == "edgetpu":
            res.notes.append("edgetpu: layers kept in float (denylist) or int16 run on the CPU, not the Edge TPU; "
                             "edgetpu_compiler maps only int8 ops")
        if fix and res.layers:
            res.fixes = _fixes(row, fmt, tf_model(keras_model, calib, work), run, res, artifacts_dir, batches,
                               reference, tol, out_dir, also, prefer, qat)
            if getattr(fmt.recipe, "compiler", None) == "edgetpu":
                from edgeproof.parity.fix_ladder import edgetpu_line

                res.notes.append(edgetpu_line(res.fixes))
    except EdgeproofError as exc:
        res.error = str(exc)
    except Exception as exc:  # noqa: BLE001 - triage is diagnostics: report, never crash the gate
        res.error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
    return res


def _fixes(row, fmt, keras_model, run, res: TriageResult, artifacts_dir: Path, batches, reference, tol,
           out_dir: Path, also: tuple[str, ...], prefer: str = "balanced", qat=None) -> list:
    """The fix ladder (parity.fix_ladder) on a fresh, larger calibration batch from the run's train split; its
    last rung the qat fine-tune (`qat`, when the run has labeled training images and the qat extra is here).
    For edgetpu a variant that keeps ops in float or int16 is turned down as it passes, so the ladder goes on to
    an all-integer one (promote would refuse it: the file would no longer be Edge TPU-ready)."""
    from edgeproof.convert.calibration import calibration_batch
    from edgeproof.parity import fix_ladder

    calib, _, _ = calibration_batch(run, fix_ladder.FIX_CALIB_COUNT, seed=0)
    names = _suspect_names(res.layers)
    tuner = qat.tuner() if qat is not None else None
    if fmt.family == "tflite":
        variants = fix_ladder.tflite_variants(fmt, keras_model, calib, _io_type(row.path), names,
                                              out_dir / "fixed", qat=tuner)
    else:
        fp32 = artifacts_dir / artifact_filename(FORMATS["onnx-fp32"])
        if not fp32.is_file():
            raise EdgeproofError(f"re-quantizing needs {fp32.name} next to {row.artifact}")
        variants = fix_ladder.onnx_variants(fmt, row.path, fp32, calib, names, qat=tuner)
    from edgeproof.parity.promote import acceptor

    accept = acceptor(prefer, row.path, row.backend, batches.get)
    if getattr(fmt.recipe, "compiler", None) == "edgetpu":
        accept = _edgetpu_only(accept)
    return fix_ladder.run_ladder(row, fmt, variants, calib, batches, reference, tol, out_dir, also, accept=accept)


def _edgetpu_only(accept):
    def take(fixed) -> str | None:
        if not getattr(fixed, "edgetpu_full", True):
            fixed.rejected = ("keeps ops in float or int16, which the Edge TPU cannot run (the file would no longer "
                              "be Edge TPU-ready): the ladder goes on")
            return fixed.rejected
        return accept(fixed)

    return take


def _io_type(path: Path) -> str:
    from edgeproof.runtime.metadata import read_metadata

    meta = read_metadata(path)
    dtype = meta.input.dtype if meta is not None and meta.input is not None else "int8"
    return dtype if dtype in ("int8", "uint8", "float32") else "int8"
