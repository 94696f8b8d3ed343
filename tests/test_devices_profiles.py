"""Device profiles: every shipped TOML validates, and the schema rejects each kind of mistake."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from edgeproof.devices import PROFILE_DIR, get_profile, list_profiles, profile_names
from edgeproof.devices.profiles import load_profile_file, validate
from edgeproof.errors import UsageError
from edgeproof.formats import BACKENDS, FORMATS

REQUIRED = ("generic-x86_64", "generic-aarch64", "rpi4", "rpi5", "coral", "jetson", "intel", "android-npu")
SHIPPED = sorted(PROFILE_DIR.glob("*.toml"))


def test_required_profiles_exist():
    missing = [n for n in REQUIRED if n not in profile_names()]
    assert not missing, missing


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_profile_is_valid(path: Path):
    p = load_profile_file(path)
    assert p.name == path.stem
    assert p.backend in BACKENDS
    assert p.artifacts and all(a in FORMATS and p.backend in FORMATS[a].backends for a in p.artifacts)
    assert p.install and all("tensorflow" not in line.lower() for line in p.install)
    assert p.limits, "every profile documents its known limits"


def test_accelerator_profiles_request_their_accelerator():
    coral = get_profile("coral")
    assert coral.backend == "litert" and coral.delegates == ["libedgetpu.so.1"]
    assert coral.artifacts[0] == "edgetpu"
    assert any("libedgetpu1" in line for line in coral.install)
    jetson = get_profile("jetson")
    assert jetson.providers == ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert jetson.required_providers == ["TensorrtExecutionProvider", "CUDAExecutionProvider"]
    assert jetson.provider_options["TensorrtExecutionProvider"]["trt_engine_cache_enable"] is True
    assert get_profile("android-npu").required_providers == ["NnapiExecutionProvider"]
    assert get_profile("qnn").required_providers == ["QNNExecutionProvider"]
    for name, dev in (("intel", "CPU"), ("intel-gpu", "GPU"), ("intel-npu", "NPU")):
        p = get_profile(name)
        assert p.backend == "openvino" and p.openvino_device == dev and p.required_providers == []
    assert get_profile("intel").accelerator == "" and get_profile("intel-gpu").accelerator == "OpenVINO GPU"
    for name in ("rpi4", "rpi5"):
        p = get_profile(name)
        assert p.threads == 4 and p.artifacts[0] == "tflite-int8" and p.arch == ["aarch64"]


def test_get_profile_unknown_lists_valid_names():
    with pytest.raises(UsageError) as exc:
        get_profile("rpi9")
    msg = str(exc.value)
    assert "rpi9" in msg and all(n in msg for n in REQUIRED)


def test_get_profile_returns_independent_copies():
    a = get_profile("coral")
    a.delegates.append("libbogus.so")
    a.threads = 99
    assert get_profile("coral").delegates == ["libedgetpu.so.1"] and get_profile("coral").threads is None
    assert [p.name for p in list_profiles()] == sorted(profile_names())


def test_custom_profile_file(tmp_path):
    text = (PROFILE_DIR / "rpi5.toml").read_text().replace('name = "rpi5"', 'name = "my-board"')
    path = tmp_path / "my-board.toml"
    path.write_text(text.replace("threads = 4", "threads = 2"))
    p = get_profile(str(path))
    assert p.name == "my-board" and p.threads == 2
    path2 = tmp_path / "other-name.toml"
    path2.write_text(text)
    with pytest.raises(UsageError, match="file name stem"):
        get_profile(str(path2))


def _base() -> dict:
    return {"name": "x", "description": "d", "arch": ["x86_64"], "artifacts": ["tflite-fp32"],
            "backend": "litert", "install": ["pip install edgeproof"], "limits": []}


def test_minimal_profile_is_valid():
    p = validate(_base())
    assert p.threads is None and p.delegates == [] and p.accelerator == ""


BAD = [
    ({"colour": "red"}, "unknown key"),
    ({"threads": "4"}, "'threads' must be int"),
    ({"threads": True}, "'threads' must be int"),
    ({"threads": 0}, "threads must be >= 1"),
    ({"artifacts": ["tflite-int4"]}, "not a format"),
    ({"artifacts": []}, "must not be empty"),
    ({"artifacts": ["tflite-fp32", "tflite-fp32"]}, "twice"),
    ({"artifacts": ["onnx-fp32"]}, "cannot load artifact"),
    ({"backend": "tensorrt"}, "backend 'tensorrt' is not one of"),
    ({"arch": ["riscv64"]}, "unknown arch"),
    ({"arch": "x86_64"}, "'arch' must be list"),
    ({"providers": ["CUDAExecutionProvider"]}, "do not apply to backend"),
    ({"backend": "onnxruntime", "artifacts": ["onnx-fp32"], "providers": ["CUDA"]}, "end in 'ExecutionProvider'"),
    ({"backend": "onnxruntime", "artifacts": ["onnx-fp32"], "delegates": ["libedgetpu.so.1"]}, "LiteRT delegate libraries"),
    ({"backend": "onnxruntime", "artifacts": ["onnx-fp32"], "providers": ["CPUExecutionProvider"],
      "provider_options": {"CUDAExecutionProvider": {"device_id": 0}}}, "not in providers"),
    ({"backend": "openvino", "artifacts": ["onnx-fp32"], "providers": ["TPU"]}, "one OpenVINO device"),
    ({"backend": "openvino", "artifacts": ["onnx-fp32"], "providers": ["GPU", "CPU"]}, "one OpenVINO device"),
    ({"install": ["pip install tensorflow"]}, "runtime only"),
    ({"install": ["pip install 'edgeproof[train]'"]}, "runtime only"),
    ({"install": []}, "must not be empty"),
    ({"install": ["sudo apt install foo   # a note"]}, "swallow the lines after it"),
    ({"input_size_hint": 4}, "between 16 and 1024"),
    ({"name": "Bad Name"}, "lower-case"),
    ({"description": "  "}, "must not be empty"),
]


@pytest.mark.parametrize("change,message", BAD, ids=[m for _, m in BAD])
def test_schema_rejects(change, message):
    data = {**copy.deepcopy(_base()), **change}
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate(data)


def test_missing_required_key():
    data = _base()
    del data["limits"]
    with pytest.raises(UsageError, match="missing required key 'limits'"):
        validate(data)


def test_bad_toml_is_one_clear_error(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text('name = "broken"\nartifacts = [\n')
    with pytest.raises(UsageError, match="not valid TOML"):
        load_profile_file(path)
    with pytest.raises(UsageError, match="device profile .*absent.toml.: cannot read it"):
        load_profile_file(tmp_path / "absent.toml")


def test_openvino_device_accepts_indexed_gpu():
    p = validate({**_base(), "backend": "openvino", "artifacts": ["onnx-fp32"], "providers": ["GPU.1"]})
    assert p.openvino_device == "GPU.1" and p.accelerator == "OpenVINO GPU.1"


def test_profiles_import_nothing_heavy():
    import subprocess
    import sys

    code = ("import sys; from edgeproof.devices import get_profile, list_profiles; list_profiles(); "
            "get_profile('coral'); heavy = ('tensorflow', 'keras', 'onnxruntime', 'openvino', 'cv2', 'onnx'); "
            "bad = [k for k in sys.modules if k.split('.')[0] in heavy]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
