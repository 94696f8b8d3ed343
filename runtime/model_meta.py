"""What a loaded model's contract is: the file's metadata, or one synthesized from its input tensor for a model
made elsewhere, with the caller's overrides (--size, --channels, --mean, --std, --scale, --bgr, --labels) applied."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from edgeproof.contract import ArtifactMeta, Preprocess, TensorSpec, image_layout, score_units
from edgeproof.errors import UsageError
from edgeproof.runtime.spec import normalize_overrides


def guess_layout(shape: list[int | None]) -> str:
    """The layout contract.image_layout reads from a 4-D input shape (NHWC for anything else)."""
    try:
        return image_layout(shape)[0]
    except ValueError:
        return "NHWC"


def input_layout(inp: TensorSpec, channels: int | None = None) -> tuple[str, int | None, int | None, int]:
    """contract.image_layout of a model input, its ValueError as one UsageError line naming the input."""
    try:
        return image_layout(list(inp.shape), channels)
    except ValueError as exc:
        raise UsageError(f"model input '{inp.name}' {exc}; edgeproof runs image classifiers") from None


def synthesize_meta(inp: TensorSpec, out: TensorSpec, fmt: str | None, channels: int | None = None) -> ArtifactMeta:
    """Metadata for a model made elsewhere: size/layout/channels from the input tensor (`channels`: --channels),
    class_i labels."""
    layout, h, w, c = input_layout(inp, channels)
    n_cls = declared_units(out) or 0
    n_cls = 2 if n_cls == 1 else n_cls  # one unit: a binary head (sigmoid or its logit, decided in predict)
    pp = Preprocess(height=h or 0, width=w or 0, layout=layout, channels=c)
    return ArtifactMeta(labels=[f"class_{i}" for i in range(n_cls)], preprocess=pp, format=fmt,
                        input=inp, output=out, output_kind="auto", extra={"synthesized": True})


def read_labels(path: str | Path) -> list[str]:
    from edgeproof import user_files
    from edgeproof.contract import MAX_LABEL_CHARS, MAX_LABELS

    p = Path(path)
    hint = "give a UTF-8 text file, one label per line"
    text = user_files.read_text(p, user_files.LABELS)  # a regular file, bounded, UTF-8 without NUL bytes
    labels = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not labels:
        raise UsageError(f"labels file '{p}' has no labels; give one label per line")
    if len(labels) > MAX_LABELS or max(map(len, labels)) > MAX_LABEL_CHARS:
        raise UsageError(f"labels file '{p}' has {len(labels):,} labels (limit {MAX_LABELS:,}) or one over "
                         f"{MAX_LABEL_CHARS} characters; {hint}")
    return labels


def apply_overrides(meta: ArtifactMeta, inp: TensorSpec, overrides: dict[str, Any] | None) -> ArtifactMeta:
    """Flags beat the file: size (h, w), mean, std, scale, bgr, labels (list or file path); see
    runtime.spec.normalize_overrides for what each may be (already checked when the LoadSpec was built)."""
    ov = normalize_overrides(overrides)
    pp = meta.preprocess
    changes: dict[str, Any] = {}
    if "size" in ov:
        h, w = ov["size"]
        model_hw = inp.shape[1:3] if pp.layout == "NHWC" else inp.shape[2:4]
        if any(m is not None and m != v for m, v in zip(model_hw, (h, w))):
            raise UsageError(f"--size {h}x{w} does not fit the model's fixed input {model_hw[0]}x{model_hw[1]}; "
                             "omit --size or give the model's size")
        changes.update(height=h, width=w)
    for key in ("mean", "std", "scale"):
        if key in ov:
            changes[key] = ov[key]
    if "bgr" in ov:
        changes["color"] = "BGR" if ov["bgr"] else "RGB"
    shape = list(inp.shape)
    live = (shape[3] if pp.layout == "NHWC" else shape[1]) if len(shape) == 4 else None
    live = live if isinstance(live, int) and live > 0 else None
    if "channels" in ov and ov["channels"] != (live or pp.channels):
        raise UsageError(f"--channels {ov['channels']} does not fit '{inp.name}' {shape}, which takes "
                         f"{live or pp.channels} channel(s); give that count or omit --channels")
    if live is not None and live != pp.channels:
        raise UsageError(f"the metadata's contract says {pp.channels} channel(s) but input '{inp.name}' is {shape}; "
                         "re-convert it with 'edgeproof convert'")
    try:
        if changes:
            meta = replace(meta, preprocess=Preprocess(**{**pp.to_dict(), **changes}))
    except UsageError as exc:
        raise UsageError(f"{exc} (the model takes {pp.channels} channel(s))") from None
    if "labels" in ov:
        labels = ov["labels"]
        meta = replace(meta, labels=read_labels(labels) if isinstance(labels, (str, Path)) else list(labels))
    if meta.preprocess.height <= 0 or meta.preprocess.width <= 0:
        raise UsageError(f"model input '{inp.name}' {inp.shape} has a dynamic height/width and the file carries no "
                         "preprocessing metadata; pass --size HxW")
    return meta


def declared_units(spec: TensorSpec) -> int | None:
    """Score units the output declares ((N, C) or (N, C, 1, 1)); None when dynamic or a feature map (refused
    by check_outputs with its own message)."""
    try:
        return score_units(list(spec.shape or []))
    except ValueError:
        return None
