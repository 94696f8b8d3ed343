"""Every error says what was received, what is valid and what to do (issue 24, item 5): the int8 converters
used to say only "needs calibration images (a non-empty float32 NHWC batch)"."""

from __future__ import annotations

import numpy as np
import pytest

from edgeproof.errors import UsageError


@pytest.mark.parametrize("calib, got", [
    (None, "got none"),
    (np.zeros((0, 8, 8, 3), np.float32), "got a float32 batch of shape (0, 8, 8, 3)"),
    (np.zeros((8, 8, 3), np.uint8), "got a uint8 batch of shape (8, 8, 3)"),
])
def test_missing_calibration_names_what_came_what_is_valid_and_what_to_do(calib, got):
    from edgeproof.convert.calibration import require_batch

    with pytest.raises(UsageError) as exc:
        require_batch("tflite-int8", calib)
    msg = str(exc.value)
    assert msg.startswith("tflite-int8 needs calibration images and " + got), msg
    assert "valid: a non-empty float batch (N, H, W, C)" in msg and "--calib-data DIR" in msg, msg
    require_batch("tflite-int8", np.zeros((2, 8, 8, 3), np.float32))  # a real batch passes


def test_the_converters_use_it(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from _tiny_onnx import build_linear_onnx

    from edgeproof.convert.onnx_quant import quantize_onnx

    path, _ = build_linear_onnx(tmp_path / "m.onnx")
    with pytest.raises(UsageError, match=r"onnx-int8 needs calibration images and got none; valid: "):
        quantize_onnx(path, tmp_path / "q.onnx", None)
