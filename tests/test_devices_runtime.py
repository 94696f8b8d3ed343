"""`--device NAME` end to end: the profile's delegate / execution providers reach the runtime, a
missing accelerator is a one-line error with the install line, and --allow-fallback is loud.

Edge TPU and CUDA/TensorRT/NNAPI cannot run here: the Edge TPU path uses a fake delegate loader
(and, in the slow tests, the real ai-edge-litert failing to load libedgetpu.so.1); the ONNX Runtime
paths use the real CPU-only onnxruntime, whose provider list lacks those EPs.
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import ClassVar

import numpy as np
import pytest

from edgeproof.errors import EdgeproofError
from edgeproof.runtime import load


class FakeInterpreter:
    """Just enough of the LiteRT Interpreter for the backend: records what it was given."""

    made: ClassVar[list[dict]] = []

    def __init__(self, model_path, experimental_delegates=None, num_threads=None):
        FakeInterpreter.made.append({"delegates": experimental_delegates, "threads": num_threads})
        self._x = None

    def allocate_tensors(self):
        pass

    def get_input_details(self):
        return [{"name": "image", "index": 0, "shape": np.array([1, 8, 8, 3]),
                 "shape_signature": np.array([-1, 8, 8, 3]), "dtype": np.float32, "quantization": (0.0, 0)}]

    def get_output_details(self):
        return [{"name": "probs", "index": 1, "shape": np.array([1, 3]),
                 "shape_signature": np.array([-1, 3]), "dtype": np.float32, "quantization": (0.0, 0)}]

    def resize_tensor_input(self, index, shape):
        pass

    def set_tensor(self, index, x):
        self._x = x

    def invoke(self):
        pass

    def get_tensor(self, index):
        return np.tile(np.array([[0.7, 0.2, 0.1]], np.float32), (len(self._x), 1))


@pytest.fixture
def fake_litert(monkeypatch, tmp_path):
    """A dummy .tflite and a LiteRT backend whose interpreter and delegate loader are fakes."""
    from edgeproof.runtime.backends import litert

    FakeInterpreter.made = []
    state = {"delegate_loads": True, "asked": []}

    def load_delegate(lib):
        state["asked"].append(lib)
        if not state["delegate_loads"]:
            raise ValueError(f"Failed to load delegate from {lib}\n")
        return f"<delegate {lib}>"

    def dlopen(lib):  # the backend dlopens the library before load_delegate
        if not state["delegate_loads"]:
            raise OSError(f"{lib}: cannot open shared object file: No such file or directory")

    monkeypatch.setattr(litert, "import_interpreter", lambda: (FakeInterpreter, load_delegate, "fake-litert"))
    if hasattr(litert, "ctypes"):
        monkeypatch.setattr(litert, "ctypes", SimpleNamespace(CDLL=dlopen))
    # The bytes never reach a real interpreter: skip load()'s flatbuffer check (tested in test_model_fuzz).
    monkeypatch.setattr("edgeproof.runtime.model_check.check_file", lambda *a: None)
    monkeypatch.setattr("edgeproof.runtime.model_check.check_prepared_tflite", lambda *a: None)  # nor the real
    monkeypatch.setattr("edgeproof.runtime.model_ops.check_ops", lambda *a: None)  # Interpreter's, nor the op scan
    path = tmp_path / "model.tflite"
    path.write_bytes(b"TFL3 not a real flatbuffer: the fake interpreter never reads it")
    return path, state


def test_coral_profile_hands_libedgetpu_to_the_delegate_loader(fake_litert):
    path, state = fake_litert
    m = load(path, device="coral")
    assert state["asked"] == ["libedgetpu.so.1"]
    assert FakeInterpreter.made[-1]["delegates"] == ["<delegate libedgetpu.so.1>"]
    assert m.predict(np.zeros((2, 8, 8, 3), np.float32)).shape == (2, 3)


def test_coral_without_libedgetpu_is_one_line_with_the_install_line(fake_litert):
    path, state = fake_litert
    state["delegate_loads"] = False
    with pytest.raises(EdgeproofError) as exc:
        load(path, device="coral")
    msg = str(exc.value)
    assert "libedgetpu.so.1" in msg and "libedgetpu1-std" in msg and "--allow-fallback" in msg
    assert "\n" not in msg and exc.value.exit_code == 2


def test_coral_allow_fallback_runs_on_cpu_loudly(fake_litert, capsys):
    path, state = fake_litert
    state["delegate_loads"] = False
    m = load(path, device="coral", allow_fallback=True)
    assert "FALLBACK" in capsys.readouterr().err
    assert not FakeInterpreter.made[-1]["delegates"]
    assert m.predict(np.zeros((1, 8, 8, 3), np.float32)).shape == (1, 3)


def test_pi_profile_sets_threads_and_no_delegate(fake_litert):
    path, state = fake_litert
    load(path, device="rpi5")
    assert state["asked"] == [] and FakeInterpreter.made[-1]["threads"] == 4
    load(path, device="rpi5", threads=2)
    assert FakeInterpreter.made[-1]["threads"] == 2  # the flag beats the profile


@pytest.fixture(scope="module")
def linear_onnx(tmp_path_factory):
    pytest.importorskip("onnx")
    from _tiny_onnx import build_linear_onnx

    return build_linear_onnx(tmp_path_factory.mktemp("dev") / "linear.onnx")


@pytest.mark.parametrize("device,ep", [("jetson", "TensorrtExecutionProvider"),
                                       ("android-npu", "NnapiExecutionProvider"),
                                       ("qnn", "QNNExecutionProvider")])
def test_missing_execution_provider_is_an_error_unless_fallback(device, ep, linear_onnx, capsys):
    import onnxruntime as ort

    if ep in ort.get_available_providers():
        pytest.skip(f"this onnxruntime has {ep}")
    from _tiny_onnx import random_batch

    path, ref = linear_onnx
    with pytest.raises(EdgeproofError) as exc:
        load(path, device=device)
    msg = str(exc.value)
    assert ep in msg and "--allow-fallback" in msg and "\n" not in msg
    m = load(path, device=device, allow_fallback=True)
    assert "FALLBACK" in capsys.readouterr().err
    x = random_batch()
    assert np.abs(m.predict(x) - ref(x)).max() < 1e-5
    assert m.placement["accelerator"] == 0 and m.placement["cpu"] == m.placement["total"] > 0


# ---- the real thing: ai-edge-litert, the tiny artifacts and the CLI (slow: needs the trained run) ----

@pytest.mark.slow
def test_coral_on_this_host_real_litert(tiny_artifacts, capsys):
    from edgeproof.devices.probe import probe_edgetpu_library

    if probe_edgetpu_library()[0]:
        pytest.skip("libedgetpu.so.1 loads on this host")
    path = tiny_artifacts / "model.edgetpu.tflite"
    with pytest.raises(EdgeproofError, match="libedgetpu.so.1"):
        load(path, device="coral")
    m = load(path, device="coral", allow_fallback=True)
    assert "FALLBACK" in capsys.readouterr().err
    assert m.placement is not None and m.placement["accelerator"] == 0


@pytest.mark.slow
def test_cli_run_device_coral(tiny_artifacts, tiny_run, capsys):
    from edgeproof.cli.main import run_cli
    from edgeproof.devices.probe import probe_edgetpu_library
    from edgeproof.train.run_dir import load_run

    if probe_edgetpu_library()[0]:
        pytest.skip("libedgetpu.so.1 loads on this host")
    image = load_run(tiny_run).split("test")[0][0]
    model = str(tiny_artifacts / "model.edgetpu.tflite")
    assert run_cli(["run", model, "--device", "coral", "--source", image]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "libedgetpu.so.1" in err[0] and "libedgetpu1-std" in err[0]
    assert run_cli(["run", model, "--device", "coral", "--source", image, "--allow-fallback", "--json"]) == 0
    out, err = capsys.readouterr()
    assert "FALLBACK" in err
    summary = json.loads(out.strip().splitlines()[-1])["summary"]
    placement = summary["model"]["placement"]
    assert placement["accelerator"] == 0
    # The summary itself must say the requested delegate was not used (not only the stderr warning).
    assert "fallback" in json.dumps(placement).lower(), placement
