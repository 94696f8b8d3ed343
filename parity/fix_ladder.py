"""`parity --fix`: re-export a failing int8 artifact with variants in order of cost, stop at the first that passes.

1. calibration — the run's train split with more images (FIX_CALIB_COUNT) and every calibration recipe the
   search knows (TFLite: converter PTQ, LiteRT Quantizer min/max and OCTAV; ONNX: MinMax, Entropy, Percentile,
   Distribution);
2. protect — the PROTECT_K tensors with the lowest SNR in the quantizer's own validation (LiteRT Quantizer
   `validate` for TFLite, onnxruntime `qdq_loss_debug` for ONNX) given int16 activations, then kept float;
3. int16x8 — int16 activations, int8 weights everywhere (TFLite reference kernels: slow);
4. float layers — the layers triage named (QuantizationDebugger / QDQ pair error) kept in float;
5. qat — when labeled images are given (a convert.qat.Tuner): a short quantization-aware fine-tune, then the
   format's own recipe on the fine-tuned weights (every op as integer as the recipe makes it: for edgetpu it
   stays fully on the Edge TPU).
Each variant is written to REPORT_DIR/fixed/ and judged exactly like the original (same images, backend,
tolerance). For edgetpu only the calibration variants keep every op int8, i.e. fully on the Edge TPU: float or
int16 ops run on the CPU, so `--promote` never puts such a variant in place of the edgetpu artifact.

A variant keeps its own format's name: the int16x8 step of a TFLite int8 format is a `tflite-int16x8` file
(written as model-fix-N-int16x8.tflite-int16x8.tflite and, promoted, as model.tflite-int16x8.tflite); ONNX with
int16 activations has no row in the format table, so its file names no format and it is never promoted. Every
judged variant carries its p50 latency next to its fidelity and its ratio to the artifact it would replace
(`latency_ratio`); `accept` (parity.promote.Preference) can turn down a passing variant, which then stays in the
rows with `rejected` saying why, and the ladder goes on. convert climbs the same ladder on its held-out
calibration images (parity.escalate), with its own `judge`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from edgeproof.convert.quant_search import Candidate
from edgeproof.formats import FORMATS, Format, artifact_filename

FIX_CALIB_COUNT = 500
PROTECT_K = 3
STEPS = ("calibration", "protect", "int16x8", "float layers", "qat")


NO_FORMAT = ""  # Variant.real_format of a file no format in the table describes (never promoted)


@dataclass
class Variant:
    step: str
    candidate: Candidate
    edgetpu_full: bool  # every op int8 (what edgetpu_compiler can map); meaningful for the edgetpu format
    real_format: str | None = None  # the format the file really is; None: the ladder's own; NO_FORMAT: none

    @property
    def name(self) -> str:
        return f"{self.step}: {self.candidate.name}"

    def format_of(self, fmt: Format) -> str:
        return fmt.name if self.real_format is None else self.real_format


def _worst(snr: dict[str, float], k: int = PROTECT_K) -> list[str]:
    return [name for name, _ in sorted(snr.items(), key=lambda kv: kv[1])[:k]]


def tflite_variants(fmt: Format, keras_model, calib: np.ndarray, io_type: str, float_layers: list[str],
                    tmp: Path, qat=None) -> Iterator[Variant]:
    from edgeproof.convert import int8_recipes, litert_quant
    from edgeproof.convert.tflite import to_tflite

    lq = int8_recipes.litert_recipe(fmt.name, io_type) if litert_quant.available() else None
    int16 = "INT16" in (fmt.recipe.ops or "")
    fp32 = to_tflite(keras_model, "tflite-fp32") if lq or fmt.recipe.compiler else None
    for c in int8_recipes.tflite_candidates(fmt.name, keras_model, fp32 if lq else None, io_type):
        yield Variant("calibration", c, True)
    if fp32 is not None and litert_quant.available():
        probe = litert_quant.quantize(fp32, calib, lq or "static_wi8_ai8")  # the quantizer's own model, to validate
        worst = _worst(litert_quant.tensor_snr(fp32, probe, calib[: min(len(calib), 32)]))
        if worst and lq:
            for how in (("float",) if int16 else ("int16", "float")):
                yield Variant("protect", int8_recipes.litert_candidate(fp32, lq, protect=[[t, how] for t in worst]),
                              False)
        elif worst:  # uint8/float I/O (edgetpu): the converter keeps them float
            yield Variant("protect", int8_recipes.converter_candidate(fmt.name, keras_model, io_type,
                                                                      denylisted_nodes=worst), False)
    if not int16:  # a tflite-int16x8 file (reference kernels for int16 activations in LiteRT and OpenVINO)
        yield Variant("int16x8", int8_recipes.converter_candidate(fmt.name, keras_model, "float32", int16x8=True),
                      False, real_format="tflite-int16x8")
    if float_layers:
        yield Variant("float layers", int8_recipes.converter_candidate(fmt.name, keras_model, io_type,
                                                                       denylisted_nodes=float_layers), False)
    if qat is not None:
        yield qat_variant(fmt, qat, io_type)


def qat_variant(fmt: Format, tuner, io_type: str = "int8") -> Variant:
    """The qat rung (convert.qat): the format's own recipe on QAT-fine-tuned weights."""
    from edgeproof.convert import qat

    if fmt.family == "tflite":
        return Variant("qat", qat.tflite_candidate(fmt.name, tuner, io_type), True)
    return Variant("qat", qat.onnx_candidate(fmt.recipe, tuner), True)


def onnx_variants(fmt: Format, artifact: Path, fp32_path: Path, calib: np.ndarray, float_nodes: list[str],
                  qat=None) -> Iterator[Variant]:
    from edgeproof.convert import int8_recipes
    from edgeproof.parity.triage_onnx import tensor_sqnr

    variants = (("MinMax", True), ("Entropy", True), ("Percentile", True), ("Distribution", True))
    for c in int8_recipes.onnx_candidates(fmt.name, fp32_path, variants):
        yield Variant("calibration", c, True)
    base = fmt.recipe
    worst = _worst(tensor_sqnr(artifact, fp32_path, calib[: min(len(calib), 32)]))
    if worst:
        yield Variant("protect", int8_recipes.onnx_candidate(fp32_path, base, int16_tensors=worst), False)
        producers = _producers(artifact, worst)
        if producers:
            yield Variant("protect", int8_recipes.onnx_candidate(fp32_path, base, exclude=producers), False)
    yield Variant("int16x8", int8_recipes.onnx_candidate(fp32_path, replace(base, activations="int16")), False,
                  real_format=NO_FORMAT)  # int16 activations: no ONNX row in the format table
    if float_nodes:
        yield Variant("float layers", int8_recipes.onnx_candidate(fp32_path, base, exclude=float_nodes), False)
    if qat is not None:
        yield qat_variant(fmt, qat)


def _producers(qdq_path: Path, tensors: list[str]) -> list[str]:
    import onnx

    g = onnx.load(str(qdq_path)).graph
    want = set(tensors)
    return [n.name for n in g.node if n.name and want & set(n.output)
            and n.op_type not in ("QuantizeLinear", "DequantizeLinear")]


def variant_path(fixed_dir: Path, fmt: Format, i: int, v: Variant) -> Path:
    """REPORT_DIR/fixed/model-fix-<i>-<step>.<its real format><suffix>: the name never claims another format."""
    stem = f"model-fix-{i}-{v.step.replace(' ', '-')}"
    real = v.format_of(fmt)
    return fixed_dir / (artifact_filename(FORMATS[real], stem=stem) if real else f"{stem}{fmt.suffix}")


Judge = Callable[[Path, Format], object]  # (variant file, the format it is judged as) -> a runner.Row
Accept = Callable[[object], str | None]  # a passing row -> None (take it) or why it is turned down


def parity_judge(row, batches, reference, tol, also: tuple[str, ...] = ()) -> Judge:
    """parity --fix's judge: the failing row's backend, then every backend in `also` (see run_ladder)."""
    from edgeproof.parity.runner import evaluate

    def judge(dest: Path, fmt: Format):
        fixed = evaluate(dest, fmt, row.backend, batches, reference, tol, listed=True)
        for other in also if fixed.status == "pass" else ():
            judged = evaluate(dest, fmt, other, batches, reference, tol, listed=other in fmt.backends)
            if judged.status != "pass":
                return judged
        return fixed

    return judge


def run_ladder(row, fmt: Format, variants: Iterator[Variant], calib: np.ndarray, batches, reference, tol,
               out_dir: Path, also: tuple[str, ...] = (), judge: Judge | None = None,
               accept: Accept | None = None, source: str = "the run's train split, stratified (parity --fix)") -> list:
    """Build, label and judge variants in order; stop after the first that passes (and `accept` takes).
    Returns runner.Row's, each with variant, step, recipe, real_format, latency_ratio and rejected.

    A variant passes when it passes on the failing row's backend and then on every backend in `also` (the
    others that judged the original artifact): a fix that repairs one runtime and breaks another is no fix.
    The zoo's ResNet50 onnx-int8 with int16 activations agreed on 191/192 images in onnxruntime and on 131 in
    OpenVINO. The row of a variant that fails elsewhere is that backend's row. `judge` replaces that rule
    (convert judges on its held-out calibration images)."""
    judge = judge or parity_judge(row, batches, reference, tol, also)
    fixed_dir = out_dir / "fixed"
    fixed_dir.mkdir(parents=True, exist_ok=True)
    before_ms = getattr(row, "latency_p50_ms", None)
    out = []
    i = 0
    while True:
        try:
            v = next(variants)
        except StopIteration:
            break
        except Exception as exc:  # noqa: BLE001 - a variant generator that fails (e.g. validation) ends the ladder
            out.append(_error_row(row, fmt, fixed_dir / "(variants)", f"listing the next variants failed: {exc}"))
            break
        i += 1
        dest = variant_path(fixed_dir, fmt, i, v)
        judged_as = FORMATS.get(v.format_of(fmt)) or fmt
        try:
            built = v.candidate.build(calib, fixed_dir / f".build-{i}")
            _write_with_meta(built, dest, row.path, v)
            built.unlink(missing_ok=True)
            fixed = judge(dest, judged_as)
        except Exception as exc:  # noqa: BLE001 - one failing variant must not hide the next
            fixed = _error_row(row, fmt, dest, f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}")
        fixed.variant = v.name  # type: ignore[attr-defined]
        fixed.step = v.step  # type: ignore[attr-defined]
        fixed.real_format = v.format_of(fmt)  # type: ignore[attr-defined]
        fixed.recipe = {**v.candidate.options, "calibration_images": len(calib),  # type: ignore[attr-defined]
                        "calibration_source": source}
        fixed.edgetpu_full = v.edgetpu_full  # type: ignore[attr-defined]
        after_ms = getattr(fixed, "latency_p50_ms", None)
        fixed.latency_ratio = after_ms / before_ms if after_ms and before_ms else None  # type: ignore[attr-defined]
        fixed.rejected = None  # type: ignore[attr-defined]
        out.append(fixed)
        if fixed.status == "pass":
            fixed.rejected = accept(fixed) if accept is not None else None  # type: ignore[attr-defined]
            if fixed.rejected is None:
                break
    return out


def _error_row(row, fmt: Format, dest: Path, why: str):
    from edgeproof.parity.runner import Row

    r = Row(dest.name, dest, fmt.name, row.backend, "error", why)
    r.variant, r.step, r.recipe, r.edgetpu_full = "(none)", "", {}, False  # type: ignore[attr-defined]
    r.real_format, r.latency_ratio, r.rejected = fmt.name, None, None  # type: ignore[attr-defined]
    return r


def _write_with_meta(built: Path, dest: Path, source_artifact: Path, v: Variant) -> Path:
    """The variant with the source artifact's labels/contract, and the recipe it was made with."""
    from edgeproof.atomic import write_bytes
    from edgeproof.contract import TensorSpec
    from edgeproof.runtime.metadata import read_metadata

    meta = read_metadata(source_artifact)
    fix = {"step": v.step, "variant": v.candidate.name}
    if meta is not None:
        meta.extra = {**meta.extra, "options": v.candidate.options, "triage_fix": fix}
        if v.real_format:  # an int16x8 variant says so in its metadata too, not only in its name
            meta.format = v.real_format
    if dest.suffix == ".onnx":
        import onnx

        from edgeproof.runtime.backends.onnx_graph import proto_io
        from edgeproof.runtime.metadata import set_onnx_metadata

        proto = onnx.load(str(built))
        if meta is not None:
            meta.input, meta.output = proto_io(proto)
            set_onnx_metadata(proto, meta)
        return write_bytes(dest, proto.SerializeToString())
    from edgeproof.convert.tflite import read_specs
    from edgeproof.runtime.metadata import tflite_with_metadata

    data = built.read_bytes()
    if meta is not None:
        ispec, ospec = read_specs(data)
        meta.input, meta.output = TensorSpec(**ispec), TensorSpec(**ospec)
        data = tflite_with_metadata(data, meta)
    return write_bytes(dest, data)


def edgetpu_line(fixes: list) -> str:
    full = [f.variant for f in fixes if getattr(f, "edgetpu_full", False)]
    cpu = [f.variant for f in fixes if not getattr(f, "edgetpu_full", False) and getattr(f, "step", "")]
    return ("edgetpu: fully on the Edge TPU: " + (", ".join(full) or "none of the variants tried") +
            "; partly on the CPU (float or int16 ops): " + (", ".join(cpu) or "none"))


__all__ = ["FIX_CALIB_COUNT", "STEPS", "FORMATS", "Variant", "onnx_variants", "parity_judge", "qat_variant",
           "run_ladder", "tflite_variants", "variant_path"]
