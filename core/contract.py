"""The preprocessing contract and the metadata every artifact carries (pure Python, no heavy imports).

The Keras model takes raw RGB pixels in [0, 255] (rescale/normalization is a layer inside the
graph), so the default contract is: decode -> RGB -> resize -> float32, scale 1, mean 0, std 1.
Models made elsewhere can declare their own scale/mean/std/color order here.
The runtime computes:  x = (pixels * scale - mean) / std, then lays it out as `layout`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

SCHEMA_VERSION = 1
METADATA_KEY = "edgeproof"  # ONNX metadata_props key; TFLite: metadata.json inside the appended zip

INTERPOLATIONS = ("bilinear", "nearest", "area", "bicubic")
COLOR_ORDERS = ("RGB", "BGR")
LAYOUTS = ("NHWC", "NCHW")


@dataclass
class Preprocess:
    height: int
    width: int
    color: str = "RGB"
    interpolation: str = "bilinear"
    scale: float = 1.0
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    layout: str = "NHWC"
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
        self.mean = tuple(float(v) for v in self.mean)  # type: ignore[assignment]
        self.std = tuple(float(v) for v in self.std)  # type: ignore[assignment]
        if any(s == 0 for s in self.std):
            raise UsageError(f"std {self.std} contains 0; every std value must be non-zero")

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
    output_kind: str = "probabilities"  # or "logits"
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
            labels=list(d.get("labels") or []),
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
