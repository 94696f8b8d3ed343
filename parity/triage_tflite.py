"""TFLite int8 per-layer error with `tf.lite.experimental.QuantizationDebugger` (TensorFlow imported lazily).

The debugger quantizes the Keras model with the same calibration batch as the artifact and runs
a debug model in which every quantized op has a float twin fed with the same inputs, so each
layer's error is its own, not inherited. Names it reports are the ones `denylisted_nodes` takes.
"""

from __future__ import annotations

import io
import os
import tempfile

import numpy as np

from edgeproof.parity.layer_error import LayerError, channel_snr_db, judge, keras_layer_of, rank

_SKIP_OPS = {"NUMERIC_VERIFY", "DEQUANTIZE", "QUANTIZE"}


def _converter(model, calib: np.ndarray, tmpdir: str):
    import tensorflow as tf

    from edgeproof.convert.tflite import representative_dataset

    rep = representative_dataset(calib)
    if isinstance(model, str):  # a SavedModel folder (an ONNX source's, made by onnx2tf)
        conv = tf.lite.TFLiteConverter.from_saved_model(model)
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = rep
        return conv, rep
    try:
        conv = tf.lite.TFLiteConverter.from_keras_model(model)
    except Exception:  # noqa: BLE001 - Keras/TF versions where from_keras_model breaks: use a SavedModel
        path = os.path.join(tmpdir, "saved")
        model.export(path, verbose=False)
        conv = tf.lite.TFLiteConverter.from_saved_model(path)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = rep
    return conv, rep


def _direct_snr(f, q, scale, zero_point):
    dq = (np.asarray(q, np.float32) - zero_point) * scale
    v = channel_snr_db(f, dq)
    return np.nan if v is None else v


def _consumers(interp, tensor_idx: int, names_by_idx: dict[int, str], depth: int = 3) -> list[str]:
    """Debugger names of the quantized ops that read this tensor (through reshapes etc.)."""
    ops = interp._get_ops_details()
    out, frontier = [], [tensor_idx]
    for _ in range(depth):
        nxt = []
        for op in ops:
            if op["op_name"] in _SKIP_OPS or not any(t in frontier for t in op["inputs"]):
                continue
            for t in op["outputs"]:
                if t in names_by_idx:
                    out.append(names_by_idx[t])
                else:
                    nxt.append(t)
        if not nxt:
            break
        frontier = nxt
    return list(dict.fromkeys(out))


def layer_errors(model, calib: np.ndarray, layer_names: list[str] | None = None) -> list[LayerError]:
    """Every quantized layer's error on the calibration batch, worst first. model: a Keras model or a
    SavedModel folder; layer_names: what tensor names are mapped to (default: the Keras model's layers)."""
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as tmp:
        conv, rep = _converter(model, calib, tmp)
        opts = tf.lite.experimental.QuantizationDebugOptions(
            layer_direct_compare_metrics={"channel_snr_db": _direct_snr})
        dbg = tf.lite.experimental.QuantizationDebugger(converter=conv, debug_dataset=rep, debug_options=opts)
        dbg.run()
        buf = io.StringIO()
        dbg.layer_statistics_dump(buf)
    import csv

    rows = list(csv.DictReader(io.StringIO(buf.getvalue())))
    names_by_idx = {int(r["tensor_idx"]): r["tensor_name"] for r in rows}
    interp = dbg._quant_interpreter
    layer_names = [layer.name for layer in model.layers] if layer_names is None else layer_names
    out = []
    for r in rows:
        scale = float(r["scale"]) if r.get("scale") else None
        mse = float(r["mean_squared_error"])
        snr = float(r["channel_snr_db"]) if r.get("channel_snr_db") not in (None, "", "nan") else None
        le = LayerError(tensor=r["tensor_name"], op=r["op_name"], layer=keras_layer_of(r["tensor_name"], layer_names),
                        rmse_scale=float(np.sqrt(mse) / scale) if scale else None,
                        channel_snr_db=snr if snr is None or np.isfinite(snr) else None, scale=scale)
        le.exclude = [le.tensor] + _consumers(interp, int(r["tensor_idx"]), names_by_idx)
        out.append(judge(le))
    return rank(out)
