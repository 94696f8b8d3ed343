"""The format table: the single source of truth for artifact formats and runtime backends.

CLI choices, conversion dispatch, suffix-based loading and test parametrization all read from
here. Tolerances are data on the format (parity reads them; flags may override them).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from edgeproof.errors import UsageError


@dataclass(frozen=True)
class Tolerance:
    """Parity gate for one format against the Keras reference.

    max_abs: largest allowed |Δ| of output probabilities (None: not gated on tensors).
    min_top1_agreement: fraction of images whose top-1 equals Keras' top-1.
    max_delta_acc_pp: largest allowed accuracy LOSS against Keras in percentage points, one-sided (a gain never
      fails) and only when the exact paired test says the loss is not chance (edgeproof.parity.significance).
    min_snr_db: floor of the probabilities' SNR against Keras (None: no floor); an artifact whose scores are
      mostly noise fails even where its top-1 happens to hold.
    near_tie_max_margin: a flip where Keras' own top-1 - top-2 margin is below this artifact's measured
      noise (capped at this value, probability units) is a near-tie and counts as agreement for
      min_top1_agreement (never for Δaccuracy); None: strict, every flip counts (edgeproof.parity.flips).
    """

    max_abs: float | None
    min_top1_agreement: float
    max_delta_acc_pp: float | None
    near_tie_max_margin: float | None = None
    min_snr_db: float | None = None


FLOAT32 = Tolerance(max_abs=1e-5, min_top1_agreement=1.0, max_delta_acc_pp=0.0)
# fp16 weights: measured max|Δ| 1.3e-3 (tiny_cnn on shapes) and 3.4e-3 (demo, textures, 210 images,
# mean|Δ| 1e-5, SNR 70 dB, 210/210 agreement) — pure weight rounding, so 1e-3 was too tight (parity, issue 5).
# Near-ties: fp16 rounds each weight by up to 2^-11 (4.9e-4) of itself, which moves a probability by about 1e-3;
# an image that Keras itself decides by less than that can flip. benchmarks/fidelity_seeds.py found exactly that
# on one seed in ten of each dataset and nothing else (every backend alike): shapes seed 1, one image whose Keras
# margin was 0.00023 against a measured fp16 margin noise (p95) of 0.0040, max|Δ| 0.0049, SNR 53.8 dB; textures
# seed 4, margin 0.00065 against noise 0.0014, max|Δ| 0.0013, SNR 66.2 dB. Strict, each failed at 191/192 and
# 251/252. So fp16 takes the near-tie rule of the int8 formats, capped at its own max_abs (a flip at a Keras
# margin above what one score may move is never excused); agreement stays 100 % for every other image, and
# max_abs still fails any artifact whose noise is beyond weight rounding (parity.flips).
FLOAT16 = Tolerance(max_abs=1e-2, min_top1_agreement=1.0, max_delta_acc_pp=0.0, near_tie_max_margin=1e-2)
# int8: a flip counts against agreement unless Keras' margin was under the artifact's measured margin noise,
# capped at 0.05 (5 probability points): 189/192 with 3 near-ties on shapes-3-epochs passes, a model
# calibrated on black images (confident flips, |Δacc| of tens of pp) still fails (issue 14).
# The SNR floor, 12 dB (noise energy 6 % of the signal: a confident image's top score moved by about 0.25): the
# healthy int8 recipes measure 37-44 dB, the LiteRT Quantizer's coarser int8 softmax 17-21 dB at 190/192, and the
# broken cells of issue 22's run A 9.3-11.8 dB (165/192). Float formats are held by max|Δ| instead.
INT8_SNR_FLOOR_DB = 12.0
INT8 = Tolerance(max_abs=None, min_top1_agreement=0.99, max_delta_acc_pp=1.0, near_tie_max_margin=0.05,
                 min_snr_db=INT8_SNR_FLOOR_DB)
# int16 activations / int8 weights: only weight rounding is left (LiteRT: MobileNetV2 top-1 0.7137 vs float 0.718).
# Measured on shapes-3-epochs (192 images): 190/192 with both flips near-ties, +0.52 pp (one image), SNR 42 dB vs
# int8's 39 dB: the same agreement/Δacc limits as int8 (one image is 0.52 pp there), a tighter near-tie cap.
INT16X8 = Tolerance(max_abs=None, min_top1_agreement=0.99, max_delta_acc_pp=1.0, near_tie_max_margin=0.03,
                   min_snr_db=INT8_SNR_FLOOR_DB)


@dataclass(frozen=True)
class TFLiteRecipe:
    """TFLiteConverter settings of one format, by their TensorFlow names.

    convert.tflite applies exactly these fields and the manifest's `options` are these fields (plus
    the run's choices: I/O type, calibration image count), so the two can never disagree.
    """

    optimizations: tuple[str, ...] = ()  # tf.lite.Optimize members
    supported_types: tuple[str, ...] = ()  # target_spec.supported_types (tf dtype names)
    ops: str | None = None  # tf.lite.OpsSet member for target_spec.supported_ops
    io_types: tuple[str, ...] = ()  # model I/O types it accepts, default first; () keeps float32 I/O
    calibrated: bool = False  # full-integer: activation ranges from a representative dataset
    # TF >= 2.17 quantizes dense weights per channel (FULLY_CONNECTED v12), which the last
    # tflite-runtime wheel (2.14) cannot load; per-tensor dense weights keep it loadable everywhere.
    dense_per_tensor: bool = False
    compiler: str | None = None  # a post-conversion compiler step ("edgetpu": edgetpu_compiler when on PATH)
    # When `ops` has no kernel for an op (the converter says "not yet supported for op"), convert again with
    # TFLITE_BUILTINS added, so that op alone stays float between QUANTIZE/DEQUANTIZE; convert's notes and the
    # artifact's metadata ("float_ops") name them. TensorFlow documents this for 16x8 (HARD_SWISH has no 16x8
    # kernel, for one).
    float_fallback: bool = False
    # The first convolution computes in float between QUANTIZE/DEQUANTIZE, the rest in int8. Measured (issue 22,
    # benchmarks/fidelity_seeds.py): it is where the int8 error of our models is made. It sees raw-scaled pixels
    # (Rescaling 1/255: a large DC component) through BatchNorm-folded weights, so the rounding of its 27 weights
    # per channel is amplified: on 13 trained models, int8 weights in that layer alone cost 25.7-46.7 dB of
    # probability SNR (up to 4 of 192 top-1 flips), every other layer's together 46-54 dB with 0-1 flips. Per-tensor
    # against per-channel only moves the loss between seeds (seed 4: 40.8 vs 25.5 dB, seed 3: 27.1 vs 38.3 dB).
    float_first_conv: bool = False

    def io_type(self, requested: str) -> str | None:
        """The I/O type used when the run asks for `requested` (e.g. --int8-io): requested if this
        recipe accepts it, else its default; None for float I/O."""
        if not self.io_types:
            return None
        return requested if requested in self.io_types else self.io_types[0]

    def options(self, requested_io: str) -> dict[str, Any]:
        """The settings as recorded in the manifest and in the artifact's metadata."""
        out: dict[str, Any] = {"converter": "tf.lite.TFLiteConverter"}
        if self.optimizations:
            out["optimizations"] = list(self.optimizations)
        if self.supported_types:
            out["supported_types"] = list(self.supported_types)
        if self.ops:
            out["ops"] = self.ops
        if self.io_types:
            out["io_type"] = self.io_type(requested_io)
        if self.dense_per_tensor:
            out["dense_weights"] = "per-tensor (tflite-runtime 2.14 compatible)"
        if self.compiler:
            out["compiler"] = self.compiler
        if self.float_fallback:
            out["float_fallback"] = "TFLITE_BUILTINS for ops without a kernel in 'ops' (named in the notes)"
        if self.first_conv_float(requested_io):
            out["float_first_conv"] = True
        return out

    def first_conv_float(self, requested_io: str) -> bool:
        """float_first_conv where it applies: the MLIR quantizer that keeps an op float writes int8 or float32 I/O
        only, so uint8 I/O (--int8-io uint8) keeps every op integer."""
        return self.float_first_conv and self.io_type(requested_io) != "uint8"


@dataclass(frozen=True)
class OnnxRecipe:
    """tf2onnx export, then (when quant_format is set) onnxruntime.quantization.quantize_static."""

    quant_format: str | None = None  # onnxruntime.quantization.QuantFormat member; None: float export
    per_channel: bool = False
    activations: str | None = None  # "int8" | "uint8" (QuantType QInt8 / QUInt8)
    weights: str | None = None
    calibrated: bool = False
    calibrate_method: str = "MinMax"  # onnxruntime.quantization.CalibrationMethod member
    # The first Conv and the nodes before it (the in-graph preprocessing: Rescaling's Mul) left out of quantization.
    # The first Conv: see TFLiteRecipe's field. The Mul: onnxruntime fuses Q -> DQ -> Mul -> Q into its QLinearMul,
    # which costs the probabilities 16 dB (shapes seed 4, first Conv float: 42.8 dB with onnxruntime's graph
    # optimizations off, 26.6 dB with them on, 41.4 dB with the Mul in float; OpenVINO on the same file 43.3 dB).
    float_first_conv: bool = False
    # Op types left out of quantization. Softmax: with the above, 41.4 dB quantized, 43.2 dB in float (onnxruntime's
    # QLinearSoftmax table), on both backends.
    float_op_types: tuple[str, ...] = ()

    def options(self, requested_io: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {"converter": "tf2onnx", "input": "image NHWC, dynamic batch"}
        if self.quant_format:
            out.update(quantizer="onnxruntime.quantization.quantize_static", quant_format=self.quant_format,
                       per_channel=self.per_channel, activations=self.activations, weights=self.weights,
                       calibrate_method=self.calibrate_method)
            if self.float_first_conv:
                out["float_first_conv"] = True
            if self.float_op_types:
                out["float_op_types"] = list(self.float_op_types)
        return out


Recipe = TFLiteRecipe | OnnxRecipe

# Full-integer TFLite: int8 weights and activations, builtin int8 kernels only.
INT8_RECIPE = TFLiteRecipe(optimizations=("DEFAULT",), ops="TFLITE_BUILTINS_INT8",
                           io_types=("int8", "uint8", "float32"), calibrated=True, float_first_conv=True)
# int16 activations / int8 weights (reference kernels; the triage re-export and a tflite-int16x8 row).
INT16X8_RECIPE = TFLiteRecipe(optimizations=("DEFAULT",),
                              ops="EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8",
                              io_types=("int16", "float32"), calibrated=True, float_fallback=True)


@dataclass(frozen=True)
class Format:
    """One artifact format: name, file suffix, family, quantized or not, parity tolerance, description and how
    convert makes it (the backends that run it come from BACKENDS)."""
    name: str
    suffix: str
    family: str  # "tflite" or "onnx": which loader family reads the file
    quantized: bool  # int8 weights and/or activations
    tolerance: Tolerance
    description: str
    recipe: Recipe = field(compare=False, hash=False)  # how convert makes it (data, read by the converters)

    @property
    def calibrated(self) -> bool:
        """Full-integer: activation ranges calibrated on training images (needs a calibration set)."""
        return self.recipe.calibrated

    @property
    def backends(self) -> tuple[str, ...]:
        """Backends able to load it, preferred first (BACKENDS order; each backend row says what it runs).
        Opt-in backends (the browser ones) are left out: they run only where named."""
        return tuple(b.name for b in BACKENDS.values() if b.runs(self) and not b.opt_in)


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("tflite-fp32", ".tflite", "tflite", False, FLOAT32,
               "TFLite, float32 weights and activations", TFLiteRecipe()),
        Format("tflite-fp16", ".tflite", "tflite", False, FLOAT16,
               "TFLite, float16 weights (dequantized to float32 at load)",
               TFLiteRecipe(optimizations=("DEFAULT",), supported_types=("float16",))),
        Format("tflite-dynamic", ".tflite", "tflite", True, INT8,
               "TFLite, dynamic-range int8 weights, float activations",
               TFLiteRecipe(optimizations=("DEFAULT",), dense_per_tensor=True)),
        Format("tflite-int8", ".tflite", "tflite", True, INT8,
               "TFLite int8 (TFLITE_BUILTINS_INT8 kernels, the first convolution in float), calibrated",
               INT8_RECIPE),
        Format("tflite-int16x8", ".tflite", "tflite", True, INT16X8,
               "TFLite, int16 activations / int8 weights, calibrated (reference kernels: accurate but slow)",
               INT16X8_RECIPE),
        Format("edgetpu", ".tflite", "tflite", True, INT8,
               "TFLite full-int8 with uint8 I/O, ready for (or compiled by) edgetpu_compiler",
               # every op stays integer: the Edge TPU runs nothing after the first CPU op
               replace(INT8_RECIPE, io_types=("uint8",), compiler="edgetpu", float_first_conv=False)),
        Format("onnx-fp32", ".onnx", "onnx", False, FLOAT32,
               "ONNX (tf2onnx), float32, dynamic batch", OnnxRecipe()),
        Format("onnx-int8", ".onnx", "onnx", True, INT8,
               "ONNX, static int8 QDQ, per-channel; the input rescale, first Conv and Softmax in float (onnxruntime)",
               OnnxRecipe(quant_format="QDQ", per_channel=True, activations="int8", weights="int8",
                          calibrated=True, float_first_conv=True, float_op_types=("Softmax",))),
    )
}


@dataclass(frozen=True)
class Backend:
    """One registry row. Everything else a backend knows (profile options and their validation, host
    checks, its bare benchmark loop, what inspect tries, placement) lives on its class in `target`."""

    name: str
    target: str  # "module:Class", imported only when the backend is used
    family: str  # which file family it reads ("any": both)
    package: str  # import name that must be present
    install: str  # pip line that provides it
    skips: tuple[str, ...] = ()  # formats of its family it cannot run
    # Runs only where named (--backend/--backends), never by default: it starts a headless browser.
    opt_in: bool = False

    def runs(self, fmt: Format) -> bool:
        return self.family in (fmt.family, "any") and fmt.name not in self.skips

    def load_class(self) -> type:
        """The backend class (imports its module; the runtime package itself is imported by load())."""
        import importlib

        from edgeproof.errors import EdgeproofError

        module_name, cls_name = self.target.split(":")
        try:
            return getattr(importlib.import_module(module_name), cls_name)
        except ImportError as exc:
            raise EdgeproofError(f"backend '{self.name}' is not available: {exc}; {self.install}") from None


BACKENDS: dict[str, Backend] = {
    b.name: b
    for b in (
        Backend("litert", "edgeproof.runtime.backends.litert:LiteRTBackend", "tflite", "ai_edge_litert",
                "pip install ai-edge-litert   (or legacy: pip install tflite-runtime 'numpy<2')"),
        Backend("onnxruntime", "edgeproof.runtime.backends.onnxrt:OnnxRuntimeBackend", "onnx", "onnxruntime",
                "pip install onnxruntime"),
        Backend("opencv", "edgeproof.runtime.backends.opencv_dnn:OpenCVBackend", "onnx", "cv2",
                "pip install opencv-python-headless", skips=("onnx-int8",)),
        Backend("openvino", "edgeproof.runtime.backends.openvino:OpenVINOBackend", "any", "openvino",
                "pip install 'edgeproof[openvino]'", skips=("edgetpu",)),
        Backend("litert-compiled", "edgeproof.runtime.backends.litert_compiled:LiteRTCompiledBackend", "tflite",
                "ai_edge_litert", "pip install 'ai-edge-litert>=2'",
                skips=("edgetpu", "tflite-int16x8")),  # CompiledModel buffers: 'Unsupported dtype: int16'
        # In headless Chromium (runtime/web): JS tensors are float32/int32/uint8 only, so int8/int16 I/O cannot
        # be fed ("Element type INT8 is not supported"); edgetpu's uint8 I/O can.
        Backend("litertjs", "edgeproof.runtime.backends.litertjs:LiteRTJSBackend", "tflite", "selenium",
                "pip install 'edgeproof[web]' (and Chromium + chromedriver)", skips=("tflite-int8", "tflite-int16x8"),
                opt_in=True),
        Backend("ort-web", "edgeproof.runtime.backends.ortweb:OrtWebBackend", "onnx", "selenium",
                "pip install 'edgeproof[web]' (and Chromium + chromedriver)", opt_in=True),
    )
}


def backend_class(name: str) -> type:
    """The class behind a registered backend name (UsageError for an unknown name)."""
    return get_backend(name).load_class()

SUFFIX_FAMILY = {".tflite": "tflite", ".onnx": "onnx"}


def get_format(name: str) -> Format:
    try:
        return FORMATS[name]
    except KeyError:
        raise UsageError(
            f"unknown format '{name}'; valid formats: {', '.join(FORMATS)} (or 'all')"
        ) from None


def parse_format_list(text: str | list[str] | tuple[str, ...]) -> list[Format]:
    """'all', 'tflite-int8,onnx-fp32' or a list of names -> formats in table order, never guessed."""
    items = text.split(",") if isinstance(text, str) else list(text)
    names = [s.strip() for s in items if s.strip()]
    if not names:
        raise UsageError(f"no format given; valid formats: {', '.join(FORMATS)} (or 'all')")
    if "all" in names:
        return list(FORMATS.values())
    wanted = {get_format(n).name for n in names}
    return [f for f in FORMATS.values() if f.name in wanted]


def get_backend(name: str) -> Backend:
    try:
        return BACKENDS[name]
    except KeyError:
        raise UsageError(f"unknown backend '{name}'; valid backends: {', '.join(BACKENDS)}") from None


def artifact_filename(fmt: Format, stem: str = "model") -> str:
    """model.tflite-int8.tflite: the file name says its format."""
    return f"{stem}.{fmt.name}{fmt.suffix}"


def family_of(path: str | Path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIX_FAMILY:
        if Path(path).is_dir():
            raise UsageError(f"'{path}' is a folder, not a model file; give .tflite or .onnx files (valid: "
                             f"{', '.join(SUFFIX_FAMILY)}), e.g. '{Path(path) / 'model.tflite-int8.tflite'}' or "
                             f"'{Path(path)}/*.tflite'")
        raise UsageError(
            f"cannot load '{path}': unknown model suffix '{suffix or '(none)'}'; "
            f"valid: {', '.join(SUFFIX_FAMILY)} (convert a .keras model with 'edgeproof convert')"
        )
    return SUFFIX_FAMILY[suffix]


def format_of(path: str | Path) -> Format | None:
    """The format named in an artifact file name (model.<format><suffix>), else None."""
    name = Path(path).name
    for fmt in FORMATS.values():
        if name.endswith(f".{fmt.name}{fmt.suffix}"):
            return fmt
    return None


def backend_installed(name: str) -> bool:
    """Whether the backend's package is importable here (checked without importing it)."""
    import importlib.util

    return importlib.util.find_spec(get_backend(name).package) is not None


def artifacts_in(folder: str | Path) -> list[Path]:
    """The .tflite/.onnx files in `folder` (no hidden/temp files), in format-table order, then by name."""
    order = {name: i for i, name in enumerate(FORMATS)}

    def key(p: Path) -> tuple[int, str]:
        fmt = format_of(p)
        return (order[fmt.name] if fmt else len(order), p.name)

    return sorted((p for p in Path(folder).iterdir()
                   if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in SUFFIX_FAMILY), key=key)


def backends_for(path_or_family: str | Path, opt_in: bool = False) -> list[str]:
    """Backends able to read this file family, preferred first (opt_in: with the browser ones)."""
    fam = path_or_family if path_or_family in ("tflite", "onnx") else family_of(path_or_family)
    return [b.name for b in BACKENDS.values() if b.family in (fam, "any") and (opt_in or not b.opt_in)]
