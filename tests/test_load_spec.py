"""LoadSpec: every load option is checked once, at the library boundary, with the CLI's messages;
and the backend seam: load/inspect/bench/devices read backend facts from the backend classes."""

from __future__ import annotations

import pickle
import re
from dataclasses import FrozenInstanceError, replace
from pathlib import Path

import numpy as np
import pytest

from edgeproof.errors import UsageError
from edgeproof.formats import BACKENDS, FORMATS, backend_class
from edgeproof.runtime import load
from edgeproof.runtime.backends.base import Backend
from edgeproof.runtime.spec import MAX_THREADS, LoadSpec

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("kwargs,message", [
    ({"threads": 0}, "--threads must be >= 1; got 0"),
    ({"threads": -3}, "--threads must be >= 1; got -3"),
    ({"threads": MAX_THREADS + 1}, f"--threads must be at most {MAX_THREADS}"),
    ({"threads": True}, "--threads takes a whole number"),
    ({"threads": 2.5}, "--threads takes a whole number"),
    ({"backend": "tensorrt"}, "unknown backend 'tensorrt'; valid backends: "),
    ({"overrides": {"std": [0.0]}}, "contains 0; every std value must be non-zero"),
    ({"overrides": {"std": [1.0, 0.0, 1.0]}}, "contains 0"),
    ({"overrides": {"std": [float("nan")]}}, "--std nan,nan,nan is not finite"),
    ({"overrides": {"mean": [1.0, float("inf"), 2.0]}}, "--mean 1,inf,2 is not finite"),
    ({"overrides": {"mean": [1.0] * 65}}, "--mean takes 1 number or one per channel"),
    ({"overrides": {"channels": 0}}, "--channels takes the model input's channel count"),
    ({"overrides": {"scale": float("inf")}}, "--scale inf is not finite"),
    ({"overrides": {"size": (0, 32)}}, "--size 0x32 is not valid"),
    ({"overrides": {"colour": "BGR"}}, r"unknown override\(s\) \['colour'\]"),
    ({"delegates": [""]}, "--delegate takes names"),
    ({"device": ""}, "--device takes a profile name"),
    ({"path": ""}, "the model path takes a .tflite or .onnx file name; got ''"),
    ({"path": None}, "the model path takes"),
])
def test_bad_options_are_refused_when_built(kwargs, message):
    with pytest.raises(UsageError, match=message) as exc:
        LoadSpec(**{"path": "m.tflite", **kwargs})
    assert "\n" not in str(exc.value) and exc.value.exit_code == 2


def test_good_options_are_normalised():
    o = LoadSpec("m.onnx", threads=2, delegates=["libedgetpu.so.1"], providers="CPUExecutionProvider",
                    overrides={"mean": [127.5], "std": (127.5, 127.5, 127.5), "size": ["32", 32], "bgr": 1,
                               "labels": ("a", "b"), "scale": None})
    assert o.path == Path("m.onnx") and o.threads == 2 and o.delegates == ("libedgetpu.so.1",) and o.providers == ("CPUExecutionProvider",)
    assert o.overrides == {"mean": (127.5,) * 3, "std": (127.5,) * 3, "size": (32, 32), "bgr": True,
                           "labels": ["a", "b"]}


def test_library_load_refuses_std_zero_before_touching_the_file(tmp_path):
    # A library caller used to get a NaN error from deep inside predict; now the same line as the CLI.
    with pytest.raises(UsageError, match="contains 0"):
        load(tmp_path / "missing.tflite", overrides={"std": [0]})
    with pytest.raises(UsageError, match="--threads must be >= 1"):
        load(tmp_path / "missing.tflite", threads=0)


def test_an_option_the_chosen_backend_does_not_take_is_refused(linear_models):
    """--provider for a .tflite on LiteRT, --delegate for ONNX Runtime: refused, never silently ignored."""
    with pytest.raises(UsageError, match="runs on backend 'litert': providers CUDAExecutionProvider .* do not apply to backend 'litert'"):
        load(linear_models["tflite"], providers=["CUDAExecutionProvider"])
    with pytest.raises(UsageError, match="runs on backend 'onnxruntime': delegates libedgetpu.so.1 are LiteRT delegate libraries"):
        load(linear_models["onnx"], delegates=["libedgetpu.so.1"])
    with pytest.raises(UsageError, match="end in 'ExecutionProvider'"):
        load(linear_models["onnx"], providers=["CUDA"])


def test_load_accepts_a_checked_spec(linear_models):
    spec = LoadSpec(linear_models["onnx"], threads=1, overrides={"labels": ["a", "b", "c"]})
    with load(spec) as m:
        assert m.labels == ["a", "b", "c"] and m.backend.threads == 1 and m.backend.verified_sha256 is None
        assert m.predict(np.zeros((1, 8, 8, 3), np.float32)).shape == (1, 3)
    with pytest.raises(TypeError, match="takes a LoadSpec alone; put threads in it"):
        load(spec, threads=2)


def test_the_spec_is_frozen_and_survives_pickling_for_ray_and_worker_processes(linear_models):
    spec = LoadSpec(str(linear_models["onnx"]), threads=1, providers=["CPUExecutionProvider"],
                    overrides={"labels": ["a", "b", "c"], "mean": [0.5]}, verify=False)
    with pytest.raises(FrozenInstanceError):
        spec.threads = 4  # type: ignore[misc]
    copy = pickle.loads(pickle.dumps(spec))
    assert copy == spec and copy.overrides["mean"] == (0.5, 0.5, 0.5)
    with load(copy) as m:  # what a Ray actor does with the driver's spec
        assert m.labels == ["a", "b", "c"] and m.backend.threads == 1
    assert replace(spec, threads=3).threads == 3 and spec.with_path("other.onnx").path == Path("other.onnx")
    with pytest.raises(UsageError, match="--threads must be >= 1"):
        replace(spec, threads=0)  # a changed copy is checked again


# ---- the backend seam ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(BACKENDS))
def test_every_registered_backend_is_a_backend_class_with_its_hooks(name):
    cls = backend_class(name)
    assert issubclass(cls, Backend) and cls.name == name
    for hook in ("check_profile", "check_options", "profile_options", "profile_accelerator", "profile_facts",
                 "host_checks", "bare_loop", "inspect_load"):
        assert callable(getattr(cls, hook)), hook
    assert set(cls.takes) <= {"delegates", "providers", "provider_options"}


# Which backends run each format, preferred first, as a person states it: the Edge TPU file
# only on LiteRT with libedgetpu; int16x8 not on LiteRT CompiledModel; ONNX int8 not on OpenCV DNN.
EXPECTED_BACKENDS = {
    "tflite-fp32": ("litert", "openvino", "litert-compiled"), "tflite-fp16": ("litert", "openvino", "litert-compiled"),
    "tflite-dynamic": ("litert", "openvino", "litert-compiled"), "tflite-int8": ("litert", "openvino", "litert-compiled"),
    "tflite-int16x8": ("litert", "openvino"), "edgetpu": ("litert",),
    "onnx-fp32": ("onnxruntime", "opencv", "openvino"), "onnx-int8": ("onnxruntime", "openvino"),
}


def test_each_format_lists_the_backends_that_run_it():
    assert {name: fmt.backends for name, fmt in FORMATS.items()} == EXPECTED_BACKENDS


SEAM_FILES = ["runtime/model.py", "runtime/inspect.py", "runtime/guard.py", "edgeproof/bench/runner.py", "edgeproof/bench/baselines.py",
              "edgeproof/bench/summary.py", "edgeproof/bench/report.py", "devices/profiles.py", "edgeproof/cli/devices.py",
              "edgeproof/cli/bench.py", "edgeproof/cli/inspect.py"]


@pytest.mark.parametrize("rel", SEAM_FILES)
def test_the_seam_files_never_name_a_backend(rel):
    """load, inspect, bench and devices loop over the registry; a backend's knowledge is on its class."""
    text = (ROOT / rel).read_text(encoding="utf-8")
    named = [n for n in BACKENDS if re.search(rf"""["']{re.escape(n)}["']""", text)]
    assert not named, f"{rel} names backend(s) {named}"


@pytest.fixture(scope="module")
def linear_models(tmp_path_factory):
    """A tiny metadata-less .onnx (linear 8x8x3 -> 3 classes, no TensorFlow needed) and a .tflite path whose
    bytes no runtime reads (the option check comes first)."""
    pytest.importorskip("onnx")
    from _tiny_onnx import build_linear_onnx

    root = tmp_path_factory.mktemp("linear")
    onnx_path, _ = build_linear_onnx(root / "linear.onnx")
    tfl = root / "linear.tflite"
    tfl.write_bytes(b"TFL3 never read")
    return {"onnx": onnx_path, "tflite": tfl}
