"""The litert-compiled backend (LiteRT 2.x CompiledModel): same results as the Interpreter, bench with its
bare loop, placement from is_fully_accelerated(), device profiles, and accelerators that are missing here.

The shared format-table tests (parity rows, runtime artifacts, inspect) pick it up from the registry.
"""

from __future__ import annotations

import ctypes
import json

import numpy as np
import pytest

from edgeproof.cli.main import run_cli
from edgeproof.devices import get_profile
from edgeproof.errors import EdgeproofError, UsageError
from edgeproof.formats import FORMATS
from edgeproof.runtime import load
from edgeproof.runtime.backends import litert_compiled as lc
from edgeproof.runtime.preprocess import load_batch

pytest.importorskip("ai_edge_litert.compiled_model", reason="needs ai-edge-litert 2.x (CompiledModel)")
NAME = "litert-compiled"


@pytest.fixture(scope="module")
def tm():
    pytest.importorskip("tensorflow", reason="builds its tiny models with edgeproof[train]")
    from _runtime_models import tiny_models

    return tiny_models()


def _has_vulkan() -> bool:
    try:
        ctypes.CDLL(lc.VULKAN_LIBRARY)
    except OSError:
        return False
    return True


# The formats LiteRT CompiledModel runs, as a person states them: every plain TFLite file; not the Edge TPU's
# (its custom op needs the libedgetpu delegate of backend litert), not int16x8 (kernels CompiledModel lacks).
RUNS = ["tflite-fp32", "tflite-fp16", "tflite-dynamic", "tflite-int8"]


def test_the_format_table_gives_it_the_plain_tflite_formats():
    assert [f for f, fmt in FORMATS.items() if NAME in fmt.backends] == RUNS


@pytest.mark.slow
@pytest.mark.parametrize("key", RUNS + ["bare-fp32", "bare-int8", "bare-uint8"])
def test_same_scores_as_the_interpreter_and_batches(tm, key):
    """Each format it is listed for, run on it and on the Interpreter (another runtime): the same scores."""
    with load(tm.files[key], backend="litert") as ref, load(tm.files[key], backend=NAME, threads=1) as m:
        x, _, skipped = load_batch(tm.images, ref.preprocess)
        assert not skipped
        assert m.backend_name == NAME and m.input_spec == ref.input_spec and m.labels == ref.labels
        assert not m.backend.batch_ok  # one image per call: resizing aborted LiteRT on some models
        np.testing.assert_allclose(m.predict(x), ref.predict(x), atol=1e-6)
        np.testing.assert_allclose(m.predict(x[:1]), ref.predict(x[:1]), atol=1e-6)


@pytest.mark.slow
def test_a_known_models_placement(tm):
    """The tiny CNN (conv, pooling, dense, softmax: builtin ops XNNPACK takes) runs wholly on the CPU, and
    its op count is the one the Interpreter, another runtime, reads from the same file."""
    from edgeproof.runtime.backends.tflite_interpreter import bare_interpreter

    ops = len(bare_interpreter(tm.files["tflite-fp32"])._get_ops_details())
    with load(tm.files["tflite-fp32"], backend=NAME) as m:
        pl = m.placement
        assert pl["fully_accelerated"] is True and pl["accelerators"] == ["CPU"]
        assert pl["accelerator"] == 0 and pl["cpu"] == pl["total"] == ops > 3
        assert pl["where"] == "cpu (LiteRT CompiledModel, XNNPACK)" and not pl["fallback"]


@pytest.mark.skipif(_has_vulkan(), reason="this host has a Vulkan loader: a WebGPU adapter may exist")
@pytest.mark.slow
def test_gpu_without_an_adapter_is_one_line_naming_why_or_a_loud_fallback(tm, capfd):
    with pytest.raises(EdgeproofError) as exc:
        load(tm.files["tflite-fp32"], backend=NAME, providers=["GPU", "CPU"])
    msg = str(exc.value)
    assert "LiteRT GPU is not available (no WebGPU adapter found" in msg and "--allow-fallback" in msg
    assert "\n" not in msg and exc.value.exit_code == 2
    assert "INFO: [" not in capfd.readouterr().err  # LiteRT's native log stays off the terminal
    with load(tm.files["tflite-fp32"], backend=NAME, providers=["GPU"], allow_fallback=True) as m:
        assert m.placement["fallback"] and m.placement["failed_accelerators"] == ["GPU"]
        assert m.placement["accelerators"] == ["CPU"] and "FALLBACK: GPU" in m.placement["where"]
    err = capfd.readouterr().err
    assert "ACCELERATOR FALLBACK" in err and "RUNNING ON THE CPU INSTEAD" in err and "INFO: [" not in err


@pytest.mark.slow
def test_npu_without_a_dispatch_library_is_an_error_not_a_silent_cpu_run(tm, monkeypatch):
    # LiteRT itself would compile NPU+CPU for the CPU alone and call it fully accelerated.
    monkeypatch.setattr(lc, "_npu_missing", lambda loader=None: "no NPU: no LiteRT vendor dispatch library loads")
    with pytest.raises(EdgeproofError, match=r"LiteRT NPU is not available \(no NPU: no LiteRT vendor dispatch"):
        load(tm.files["tflite-int8"], device="litert-npu")
    with load(tm.files["tflite-int8"], device="litert-npu", allow_fallback=True) as m:
        assert m.backend_name == NAME and m.placement["failed_accelerators"] == ["NPU"]
        assert m.placement["requested"] == ["NPU", "CPU"] and m.placement["accelerators"] == ["CPU"]


def test_profiles_select_it_with_an_accelerator(tmp_path):
    gpu, npu = get_profile("litert-gpu"), get_profile("litert-npu")
    assert gpu.backend == npu.backend == NAME
    assert gpu.accelerator == "LiteRT GPU" and npu.accelerator == "LiteRT NPU"
    assert all(NAME in FORMATS[a].backends for a in gpu.artifacts + npu.artifacts)
    path = tmp_path / "model.tflite"
    path.write_bytes(b"TFL3 never read: the options are checked first")
    with pytest.raises(UsageError, match="providers are LiteRT accelerators"):
        load(path, backend=NAME, providers=["CUDAExecutionProvider"])


def test_host_checks_name_what_is_missing():
    def loader(lib):
        raise OSError(f"{lib}: cannot open shared object file: No such file or directory")

    checks = dict((m, ok) for ok, m in lc.LiteRTCompiledBackend.host_checks(get_profile("litert-gpu"), None, loader))
    assert checks["ai-edge-litert installed"] is True
    assert any(m.startswith("LiteRT GPU needs a WebGPU adapter: libvulkan.so.1 does not load") for m in checks)
    npu = lc.LiteRTCompiledBackend.host_checks(get_profile("litert-npu"), None, loader)
    assert npu[-1][0] is False and npu[-1][1].startswith("LiteRT NPU: no NPU: no LiteRT vendor dispatch library")


def test_devices_show_lists_the_accelerators(capsys):
    assert run_cli(["devices", "show", "litert-gpu"]) == 0
    out = capsys.readouterr().out
    assert "LiteRT accelerators  GPU -> CPU" in out and "accelerator" in out and "LiteRT GPU" in out


@pytest.mark.slow
def test_bench_compares_it_with_its_bare_loop(tm, capsys):
    argv = ["bench", str(tm.files["tflite-int8"]), "--backend", NAME, "--threads", "1", "--runs", "30",
            "--warmup", "3", "--no-isolate", "--json"]
    assert run_cli(argv) == 0
    (r,) = json.loads(capsys.readouterr().out)["results"]
    assert r["status"] == "ok" and r["backend"] == NAME, r.get("error")
    assert r["baseline"]["name"] == "litert CompiledModel run_by_index()" and r["overhead_ratio"] > 0
    assert r["overhead_vs_quantizing_loop"] > 0  # int8 I/O: the loop that also (de)quantizes per call
    assert r["placement"]["accelerators"] == ["CPU"]


@pytest.mark.slow
def test_bare_loop_matches_the_backend(tm):
    from edgeproof.bench.baselines import bare_baseline

    with load(tm.files["tflite-fp32"], backend=NAME, threads=1) as m:
        x = np.random.default_rng(0).random((1, m.preprocess.height, m.preprocess.width, m.preprocess.channels), dtype=np.float32)
        bare = bare_baseline(NAME, tm.files["tflite-fp32"], 1, x, m)
        assert bare.call_user is None
        np.testing.assert_allclose(np.asarray(bare.call()).reshape(1, -1), m.backend.run(x), atol=1e-7)
