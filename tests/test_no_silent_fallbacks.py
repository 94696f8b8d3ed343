"""A fact the runtime cannot read is never replaced by a default without a word: it is logged at warning with
its cause and shown in the result (the placement's "degraded" list, a source's stop reason)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from edgeproof.runtime import load
from edgeproof.runtime.sources import open_source


@pytest.fixture(scope="module")
def linear_onnx(tmp_path_factory):
    pytest.importorskip("onnx")
    from _tiny_onnx import build_linear_onnx

    return build_linear_onnx(tmp_path_factory.mktemp("degraded") / "linear.onnx")


def test_openvino_properties_it_cannot_read_are_warned_and_listed_in_the_placement(linear_onnx, monkeypatch,
                                                                                     caplog):
    ov = pytest.importorskip("openvino", reason="needs edgeproof[openvino]")
    from _tiny_onnx import random_batch

    from edgeproof.runtime.backends.openvino import OpenVINOBackend

    class Compiled:  # a compiled model whose plugin does not report EXECUTION_DEVICES
        def __init__(self, real):
            self._real = real

        def get_property(self, name):
            if name == "EXECUTION_DEVICES":
                raise RuntimeError("Exception from src/inference/src/dev/plugin.cpp:1:\nNot Implemented\n")
            return self._real.get_property(name)

        def __getattr__(self, name):
            return getattr(self._real, name)

    class Core:  # a plugin that cannot list its SUPPORTED_PROPERTIES
        available_devices = ["CPU"]

        def __init__(self):
            self._core = ov.Core()

        def read_model(self, path):
            return self._core.read_model(path)

        def get_property(self, device, name):
            raise RuntimeError(f"Exception from src/inference/src/cpp/core.cpp:1:\n{name} unsupported\n")

        def compile_model(self, model, device, config):
            return Compiled(self._core.compile_model(model, "CPU", config))

    monkeypatch.setattr(OpenVINOBackend, "core_factory", Core)
    path, ref = linear_onnx
    with caplog.at_level(logging.WARNING, logger="edgeproof"):
        m = load(path, backend="openvino")
    degraded = m.placement["degraded"]
    assert len(degraded) == 2 and "SUPPORTED_PROPERTIES" in degraded[0] and "EXECUTION_DEVICES" in degraded[1]
    assert "RuntimeError: Exception from" in degraded[1]  # the cause, on one line
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("SUPPORTED_PROPERTIES" in w for w in warned) and any("EXECUTION_DEVICES" in w for w in warned)
    x = random_batch(2)
    assert np.abs(m.predict(x) - ref(x)).max() < 1e-5  # degraded facts, same answers
    with load(path) as plain:
        assert "degraded" not in plain.placement  # a runtime that reads everything lists nothing


def test_a_camera_whose_reads_raise_names_the_cause_in_the_stop_reason(caplog):
    class Capture:
        def isOpened(self):
            return True

        def read(self):
            raise RuntimeError("VIDIOC_DQBUF: No such device")

        def release(self):
            pass

    with caplog.at_level(logging.WARNING, logger="edgeproof"):
        src = open_source("0", capture_factory=lambda target: Capture(), retries=2, backoff=0.0, sleep=lambda s: None)
        assert list(src) == []
        src.close()
    assert src.lost and "the last raised RuntimeError: VIDIOC_DQBUF: No such device" in src.stop_reason
    assert sum("VIDIOC_DQBUF" in r.getMessage() for r in caplog.records) == 1  # once, not once per retry
