"""The preprocessing contract and the metadata every artifact carries (pure Python, no heavy imports).

The Keras model takes raw RGB pixels in [0, 255] (rescale/normalization is a layer inside the
graph), so the default contract is: decode -> RGB -> resize -> float32, scale 1, mean 0, std 1.
Models made elsewhere can declare their own scale/mean/std/color order/channel count here.
The runtime computes:  x = (pixels * scale - mean) / std, then lays it out as `layout`.

Channels (`Preprocess.channels`, read from the model's input): every image is converted to them after
the resize (runtime.preprocess.to_channels):
  1  gray: ITU-R BT.601 luma Y = 0.299 R + 0.587 G + 0.114 B (OpenCV's COLOR_BGR2GRAY; alpha dropped);
  3  color in `color` order (a gray image is repeated into R = G = B; alpha dropped);
  4  color in `color` order plus alpha: an image's own alpha is kept, an opaque image gets 255;
  N  (more than 4, declared with --channels): no image file holds them; Model.predict takes such arrays.
mean/std hold one value (every channel) or one per channel, in the model's channel order.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

SCHEMA_VERSION = 1
METADATA_KEY = "edgeproof"  # ONNX metadata_props key; TFLite: metadata.json inside the appended zip

INTERPOLATIONS = ("bilinear", "nearest", "area", "bicubic")
COLOR_ORDERS = ("RGB", "BGR")
LAYOUTS = ("NHWC", "NCHW")
MAX_SIDE = 16384  # the largest input height/width anything here accepts
MAX_LABELS = 100_000  # ImageNet-21k has 21,843 classes
MAX_LABEL_CHARS = 1024
MAX_CHANNELS = 64  # a model input with more channels than this is not an image
GRAY_FORMULA = "ITU-R BT.601 luma: Y = 0.299 R + 0.587 G + 0.114 B"
MIN_STD = 1e-6  # below it, (pixel - mean) / std overflows float32 or divides by a float32 zero


def _number(name: str, value: Any) -> float:
    """A finite float; bools and strings are refused rather than coerced ('64', true)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} {json.dumps(value)} is not a finite number")
    return float(value)


def _numbers(name: str, values: Any, channels: int) -> tuple[float, ...]:
    if isinstance(values, (int, float)) and not isinstance(values, bool):
        values = [values]
    if isinstance(values, (list, tuple)) and len(values) > 1 and len(set(map(repr, values))) == 1:
        values = [values[0]] * channels  # one value given per channel, all alike: the same for any count
    if not isinstance(values, (list, tuple)) or len(values) not in (1, channels):
        what = "1 number" if channels == 1 else f"1 or {channels} numbers (one per channel)"
        raise ValueError(f"{name} {json.dumps(values, default=str)} is not {what} for a {channels}-channel input")
    return tuple(_number(name, v) for v in values)


def check_labels(labels: Any) -> list[str]:
    """The class names as a list of strings, or ValueError naming what is wrong (null, a string, too many)."""
    if not isinstance(labels, (list, tuple)):
        got = "null" if labels is None else f"a {type(labels).__name__}"
        raise ValueError(f"labels is {got}; expected a list of class names")
    if len(labels) > MAX_LABELS:
        raise ValueError(f"{len(labels):,} labels is over the limit of {MAX_LABELS:,}")
    bad = next((v for v in labels if not isinstance(v, str) or len(v) > MAX_LABEL_CHARS), None)
    if bad is not None:
        raise ValueError(f"label {json.dumps(bad)[:60]} is not a text of at most {MAX_LABEL_CHARS} characters")
    return list(labels)
# What the model's output is (ArtifactMeta.output_kind), and so how it becomes one score per class:
#   probabilities  softmax output, used as is;              logits         raw scores, softmax applied;
#   sigmoid        one unit p = P(class 1): [1 - p, p];     sigmoid-logit  one raw unit z: p = sigmoid(z).
#   multi-label    N independent sigmoids p_i = P(label i applies): used as is, each in [0, 1], not summing to 1
#                  (top-k ranks the labels; a score means what the sigmoid means, never a share of 1).
HEADS = ("probabilities", "logits", "sigmoid", "sigmoid-logit", "multi-label")
BINARY_HEADS = ("sigmoid", "sigmoid-logit")


def score_units(shape: list[int | None] | tuple) -> int | None:
    """Score units of a classifier output shape, or None when they are not known (a dynamic dim).

    (N, C), (N, C, 1, 1) (ONNX exports of SqueezeNet, DenseNet) and (N, 1, 1, C) all score C classes:
    singleton dims after the batch are not spatial. ValueError for a feature map, where more than one
    dim after the batch is above 1 (N, C, H, W).
    """
    rest = list(shape)[1:]
    if not rest:
        return None
    big = [d for d in rest if not (isinstance(d, int) and d == 1)]
    if sum(1 for d in big if isinstance(d, int) and d > 1) > 1:
        raise ValueError(f"shape {list(shape)} is a feature map, not class scores")
    if len(big) > 1:  # one known dim above 1 and a dynamic one, or two dynamic: not decidable here
        return None
    if not big:
        return 1
    return big[0] if isinstance(big[0], int) and big[0] >= 0 else None  # -1: TFLite's dynamic dim


def _guess_layout(shape: list) -> str:
    """NCHW when dim 1 looks like channels (1/3/4) and dim 3 does not; with neither, the layout whose other two
    dims are a square (N, 8, 16, 16) is NCHW, else the one with the fewer channels; else NHWC."""
    first, last = shape[1], shape[3]
    image = (1, 3, 4)
    if first in image and last not in image:
        return "NCHW"
    if first in image or last in image or not (isinstance(first, int) and isinstance(last, int)):
        return "NHWC"
    if shape[2] == last != first:
        return "NCHW"
    if shape[2] == first != last:
        return "NHWC"
    return "NCHW" if first < last else "NHWC"


def image_layout(shape: list[int | None] | tuple, channels: int | None = None, layout: str | None = None
                 ) -> tuple[str, int | None, int | None, int]:
    """(layout, H, W, C) of a model's image input shape: (N, H, W, C) or (N, C, H, W), C read from the shape.

    `channels` (--channels) says which dim holds them where the shape alone cannot (more than 4, or a
    square 4x4x4 input); `layout` forces one (a Keras model is NHWC). ValueError saying why for a shape that
    is not an image batch: rank != 4, more than 4 channels without `channels`, `channels` that fit no dim.
    """
    shape = list(shape)
    if len(shape) != 4:
        raise ValueError(f"has shape {shape}, a {len(shape)}-D input; an image batch is 4-D, (N, H, W, C) or "
                         "(N, C, H, W)")
    first, last = shape[1], shape[3]
    if channels is not None:
        fits = [lay for lay, d in (("NHWC", last), ("NCHW", first)) if d in (channels, None)]
        fits = [lay for lay in fits if layout in (None, lay)]
        if not fits:
            raise ValueError(f"has shape {shape}, which does not take {channels} channel(s) (--channels {channels}) "
                             f"in dim {'3' if layout == 'NHWC' else '1'}{'' if layout else ' or 3'}; give the "
                             "model's own channel count or omit --channels")
        exact = [lay for lay in fits if (last if lay == "NHWC" else first) == channels]
        lay = (exact or fits)[0]
    else:
        lay = layout or _guess_layout(shape)
    c = last if lay == "NHWC" else first
    h, w = (shape[1], shape[2]) if lay == "NHWC" else (shape[2], shape[3])
    if channels is None:
        if not isinstance(c, int) or c < 1:
            raise ValueError(f"has shape {shape} with no fixed channel count; pass --channels C (1 gray, 3 color, "
                             "4 color + alpha)")
        if c > 4:
            raise ValueError(f"has shape {shape}: {c} channels in dim {'3' if lay == 'NHWC' else '1'}, more than an "
                             f"image holds (1 gray, 3 color, 4 color + alpha); if it is an image input, pass "
                             f"--channels {c}")
    c = channels if channels is not None else c
    if c > MAX_CHANNELS:
        raise ValueError(f"has shape {shape}: {c} channels is over the limit of {MAX_CHANNELS}")
    return lay, h, w, int(c)


def n_classes(output_units: int, head: str) -> int:
    """Classes a head of `output_units` units scores: a one-unit binary head scores two."""
    return 2 if head in BINARY_HEADS and output_units == 1 else int(output_units)


def class_scores(out, head: str):
    """(N, units) model output -> float32 (N, classes) scores (NumPy, any head in HEADS): summing to 1, except a
    multi-label head's independent probabilities.

    The one definition shared by the runtime (every backend) and parity's Keras reference, so a
    binary model's class-1 score is exactly Keras' sigmoid output everywhere.
    """
    import numpy as np

    out = np.asarray(out, dtype=np.float32)
    out = out.reshape(len(out), -1)
    if head in BINARY_HEADS:
        p = out[:, :1] if head == "sigmoid" else 1.0 / (1.0 + np.exp(-out[:, :1]))
        p = np.clip(p, 0.0, 1.0).astype(np.float32)
        return np.concatenate([1.0 - p, p], axis=1)
    if head == "multi-label":
        return np.clip(out, 0.0, 1.0).astype(np.float32)
    if head == "logits":
        e = np.exp(out - out.max(axis=1, keepdims=True))
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
    return out


@dataclass
class Preprocess:
    """How pixels become model input: size, colour order, interpolation, (x * scale - mean) / std, layout."""
    height: int
    width: int
    color: str = "RGB"
    interpolation: str = "bilinear"
    scale: float = 1.0
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)  # one value, or one per channel
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    layout: str = "NHWC"
    channels: int = 3  # the model input's channels: 1 gray, 3 color, 4 color + alpha, N (see the module doc)
    # Informational: what the graph does itself (e.g. Rescaling 1/127.5, offset -1).
    in_graph: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from edgeproof.errors import UsageError

        if self.color not in COLOR_ORDERS:
            raise UsageError(f"color order '{self.color}' is not valid; valid: {', '.join(COLOR_ORDERS)}")
        if self.interpolation not in INTERPOLATIONS:
            raise UsageError(
                f"interpolation '{self.interpolation}' is not valid; valid: {', '.join(INTERPOLATIONS)}"
            )
        if self.layout not in LAYOUTS:
            raise UsageError(f"layout '{self.layout}' is not valid; valid: {', '.join(LAYOUTS)}")
        try:
            for side in ("height", "width"):  # 0: not known yet (a dynamic input without metadata)
                value = getattr(self, side)
                if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SIDE:
                    raise ValueError(f"{side} {json.dumps(value, default=str)} is not a whole number of pixels "
                                     f"in 1..{MAX_SIDE}")
            c = self.channels
            if isinstance(c, bool) or not isinstance(c, int) or not 1 <= c <= MAX_CHANNELS:
                raise ValueError(f"channels {json.dumps(c, default=str)} is not a whole number in 1..{MAX_CHANNELS}")
            self.scale = _number("scale", self.scale)
            self.mean = _numbers("mean", self.mean, c)  # type: ignore[assignment]
            self.std = _numbers("std", self.std, c)  # type: ignore[assignment]
        except ValueError as exc:
            raise UsageError(f"preprocessing {exc}") from None
        if any(s == 0 for s in self.std):
            raise UsageError(f"std {self.std} contains 0; every std value must be non-zero")
        if any(abs(s) < MIN_STD for s in self.std) or self.scale == 0:
            raise UsageError(f"preprocessing std {self.std} / scale {self.scale:g} would overflow float32: every "
                             f"std value must be at least {MIN_STD:g} in size and scale non-zero")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocess:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)


@dataclass
class TensorSpec:
    """One model input or output: name, shape (None for a dynamic dim), dtype, quantization."""
    name: str
    shape: list[int | None]
    dtype: str  # "float32", "int8", "uint8", "float16"
    scale: float | None = None  # quantization, when dtype is int8/uint8
    zero_point: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ArtifactMeta:
    """What an artifact says about itself. Written by convert, read by the runtime."""

    labels: list[str]
    preprocess: Preprocess
    format: str | None = None
    input: TensorSpec | None = None
    output: TensorSpec | None = None
    output_kind: str = "probabilities"  # one of HEADS ("auto" for synthesized metadata)
    source_sha256: str | None = None
    versions: dict[str, str] = field(default_factory=dict)
    created: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    schema: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "format": self.format,
            "labels": list(self.labels),
            "preprocess": self.preprocess.to_dict(),
            "input": self.input.to_dict() if self.input else None,
            "output": self.output.to_dict() if self.output else None,
            "output_kind": self.output_kind,
            "source_sha256": self.source_sha256,
            "versions": dict(self.versions),
            "created": self.created,
            "extra": dict(self.extra),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ArtifactMeta:
        return cls(
            labels=check_labels(d.get("labels", [])),
            preprocess=Preprocess.from_dict(d["preprocess"]),
            format=d.get("format"),
            input=TensorSpec(**d["input"]) if d.get("input") else None,
            output=TensorSpec(**d["output"]) if d.get("output") else None,
            output_kind=d.get("output_kind", "probabilities"),
            source_sha256=d.get("source_sha256"),
            versions=dict(d.get("versions") or {}),
            created=d.get("created"),
            extra=dict(d.get("extra") or {}),
            schema=int(d.get("schema", SCHEMA_VERSION)),
        )

    @classmethod
    def from_json(cls, text: str) -> ArtifactMeta:
        return cls.from_dict(json.loads(text))
