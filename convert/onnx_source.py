"""An ONNX file as the source model of `edgeproof convert` / `parity` (a PyTorch export, NCHW or NHWC, float).

`OnnxSource` stands where convert and parity hold a Keras model: called on an NHWC float32 batch in
model-input space it returns onnxruntime's output on the source file (transposed to NCHW first when the
model is NCHW), so the int8 search, parity's reference and its drift check use the source file itself.
- layout and channels come from the input (contract.image_layout) and are recorded in the contract: the
  ONNX artifacts keep the source's layout, the TFLite ones are NHWC; the user never transposes;
- an opset below MIN_OPSET is upgraded with onnx.version_converter (onnx2tf reads the opset-9 Softmax of a
  (N, 1000, 1, 1) SqueezeNet output on the wrong axis: every score 1.0), or refused in one line;
- `export(dir)` writes a TensorFlow SavedModel through onnx2tf (convert's TFLite formats start from it), from a
  copy in which per-channel Mul/Add after a Conv are folded into it (convert.onnx_fold: an onnx2tf bug);
  onnx2tf was chosen over onnx-tf (unmaintained since 2022, TF 2.x-era ops) and nobuco (PyTorch modules
  only, not ONNX files); onnx2tf 1.29.24, the last release for Python 3.11, pins tensorflow 2.19 and numpy
  1.26, so it is installed with --no-deps (`make install`), and its sample-data download is replaced by the
  user's calibration images (nothing is fetched at run time).
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import numpy as np

from edgeproof.contract import image_layout, score_units
from edgeproof.errors import UsageError

MIN_OPSET = 13  # Softmax/ReduceX with explicit axes; onnxruntime's static quantization wants >= 11 too
INSTALL = "pip install --no-deps onnx2tf==1.29.24 'tf-keras>=2.21,<2.22' && pip install 'edgeproof[onnx-source]'"


class _Spec:
    def __init__(self, name: str, shape: tuple) -> None:
        self.name, self.shape = name, shape


class OnnxSource:
    """The source .onnx, opened once: its contract facts and a Keras-like call (see the module docstring)."""

    layers: list = []  # no Keras layers: no in-graph preprocessing to read

    def __init__(self, path: Path, channels: int | None = None) -> None:
        import onnx

        self.path = path
        try:
            proto = onnx.load(str(path))
        except Exception as exc:  # noqa: BLE001 - a damaged or foreign file: one line
            raise UsageError(f"cannot read ONNX model '{path}': {type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
                             "; give an .onnx file (torch.onnx.export writes one)") from None
        self.proto, self.upgraded_from = _upgrade(proto, path)
        g = self.proto.graph
        inits = {i.name for i in g.initializer}
        ins = [i for i in g.input if i.name not in inits]
        if len(ins) != 1:
            raise UsageError(f"'{path.name}' has {len(ins)} inputs ({', '.join(i.name for i in ins) or 'none'}); "
                             "edgeproof converts image classifiers with one image input")
        if len(g.output) != 1:
            raise UsageError(f"'{path.name}' has {len(g.output)} outputs; edgeproof converts classifiers with one "
                             "(N, classes) output")
        inp, out = ins[0], g.output[0]
        if inp.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            raise UsageError(f"'{path.name}' input '{inp.name}' is "
                             f"{onnx.TensorProto.DataType.Name(inp.type.tensor_type.elem_type)}; edgeproof converts "
                             "float32 models (export the model in float)")
        shape = [d.dim_value or None for d in inp.type.tensor_type.shape.dim]
        try:
            self.layout, h, w, c = image_layout(shape, channels)
        except ValueError as exc:
            raise UsageError(f"'{path.name}' input '{inp.name}' {exc}, which is not an image batch edgeproof "
                             "converts") from None
        oshape = [d.dim_value or None for d in out.type.tensor_type.shape.dim]
        try:
            self.units = score_units(oshape)
        except ValueError:
            raise UsageError(f"'{path.name}' output '{out.name}' has shape {oshape}: a feature map, not class "
                             "scores") from None
        self.input_name, self.output_name = inp.name, out.name
        self.inputs = [_Spec(inp.name, (None, h, w, c))]  # the NHWC view convert and parity feed
        self.outputs = [_Spec(out.name, (None, self.units))]
        self.last_op = _last_op(g, out.name)
        self._session = None

    def session(self):
        if self._session is None:
            import onnxruntime as ort

            self._session = ort.InferenceSession(self.proto.SerializeToString(), providers=["CPUExecutionProvider"])
        return self._session

    def __call__(self, x: Any, training: bool = False) -> np.ndarray:
        x = np.asarray(x, np.float32)
        if self.layout == "NCHW":
            x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        s = self.session()
        # One image per call: the light_* and most torch exports fix the batch at 1.
        outs = [s.run(None, {self.input_name: x[i:i + 1]})[0] for i in range(len(x))]
        out = np.concatenate(outs) if outs else np.zeros((0, self.units or 0), np.float32)
        return out.reshape(len(x), -1)

    def save_onnx(self, dest: Path) -> Path:
        import onnx

        onnx.save(self.proto, str(dest))
        return dest

    def export(self, folder: str, verbose: bool = False, calib: np.ndarray | None = None) -> None:
        """A SavedModel (NHWC) at `folder`, converted by onnx2tf from the (upgraded) source."""
        try:
            import onnx2tf
            import onnx2tf.onnx2tf as core
            import onnx2tf.utils.common_functions as common
        except ImportError as exc:
            raise UsageError(f"TFLite formats from an ONNX model need onnx2tf ({exc.name} is missing): {INSTALL}; "
                             "the ONNX formats convert without it") from None
        h, w, c = self.inputs[0].shape[1:]
        sample = calib if calib is not None and len(calib) else \
            np.random.default_rng(0).uniform(0, 1, (20, h, w, c)).astype(np.float32)

        def local_sample() -> np.ndarray:  # onnx2tf would download sample images from the internet here
            return np.asarray(sample[:20], np.float32)

        core.download_test_image_data = common.download_test_image_data = local_sample
        src = Path(folder).with_suffix(".onnx")
        import onnx

        from edgeproof.convert.onnx_fold import fold_conv_affine

        proto = onnx.ModelProto()
        proto.CopyFrom(self.proto)
        fold_conv_affine(proto)  # Conv -> per-channel Mul/Add, which onnx2tf 1.29.24 mis-broadcasts (onnx_fold)
        onnx.save(proto, str(src))
        with contextlib.redirect_stdout(io.StringIO()):
            onnx2tf.convert(input_onnx_file_path=str(src), output_folder_path=str(folder), non_verbose=True)

    def head(self) -> str | None:
        """contract.HEADS from the graph's last op, or None when it does not say (decided from outputs)."""
        units = self.units or 0
        if self.last_op == "Softmax":
            return "probabilities"
        if self.last_op == "Sigmoid":
            return "multi-label" if units > 1 else "sigmoid"
        return None


def _last_op(graph, output: str) -> str | None:
    """The op that makes `output`, looking through the shape-only ops exports append (Reshape, Flatten, ...)."""
    by_out = {o: n for n in graph.node for o in n.output}
    node = by_out.get(output)
    while node is not None and node.op_type in ("Reshape", "Flatten", "Squeeze", "Identity", "Dropout"):
        node = by_out.get(node.input[0])
    return node.op_type if node is not None else None


def _upgrade(proto, path: Path):
    """(model at opset >= MIN_OPSET, the opset it had when upgraded, else None); one line when it cannot be."""
    from onnx import version_converter

    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or opset >= MIN_OPSET:
        return proto, None
    try:
        if proto.ir_version < 4:  # IR 3 lists initializers as inputs; the converter wants them declared
            proto.ir_version = 4
        upgraded = version_converter.convert_version(proto, MIN_OPSET)
    except Exception as exc:  # noqa: BLE001 - the converter's own reason, in one line
        raise UsageError(f"'{path.name}' uses ONNX opset {opset} and onnx.version_converter cannot upgrade it to "
                         f"{MIN_OPSET} ({str(exc).splitlines()[0][:160]}); re-export it with opset_version="
                         f"{MIN_OPSET} or newer") from None
    return upgraded, opset
