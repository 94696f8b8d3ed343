"""OpenVINO backend: a hand-built ONNX graph (fast, NumPy reference) and parity vs Keras on the
tiny artifacts (slow), plus device handling with a faked openvino.Core (GPU/NPU cannot run here)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest

from edgeproof.errors import EdgeproofError, MissingDependency, UsageError
from edgeproof.formats import FORMATS

ov = pytest.importorskip("openvino", reason="needs edgeproof[openvino]")

from edgeproof.runtime import load
from edgeproof.runtime.backends.openvino import OpenVINOBackend
from edgeproof.runtime.backends.openvino_compile import shared_core

H, W, C = 8, 8, 3  # the shape _tiny_onnx builds
OV_FORMATS = [name for name, f in FORMATS.items() if "openvino" in f.backends]


@pytest.fixture(scope="module")
def linear_onnx(tmp_path_factory):
    pytest.importorskip("onnx")
    from _tiny_onnx import build_linear_onnx

    return build_linear_onnx(tmp_path_factory.mktemp("ov") / "linear.onnx")


@pytest.fixture
def batch():
    from _tiny_onnx import random_batch

    return random_batch()


def test_backend_runs_onnx_on_cpu_in_f32(linear_onnx, batch):
    path, ref = linear_onnx
    be = OpenVINOBackend(path, threads=1)
    be.load()
    assert be.input_spec.shape == [None, H, W, C] and be.input_spec.dtype == "float32"
    assert be.output_spec.shape == [None, 3] and be.batch_ok
    out = be.run(batch)
    assert out.shape == (5, 3) and np.abs(out - ref(batch)).max() < 1e-5
    pl = be.placement
    assert pl["devices"] == ["CPU"] and pl["accelerator"] == 0 and pl["cpu"] == pl["total"] > 0
    assert pl["precision"] == "f32" and pl["fallback"] is False and "OpenVINO CPU" in pl["where"]
    assert be._compiled.get_property("INFERENCE_NUM_THREADS") == 1
    be.close()


def test_runtime_load_with_backend_and_device_profile(linear_onnx, batch):
    path, ref = linear_onnx
    for kwargs in ({"backend": "openvino"}, {"device": "intel"}):
        m = load(path, **kwargs)
        assert m.backend_name == "openvino"
        assert np.abs(m.predict(batch) - ref(batch)).max() < 1e-5
        assert m.placement["devices"] == ["CPU"]
        m.close()


def test_auto_device_keeps_f32(linear_onnx, batch):
    path, ref = linear_onnx
    be = OpenVINOBackend(path, providers=["AUTO"])
    be.load()
    assert be.placement["requested_device"] == "AUTO" and be.placement["devices"]
    assert np.abs(be.run(batch) - ref(batch)).max() < 1e-5


def test_missing_gpu_is_an_error_unless_fallback(linear_onnx, batch, capsys):
    if any(d.startswith("GPU") for d in shared_core(ov).available_devices):
        pytest.skip("this host has an OpenVINO GPU")
    path, ref = linear_onnx
    with pytest.raises(EdgeproofError) as exc:
        load(path, device="intel-gpu")
    msg = str(exc.value)
    assert "'GPU' is not available" in msg and "intel-opencl-icd" in msg and "--allow-fallback" in msg
    assert "\n" not in msg
    m = load(path, device="intel-gpu", allow_fallback=True)
    err = " ".join(capsys.readouterr().err.split())  # rich wraps lines at the terminal width
    assert "DEVICE FALLBACK" in err and "RUNNING ON THE CPU" in err and "edgeproof[openvino]" in err
    assert m.placement["fallback"] is True and "FALLBACK from GPU" in m.placement["where"]
    assert np.abs(m.predict(batch) - ref(batch)).max() < 1e-5


class FakeCore:
    """A real Core that also 'has' a GPU and an NPU: GPU compiles fail, NPU compiles run on the CPU."""

    compiled_for: ClassVar[list] = []

    def __init__(self):
        self._core = shared_core(ov)
        self.available_devices = ["CPU", "GPU", "NPU"]

    def read_model(self, path):
        return self._core.read_model(path)

    def get_property(self, device, name):
        return self._core.get_property("CPU", name)

    def compile_model(self, model, device, config):
        FakeCore.compiled_for.append((device, model.inputs[0].get_partial_shape().to_string()))
        if device == "GPU":
            raise RuntimeError("Exception from src/inference/src/cpp/core.cpp:117:\n[GPU] clGetPlatformIDs error -1001\n")
        return self._core.compile_model(model, "CPU", config)


@pytest.fixture
def fake_core(monkeypatch):
    FakeCore.compiled_for = []
    monkeypatch.setattr(OpenVINOBackend, "core_factory", FakeCore)
    return FakeCore


def test_gpu_compile_failure_is_an_error_or_loud_fallback(linear_onnx, fake_core, capsys):
    path, _ = linear_onnx
    with pytest.raises(EdgeproofError, match=r"compiling 'linear.onnx' for GPU failed: .*clGetPlatformIDs"):
        OpenVINOBackend(path, providers=["GPU"]).load()
    be = OpenVINOBackend(path, providers=["GPU"], allow_fallback=True)
    be.load()
    assert "DEVICE FALLBACK" in capsys.readouterr().err
    assert [d for d, _ in fake_core.compiled_for] == ["GPU", "GPU", "CPU"]
    assert be.placement["fallback"] and be.placement["requested_device"] == "GPU"


def test_npu_gets_a_static_batch(linear_onnx, fake_core, batch):
    path, ref = linear_onnx
    m = load(path, backend="openvino", providers=["NPU"])
    assert fake_core.compiled_for == [("NPU", "[1,8,8,3]")]
    assert m.backend.batch_ok is False
    assert np.abs(m.predict(batch) - ref(batch)).max() < 1e-5  # Model feeds one image at a time


class DynamicBatchBugCore(FakeCore):
    """OpenVINO 2026.4's CPU plugin on EfficientNet's quantized TFLite files: the dynamic batch fails to compile
    ('[TransposeToReshape] ... FullyConnectedCompressed'), batch 1 compiles."""

    def compile_model(self, model, device, config):
        if model.inputs[0].get_partial_shape().is_dynamic:
            FakeCore.compiled_for.append((device, "dynamic: failed"))
            raise RuntimeError("Exception from src/plugins/intel_cpu/src/graph.cpp:1:\n[TransposeToReshape] END: node: "
                               "opset1::Transpose (ie_internal_opset::FullyConnectedCompressed f32[?,10])\n")
        return super().compile_model(model, device, config)


def test_a_dynamic_batch_the_cpu_plugin_rejects_is_compiled_at_batch_one_with_a_warning(linear_onnx, batch, capsys,
                                                                                       monkeypatch):
    path, ref = linear_onnx
    FakeCore.compiled_for = []
    monkeypatch.setattr(OpenVINOBackend, "core_factory", DynamicBatchBugCore)
    m = load(path, backend="openvino")
    assert FakeCore.compiled_for == [("CPU", "dynamic: failed"), ("CPU", "[1,8,8,3]")]
    err = " ".join(capsys.readouterr().err.split())
    assert "cannot compile 'linear.onnx' with a dynamic batch ([TransposeToReshape]" in err
    assert "compiled it for batch 1" in err
    assert m.backend.batch_ok is False
    assert np.abs(m.predict(batch) - ref(batch)).max() < 1e-5  # all 5 images, one at a time


def test_a_file_the_cpu_plugin_rejects_at_every_batch_is_one_error(linear_onnx, monkeypatch):
    class AlwaysFails(FakeCore):
        def compile_model(self, model, device, config):
            raise RuntimeError("Exception from src/core.cpp:1:\n[CPU] unsupported op Foo\n")

    monkeypatch.setattr(OpenVINOBackend, "core_factory", AlwaysFails)
    with pytest.raises(UsageError, match=r"^OpenVINO cannot compile 'linear.onnx' for CPU: \[CPU\] unsupported op Foo;"):
        load(linear_onnx[0], backend="openvino")


def test_bad_device_and_unreadable_file(linear_onnx, tmp_path):
    path, _ = linear_onnx
    with pytest.raises(UsageError, match="one OpenVINO device"):
        OpenVINOBackend(path, providers=["CUDAExecutionProvider"])
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(EdgeproofError, match="cannot read") as exc:
        OpenVINOBackend(bad).load()
    assert "\n" not in str(exc.value)


def test_missing_openvino_names_the_extra(linear_onnx, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(MissingDependency, match=r"edgeproof\[openvino\]"):
        OpenVINOBackend(linear_onnx[0]).load()


# ---- parity against Keras on the tiny artifacts (every format the table routes to openvino) ----

@pytest.fixture(scope="module")
def keras_reference(tiny_run):
    """(x in model-input space, Keras probabilities, true labels) on the tiny run's test split."""
    from edgeproof.parity.reference import load_keras, predict
    from edgeproof.runtime.preprocess import load_batch
    from edgeproof.train.run_dir import load_run

    run = load_run(tiny_run)
    items = run.split("test")
    x, ok_paths, _ = load_batch([p for p, _ in items], run.preprocess)
    labels = np.array([c for p, c in items if p in set(ok_paths)])
    return x, predict(load_keras(run.model_path), x), labels


@pytest.mark.slow
@pytest.mark.parametrize("fmt", OV_FORMATS)
def test_openvino_parity_vs_keras(fmt, tiny_artifacts, keras_reference):
    from edgeproof.formats import artifact_filename

    x, ref, labels = keras_reference
    tol = FORMATS[fmt].tolerance
    m = load(tiny_artifacts / artifact_filename(FORMATS[fmt]), backend="openvino")
    out = m.predict(x)
    from edgeproof.parity.gate import compare

    c = compare(ref, out, labels, tol)  # the gate parity applies (near-ties, one-sided paired accuracy test)
    print(f"openvino {fmt}: max|d|={c.tensor.max_abs:.3g} top1 agreement={c.task.top1_agree_count}/{c.task.n} "
          f"d_acc={c.task.delta_acc_pp:+.2f}pp snr={c.tensor.snr_db:.1f}dB {m.placement['where']}")
    assert c.passed, [f.message for f in c.failures]
    assert m.placement["devices"] == ["CPU"] and m.placement["precision"] == "f32"


def test_bench_bare_openvino_loop_compiles_f32_like_the_backend(linear_onnx, batch):
    """OpenVINO's CPU default is bf16 on CPUs with BF16/AMX: the bare loop must ask for f32 too,
    or the overhead ratio compares two precisions."""
    from edgeproof.bench.baselines import bare_baseline

    path, ref = linear_onnx
    m = load(path, backend="openvino", threads=1)
    bare = bare_baseline("openvino", path, 1, batch, m)
    assert bare.notes["precision"] == m.placement["precision"] == "f32"
    assert np.abs(bare.call() - ref(batch)).max() < 1e-5 and bare.call_user is None
    m.close()


@pytest.mark.slow
def test_bench_bare_openvino_loop_on_int8_tflite(tiny_artifacts):
    """int8 I/O: the bare loop quantizes with the scale from the backend's input spec (OpenVINO hides it)."""
    from edgeproof.bench.baselines import bare_baseline
    from edgeproof.bench.runner import bench_input

    path = tiny_artifacts / "model.tflite-int8.tflite"
    m = load(path, backend="openvino", threads=1)
    pp = m.preprocess
    x = bench_input(pp.height, pp.width, 1, 0, pp)
    bare = bare_baseline("openvino", path, 1, x, m)
    assert m.input_spec.dtype == "int8" and m.input_spec.scale
    assert bare.call_user is not None and bare.notes["precision"] == "f32"
    out = np.asarray(bare.call_user(), np.float32)
    assert out.shape == m.predict(x).shape and np.abs(out - m.predict(x)).max() < 1e-5
    bare.call()
    m.close()


def test_a_file_that_crashes_openvino_is_one_error_not_a_dead_process(linear_onnx, tmp_path, monkeypatch):
    """OpenVINO's CPU plugin SIGSEGVs on some valid files (the zoo's NASNetMobile onnx-int8): load() compiles and runs
    the file in a guarded child first, so the crash is an InvalidModel line (convert's search then skips the recipe)."""
    import edgeproof.runtime.backends.openvino as ov_backend
    from edgeproof.runtime.model_check import InvalidModel

    path, _ = linear_onnx
    monkeypatch.setenv("EDGEPROOF_CACHE", str(tmp_path / "cache"))  # the crash verdict is cached by sha256
    monkeypatch.setattr(ov_backend, "OPENVINO_TRIAL", "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n")
    with pytest.raises(InvalidModel, match="crashed the OpenVINO importer \\(SIGSEGV\\)"):
        load(path, backend="openvino")
    monkeypatch.setenv("EDGEPROOF_CACHE", str(tmp_path / "cache2"))
    monkeypatch.setattr(ov_backend, "OPENVINO_TRIAL", "import sys\nassert sys.argv[1].endswith('.onnx')\n")
    with load(path, backend="openvino") as m:  # the real file runs once the trial says it is safe
        assert m.backend_name == "openvino"


_TWO_MODELS_THEN_SIGTERM = r'''
import signal, sys
sys.path.insert(0, sys.argv[1])
from _tiny_onnx import build_linear_onnx
from edgeproof.runtime import load
from edgeproof.runtime.stop_signals import Terminated, terminate_as_interrupt
from pathlib import Path

path, _ = build_linear_onnx(Path(sys.argv[2]))
first, second = load(path, backend="openvino"), load(path, backend="openvino")
first.close()   # closed in load order, not the reverse: what parity and serve do with several artifacts
second.close()
try:
    with terminate_as_interrupt():
        signal.raise_signal(signal.SIGTERM)
except Terminated:
    print("stopped cleanly")
'''


def test_sigterm_after_two_openvino_models_stops_cleanly_not_with_sigsegv(tmp_path):
    """Each openvino.Core's CPU plugin installs an alternate signal stack and unmaps it when destroyed; two Cores
    destroyed out of order left the main thread's stack unmapped, and SIGTERM or Ctrl-C then died with SIGSEGV
    (rc -11; it killed the suite). edgeproof uses one shared Core, so the signal is handled."""
    import subprocess
    import sys
    from pathlib import Path

    r = subprocess.run([sys.executable, "-c", _TWO_MODELS_THEN_SIGTERM, str(Path(__file__).parent),
                        str(tmp_path / "linear.onnx")], capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0 and r.stdout.strip() == "stopped cleanly", (r.returncode, r.stderr[-2000:])
