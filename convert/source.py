"""What `edgeproof convert` / `parity` take as MODEL: a run folder, or a model someone else trained.

A bare model (.keras, legacy .h5, SavedModel folder) carries no labels.txt or preprocess.json, so
its metadata comes from the file where the file has it and from the contract flags where not:
- labels: --labels FILE|a,b,c, else class_0..class_N-1 (one warning);
- contract: Rescaling/Normalization layers inside the model (keras.applications' own
  preprocessing included) mean raw 0-255 RGB in; otherwise --scale/--mean/--std/--bgr/--size;
- channels: read from the input (1 gray, 3 color, 4 color + alpha; more with --channels);
- head: softmax probabilities, raw logits, or one sigmoid unit (binary: [1 - p, p]); N
  independent sigmoids (multi-label: each score is P(label applies), used as is);
- calibration: --calib-data DIR (class subfolders optional), never random data.
The model must have one (N, H, W, C) image input and one (N, units) output.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeproof.contract import HEADS, Preprocess, n_classes, score_units
from edgeproof.convert.keras_model import image_shape, load_model, load_with_ops, model_kind, source_sha256
from edgeproof.errors import UsageError
from edgeproof.train.run_dir import Run, load_run

_CHANNEL_NAMES = {1: "gray: ITU-R BT.601 luma of color images", 4: "color + alpha: 255 for opaque images"}
# A preprocessing layer inside a SavedModel's graph: '.../rescaling_1/mul' (not 'batch_normalization').
_PRE_OP = re.compile(r"(?:^|/)(rescaling|normalization)(?:_\d+)?/")


@dataclass
class ModelSource(Run):
    """A Run (labels, contract, splits) plus what a bare model needs: its kind, head and the model."""

    kind: str = "run"  # "run", "keras", "h5" or "savedmodel"
    head: str = "probabilities"  # one of contract.HEADS
    notes: list[str] = field(default_factory=list)  # what was read from the model (the CLI shows them)
    warnings: list[str] = field(default_factory=list)  # what was assumed (the CLI shows them as warnings)
    calib_dir: Path | None = None
    model: Any = field(default=None, repr=False)
    trust_model: bool = False  # --trust-model: load the model even where it runs code (keras_model.load_with_ops)

    @property
    def bare(self) -> bool:
        return self.kind != "run"

    def keras_model(self, what: str = "this command"):
        """The Keras model (loaded once): the run's model.keras, or the bare model (SavedModel wrapped)."""
        if self.model is None:
            self.model = load_model(self.model_path, self.kind, what, self.trust_model)
        return self.model


def check_io(model, path: Path, channels: int | None = None) -> tuple[tuple[int | None, int | None, int], int, str]:
    """((H, W, C), output units, output name) of a one-image-input, one-output classifier (`channels`:
    --channels)."""
    ins, outs = list(model.inputs or []), list(model.outputs or [])
    if len(ins) != 1:
        names = ", ".join(getattr(t, "name", "?") for t in ins)
        raise UsageError(f"'{path.name}' has {len(ins)} inputs ({names}); edgeproof converts image classifiers "
                         "with one (N, H, W, C) image input")
    if len(outs) != 1:
        names = ", ".join(getattr(t, "name", "?") for t in outs)
        raise UsageError(f"'{path.name}' has {len(outs)} outputs ({names}); edgeproof converts classifiers with "
                         "one (N, classes) output")
    hwc = image_shape(list(ins[0].shape), f"input '{ins[0].name}'", path, channels)
    oshape = list(outs[0].shape)
    try:
        units = score_units(oshape)
    except ValueError:
        units = None
    if not isinstance(units, int) or units < 1:
        raise UsageError(f"'{path.name}' output has shape {tuple(oshape)}; edgeproof converts classifiers whose "
                         "output is (N, classes) scores, probabilities or one sigmoid unit")
    return hwc, units, _output_layer_name(model)


def _output_layer(model):
    import keras

    hist = getattr(model.outputs[0], "_keras_history", None)
    layer = hist[0] if hist else (model.layers[-1] if model.layers else None)
    while isinstance(layer, keras.Model) and layer.layers:  # a nested model (a backbone + head)
        layer = layer.layers[-1]
    return layer


def _output_layer_name(model) -> str:
    layer = _output_layer(model)
    return getattr(layer, "name", "output")


def detect_head(model, units: int, path: Path, probe: np.ndarray, given: str | None = None) -> str:
    """The output head (contract.HEADS) from the last layer's activation where the graph says it, else `given`
    (--head), else from the outputs on `probe`. A --head the graph contradicts is refused in one line."""
    import keras

    layer = _output_layer(model)
    if isinstance(layer, keras.layers.Softmax):
        act = "softmax"
    else:
        fn = getattr(layer, "activation", None)
        act = getattr(fn, "__name__", None) if fn is not None else None
    said = not (act is None or isinstance(layer, keras.layers.TFSMLayer))
    if not said and given is not None:
        return given
    if not said:
        # No layer to read (a SavedModel): rows that sum to 1 are a softmax; one unit that stays inside
        # [0, 1] is a sigmoid. N sigmoids cannot be told from logits here: they are ranked as logits
        # (softmax keeps the order).
        out = np.asarray(model(probe, training=False), np.float32).reshape(len(probe), -1)
        in01 = bool(out.min() >= 0 and out.max() <= 1)
        if units > 1:
            act = "softmax" if in01 and np.abs(out.sum(axis=1) - 1).max() < 1e-3 else "linear"
        else:
            act = "sigmoid" if in01 else "linear"
    head = _head_of(act, units, path, getattr(layer, "name", "output"))
    if given is not None and given != head:
        raise UsageError(f"--head {given} contradicts '{path.name}', whose last layer "
                         f"'{getattr(layer, 'name', 'output')}' makes it {head}; omit --head")
    return head


def _head_of(act: str | None, units: int, path: Path, name: str) -> str:
    if act == "softmax":
        if units == 1:
            raise UsageError(f"'{path.name}' ends in a one-unit softmax (layer '{name}'), which always outputs 1.0; "
                             "a binary classifier needs Dense(1, activation='sigmoid') or Dense(2, 'softmax')")
        return "probabilities"
    if act == "sigmoid":
        return "multi-label" if units > 1 else "sigmoid"  # N sigmoids: independent P(label i applies)
    return "sigmoid-logit" if units == 1 else "logits"


def in_graph_preprocessing(model, graph_ops: list[str] = ()) -> dict[str, Any]:
    """The Rescaling / Normalization layers inside the model (nested ones too, or ops of those names in a
    SavedModel's graph), as preprocess.in_graph."""
    import keras

    found: dict[str, Any] = {}

    def walk(m) -> None:
        for layer in getattr(m, "layers", []):
            if isinstance(layer, keras.layers.Rescaling):
                found.setdefault("rescaling", {"layer": layer.name, "scale": _num(layer.scale),
                                               "offset": _num(layer.offset)})
            elif isinstance(layer, keras.layers.Normalization):
                found.setdefault("normalization", {"layer": layer.name,
                                                   "mean": _num(getattr(layer, "mean", None)),
                                                   "variance": _num(getattr(layer, "variance", None))})
            elif hasattr(layer, "layers"):
                walk(layer)

    walk(model)
    ops = [m.group(1) for n in graph_ops if (m := _PRE_OP.search(n.lower()))]
    for op in sorted(set(ops)):
        found.setdefault(op, {"graph_op": True})
    return found


def _num(v: Any) -> Any:
    if v is None:
        return None
    a = np.asarray(v, dtype=np.float64).ravel()
    return float(a[0]) if a.size == 1 else [round(float(x), 6) for x in a[:8]]


def _contract(path: Path, hwc: tuple, ov: dict, in_graph: dict, notes: list[str], warnings: list[str]
              ) -> Preprocess:
    h, w, c = hwc
    if ov.get("size"):
        sh, sw = ov["size"]
        if (h is not None and h != sh) or (w is not None and w != sw):
            raise UsageError(f"--size {sh}x{sw} does not fit the model's fixed input {h}x{w}; omit --size or give "
                             "the model's size")
        h, w = sh, sw
    if h is None or w is None:
        raise UsageError(f"'{path.name}' takes any image size (input (N, None, None, {c})); pass --size HxW, the size "
                         "it was trained at")
    declared = any(k in ov for k in ("scale", "mean", "std", "bgr"))
    if in_graph and declared:
        warnings.append(f"the model contains its own preprocessing ({', '.join(in_graph)}) and --scale/--mean/--std/"
                     "--bgr add to it: make sure the model was trained on inputs prepared that way")
    elif in_graph:
        notes.append(f"contract: raw 0-255 RGB pixels (the model rescales them itself: {', '.join(in_graph)} layer)")
    elif not declared:
        warnings.append("contract: raw 0-255 RGB pixels assumed (the model has no Rescaling/Normalization layer and "
                     "no --scale/--mean/--std was given); declare how it was trained, e.g. --scale 0.00392157")

    def per_channel(key: str, default: float) -> tuple[float, ...]:
        vals = [float(v) for v in ov.get(key) or [default]]
        return tuple(vals * c if len(vals) == 1 else vals)

    try:
        return Preprocess(height=int(h), width=int(w), color="BGR" if ov.get("bgr") else "RGB", channels=c,
                          scale=float(ov.get("scale", 1.0)), mean=per_channel("mean", 0.0),
                          std=per_channel("std", 1.0), in_graph=in_graph)
    except UsageError as exc:
        raise UsageError(f"{exc} ('{path.name}' takes {c} channel(s))") from None


def _labels(ov: dict, classes: int, warnings: list[str]) -> list[str]:
    from edgeproof.runtime.model import read_labels

    given = ov.get("labels")
    if given is None:
        warnings.append(f"no --labels given: naming the {classes} classes class_0..class_{classes - 1}")
        return [f"class_{i}" for i in range(classes)]
    labels = read_labels(given) if isinstance(given, (str, Path)) else [str(v) for v in given]
    if len(labels) != classes:
        raise UsageError(f"--labels gives {len(labels)} label(s) but the model outputs {classes} classes; give "
                         f"{classes} labels, one per class in output order")
    if len(set(labels)) != len(labels):
        raise UsageError(f"--labels has duplicate names ({', '.join(labels)}); every class needs its own name")
    return labels


def calibration_items(folder: str | Path) -> list[tuple[str, int]]:
    """Images under `folder` (recursive) as [(path, class index)], one class per first-level subfolder."""
    from edgeproof.runtime.sources import IMAGE_EXTS, _folder_inputs

    root = Path(folder)
    if not root.is_dir():
        raise UsageError(f"--calib-data '{root}' is not a folder; give a folder of images (class subfolders "
                         "optional) like the ones the model was trained on")
    files, _ = _folder_inputs(root)
    files = [p for p in files if p.suffix.lower() in IMAGE_EXTS]
    if not files:
        raise UsageError(f"--calib-data '{root}' holds no images ({', '.join(sorted(IMAGE_EXTS)[:6])}, ...)")
    groups = sorted({p.relative_to(root).parts[0] if len(p.relative_to(root).parts) > 1 else "" for p in files})
    index = {g: i for i, g in enumerate(groups)}
    return [(str(p), index[p.relative_to(root).parts[0] if len(p.relative_to(root).parts) > 1 else ""])
            for p in files]


def open_source(path: str | Path, overrides: dict | None = None, calib_data: str | Path | None = None,
                what: str = "edgeproof convert", trust_model: bool = False) -> ModelSource:
    """MODEL as convert sees it: labels, contract, head, calibration images (see the module docstring)."""
    path = Path(path)
    ov = dict(overrides or {})
    kind = model_kind(path)
    if kind == "run":
        if ov:
            raise UsageError(f"'{path}' is an edgeproof run: its labels and preprocessing contract come from the run "
                             f"folder; --{'/--'.join(sorted(ov))} apply to a bare .keras/.h5/SavedModel model")
        run = load_run(path)
        src = ModelSource(**vars(run), kind="run", trust_model=trust_model)
    else:
        src = _open_bare(path, kind, ov, what, trust_model)
    if calib_data is not None:
        src.calib_dir = Path(calib_data)
        src.splits = {**src.splits, "train": calibration_items(calib_data)}
    return src


def _open_bare(path: Path, kind: str, ov: dict, what: str, trust_model: bool = False) -> ModelSource:
    if kind == "onnx":
        from edgeproof.convert.onnx_source import OnnxSource

        model, graph_ops = OnnxSource(path, ov.get("channels")), []
    else:
        model, graph_ops = load_with_ops(path, kind, what, trust_model)
    hwc, units, _ = check_io(model, path, ov.get("channels"))
    notes: list[str] = []
    warnings: list[str] = []
    in_graph = in_graph_preprocessing(model, graph_ops)
    pp = _contract(path, hwc, ov, in_graph, notes, warnings)
    if kind == "onnx":
        from dataclasses import replace

        pp = replace(pp, layout=model.layout)  # the ONNX artifacts keep it; TFLite ones are NHWC (convert.pipeline)
        notes.append(f"ONNX source: {model.layout} input, opset "
                     + (f"{model.upgraded_from} upgraded to 13" if model.upgraded_from else "kept")
                     + "; the reference is onnxruntime on this file")
    if pp.channels != 3:
        notes.append(f"input: {pp.channels} channel(s) ({_CHANNEL_NAMES.get(pp.channels, 'not an image file')}); "
                     "the runtime converts every image to them")
    shape = (pp.height, pp.width, pp.channels)
    rng = np.random.default_rng(0)  # random and flat images, dark to bright: a logit leaves [0, 1] on some
    probe = np.concatenate([rng.uniform(0, 255, (4, *shape)),
                            np.linspace(0, 255, 4)[:, None, None, None] * np.ones((1, *shape))])
    probe = probe.astype(np.float32)
    from edgeproof.runtime.preprocess import normalize

    given = ov.get("head")
    if given is not None and given not in HEADS:
        raise UsageError(f"--head '{given}' is not valid; valid: {', '.join(HEADS)}")
    graph = model.head() if kind == "onnx" else None
    if graph is not None and given is not None and given != graph:
        raise UsageError(f"--head {given} contradicts '{path.name}', whose graph ends in a {model.last_op} "
                         f"({graph}); omit --head")
    head = graph or detect_head(model, units, path, normalize(probe, pp), given)
    assert head in HEADS
    labels = _labels(ov, n_classes(units, head), warnings)
    notes.append(f"output head: {head} ({units} unit(s), {len(labels)} classes)")
    return ModelSource(root=path.parent, model_path=path, labels=labels, preprocess=pp, splits={}, kind=kind,
                       head=head, notes=notes, warnings=warnings, model=model, trust_model=trust_model)


def open_for_parity(path: str | Path, artifacts_dir: str | Path | None = None,
                    trust_model: bool = False) -> ModelSource:
    """MODEL as parity sees it: a run folder, or a bare model whose labels/contract/head come from the
    artifacts convert made from it (and whose calibration folder, for triage, from their manifest.json)."""
    from edgeproof.formats import artifacts_in
    from edgeproof.runtime.integrity import read_manifest
    from edgeproof.runtime.metadata import read_metadata

    path = Path(path)
    kind = model_kind(path)
    if kind == "run":
        return ModelSource(**vars(load_run(path)), kind="run", trust_model=trust_model)
    art = Path(artifacts_dir) if artifacts_dir else path.parent / "artifacts"
    if not art.is_dir():
        raise UsageError(f"artifacts folder '{art}' does not exist; convert first with 'edgeproof convert {path} "
                         f"-o {art}' or pass --artifacts DIR")
    meta = next((m for p in artifacts_in(art) if (m := read_metadata(p)) is not None), None)
    if meta is None:
        raise UsageError(f"no artifact in '{art}' carries edgeproof metadata (labels, contract); convert the model "
                         f"with 'edgeproof convert {path} -o {art}' first")
    manifest, _ = read_manifest(art / "manifest.json")
    manifest = manifest if isinstance(manifest, dict) else {}
    recorded = manifest.get("source_sha256")
    if isinstance(recorded, str) and recorded != source_sha256(path):
        raise UsageError(f"the artifacts in '{art}' were converted from another model than '{path}' (source sha256 "
                         f"{recorded[:12]} in manifest.json); give the model they came from or convert this one")
    src = ModelSource(root=path.parent, model_path=path, labels=list(meta.labels), preprocess=meta.preprocess,
                      splits={}, kind=kind, head=meta.output_kind if meta.output_kind in HEADS else "probabilities",
                      trust_model=trust_model)
    cal = manifest.get("calibration")
    folder = cal.get("folder") if isinstance(cal, dict) else None
    if isinstance(folder, str) and Path(folder).is_dir():  # triage recalibrates on the same images
        src.calib_dir = Path(folder)
        src.splits["train"] = calibration_items(folder)
    return src
