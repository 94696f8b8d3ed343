"""The format table: the single source of truth for artifact formats and runtime backends.

CLI choices, conversion dispatch, suffix-based loading and test parametrization all read from
here. Tolerances are data on the format (parity reads them; flags may override them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from edgeproof.errors import UsageError


@dataclass(frozen=True)
class Tolerance:
    """Parity gate for one format against the Keras reference.

    max_abs: largest allowed |Δ| of output probabilities (None: not gated on tensors).
    min_top1_agreement: fraction of images whose top-1 equals Keras' top-1.
    max_delta_acc_pp: largest allowed |accuracy - Keras accuracy| in percentage points.
    """

    max_abs: float | None
    min_top1_agreement: float
    max_delta_acc_pp: float | None


FLOAT32 = Tolerance(max_abs=1e-5, min_top1_agreement=1.0, max_delta_acc_pp=0.0)
# fp16 weights: measured max|Δ| 1.3e-3 (tiny_cnn on shapes) and 3.4e-3 (demo, textures, 210 images,
# mean|Δ| 1e-5, SNR 70 dB, 210/210 agreement) — pure weight rounding, so 1e-3 was too tight (parity, issue 5).
FLOAT16 = Tolerance(max_abs=1e-2, min_top1_agreement=1.0, max_delta_acc_pp=0.0)
INT8 = Tolerance(max_abs=None, min_top1_agreement=0.99, max_delta_acc_pp=1.0)


@dataclass(frozen=True)
class Format:
    name: str
    suffix: str
    family: str  # "tflite" or "onnx": which loader family reads the file
    quantized: bool  # int8 weights and/or activations
    backends: tuple[str, ...]  # backends able to load it, preferred first
    tolerance: Tolerance
    description: str
    options: dict = field(default_factory=dict, compare=False, hash=False)
    calibrated: bool = False  # full-integer: activation ranges calibrated on training images


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("tflite-fp32", ".tflite", "tflite", False, ("litert", "openvino"), FLOAT32,
               "TFLite, float32 weights and activations"),
        Format("tflite-fp16", ".tflite", "tflite", False, ("litert", "openvino"), FLOAT16,
               "TFLite, float16 weights (dequantized to float32 at load)"),
        Format("tflite-dynamic", ".tflite", "tflite", True, ("litert", "openvino"), INT8,
               "TFLite, dynamic-range int8 weights, float activations"),
        Format("tflite-int8", ".tflite", "tflite", True, ("litert", "openvino"), INT8,
               "TFLite, full-integer int8 (TFLITE_BUILTINS_INT8), calibrated", calibrated=True),
        Format("edgetpu", ".tflite", "tflite", True, ("litert",), INT8,
               "TFLite full-int8 with uint8 I/O, ready for (or compiled by) edgetpu_compiler", calibrated=True),
        Format("onnx-fp32", ".onnx", "onnx", False, ("onnxruntime", "opencv", "openvino"), FLOAT32,
               "ONNX (tf2onnx), float32, dynamic batch"),
        Format("onnx-int8", ".onnx", "onnx", True, ("onnxruntime", "openvino"), INT8,
               "ONNX, static int8 QDQ, per-channel (onnxruntime.quantization)", calibrated=True),
    )
}


@dataclass(frozen=True)
class Backend:
    name: str
    target: str  # "module:Class", imported only when the backend is used
    family: str  # which file family it reads
    package: str  # import name that must be present
    install: str  # pip line that provides it


BACKENDS: dict[str, Backend] = {
    b.name: b
    for b in (
        Backend("litert", "edgeproof.runtime.backends.litert:LiteRTBackend", "tflite", "ai_edge_litert",
                "pip install ai-edge-litert   (or legacy: pip install tflite-runtime 'numpy<2')"),
        Backend("onnxruntime", "edgeproof.runtime.backends.onnxrt:OnnxRuntimeBackend", "onnx", "onnxruntime",
                "pip install onnxruntime"),
        Backend("opencv", "edgeproof.runtime.backends.opencv_dnn:OpenCVBackend", "onnx", "cv2",
                "pip install opencv-python-headless"),
        Backend("openvino", "edgeproof.runtime.backends.openvino:OpenVINOBackend", "any", "openvino",
                "pip install 'edgeproof[openvino]'"),
    )
}

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


def backends_for(path_or_family: str | Path) -> list[str]:
    """Backends able to read this file family, preferred first."""
    fam = path_or_family if path_or_family in ("tflite", "onnx") else family_of(path_or_family)
    return [b.name for b in BACKENDS.values() if b.family in (fam, "any")]
