"""Is the output a classifier's? Checked once at load, where the answer would otherwise be silently wrong.

Measured before: an int64 argmax output was shown as "circle 1.000", a 4-D feature map as "class_6769
6.956", a second output named by the metadata was ignored for output 0, and 1 or 10 labels on a 3-class
model were accepted without a word. (An [N, 1] sigmoid head is a binary classifier: convert and the
runtime treat it as one; it is not refused here.)
"""

from __future__ import annotations

import logging
from pathlib import Path

from edgeproof.contract import ArtifactMeta, n_classes, score_units
from edgeproof.errors import UsageError

log = logging.getLogger(__name__)
_INDEX_DTYPES = ("int64", "int32", "uint32", "uint64", "bool")


def check_io_counts(path: Path, inputs: list[str], outputs: list[str]) -> None:
    """One image input and at least one output: a 2-input or 0-output model used to be 'not valid ... may be
    truncated' (0 outputs: 'IndexError: list index out of range')."""
    if len(inputs) != 1:
        raise UsageError(f"'{path.name}' has {len(inputs)} inputs ({', '.join(inputs) or 'none'}); edgeproof runs "
                         "image classifiers with one image input")
    if not outputs:
        raise UsageError(f"'{path.name}' has no outputs; an image classifier has one output of class scores")


def check_outputs(path: Path, be, meta: ArtifactMeta) -> None:
    """Pick the output the metadata names, then refuse outputs that are not class scores [N, C]."""
    names = be.output_names()
    embedded = not meta.extra.get("synthesized")
    want = meta.output.name if embedded and meta.output is not None else None
    if len(names) > 1:
        if want is not None and want != be.output_spec.name:
            if want not in names or not be.select_output(want):
                raise UsageError(f"'{path.name}' metadata names output '{want}', which {be.name} cannot select "
                                 f"(outputs: {', '.join(names)}); re-convert it with the scores as the first output")
        elif want is None:
            log.warning("'%s' has %d outputs (%s); using the first, '%s', as the class scores", path.name,
                        len(names), ", ".join(names), be.output_spec.name)
    spec = be.output_spec
    if spec.dtype in _INDEX_DTYPES and not spec.scale:
        raise UsageError(f"'{path.name}' output '{spec.name}' is {spec.dtype} {spec.shape}: class indices (an "
                         "ArgMax?) or flags, not class scores; export the model without its final ArgMax so it "
                         "outputs one score per class")
    shape = list(spec.shape or [])
    try:
        units = score_units(shape)
    except ValueError:
        raise UsageError(f"'{path.name}' output '{spec.name}' has shape {shape}: a feature map, not class scores "
                         "[N, classes]; use a classifier (pooling and a dense head), or export up to its logits"
                         ) from None
    n_cls = n_classes(units, meta.output_kind) if isinstance(units, int) and units > 0 else None
    if embedded and meta.labels and n_cls is not None and n_cls > 1 and len(meta.labels) != n_cls:
        raise UsageError(f"'{path.name}' embeds {len(meta.labels)} label(s) but outputs {n_cls} classes; "
                         "re-convert it with 'edgeproof convert', or pass --labels FILE with one line per class")


def looks_like_probabilities(path: Path, out) -> bool:
    """For a model whose metadata says 'probabilities': True when its first outputs are in [0, 1]; else a loud
    warning, and the caller treats them as logits (softmax keeps the ranking; scores of 127.985 were shown)."""
    lo, hi = float(out.min()), float(out.max())
    if lo >= -1e-3 and hi <= 1 + 1e-3:
        return True
    log.warning("'%s' metadata says its output is probabilities, but it holds values in [%.4g, %.4g]: treating "
                "them as logits (softmax); re-convert it with the right output kind", path.name, lo, hi)
    return False
