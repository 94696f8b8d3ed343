"""convert_run behaviour on hand-made runs: failures, atomicity, manifest merging, size, hooks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from _convert_helpers import fake_run, small_cnn

from edgeproof.cli.main import run_cli
from edgeproof.errors import UsageError
from edgeproof.runtime.metadata import read_metadata

pytest.importorskip("tensorflow", reason="needs edgeproof[train]")


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    return fake_run(tmp_path_factory.mktemp("small") / "run", small_cnn(16, 3), ["a", "b", "c"], 16)


@pytest.fixture(scope="module")
def igamma_run(tmp_path_factory) -> Path:
    """A model with a layer neither TFLite builtins nor tf2onnx can convert (tf.math.igamma)."""
    import keras
    import tensorflow as tf

    @keras.saving.register_keras_serializable("edgeproof_tests")
    class WeirdGamma(keras.layers.Layer):
        def call(self, x):
            return tf.math.igamma(tf.abs(x) + 1.0, tf.abs(x) + 1.0)

    inp = keras.Input((16, 16, 3), name="image")
    x = WeirdGamma(name="weird_gamma")(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, keras.layers.Dense(2, activation="softmax")(x))
    return fake_run(tmp_path_factory.mktemp("igamma") / "run", model, ["x", "y"], 16, n_per_class=6)


def test_full_int8_is_at_most_30_percent_of_fp32(tmp_path):
    from edgeproof.convert import convert_run

    model = small_cnn(32, 3, width=8, dense=32)
    assert model.count_params() >= 100_000
    run = fake_run(tmp_path / "run", model, ["a", "b", "c"], 32)
    m = convert_run(run, tmp_path / "out", ["tflite-fp32", "tflite-int8"], calib_count=24)
    fp32, int8 = m.get("tflite-fp32"), m.get("tflite-int8")
    assert fp32.status == int8.status == "ok"
    assert int8.bytes <= 0.30 * fp32.bytes, (int8.bytes, fp32.bytes)


@pytest.mark.parametrize("io", ["uint8", "float32"])
def test_int8_io_type(io, small_run, tmp_path):
    from edgeproof.convert import convert_run

    m = convert_run(small_run, tmp_path, ["tflite-int8"], calib_count=12, int8_io=io)
    meta = read_metadata(m.get("tflite-int8").path)
    assert meta.input.dtype == io and meta.output.dtype == io
    assert (meta.input.scale is None) == (io == "float32")


@pytest.mark.slow
def test_unconvertible_layer_is_named_and_others_continue(igamma_run, small_run, tmp_path, monkeypatch, capsys):
    from edgeproof.convert import convert_run

    m = convert_run(igamma_run, tmp_path / "a", ["tflite-fp32", "onnx-fp32"])
    for name, op in (("tflite-fp32", "tf.Igamma"), ("onnx-fp32", "Igamma")):
        r = m.get(name)
        assert r.status == "failed" and r.path is None
        assert r.error.startswith(f"{name}:") and "weird_gamma" in r.error and op in r.error
    assert not list((tmp_path / "a").glob("model.*"))
    # the CLI shows every failure and exits 2 (the model cannot be converted to that format)
    code = run_cli(["convert", str(igamma_run), "--to", "tflite-fp32", "-o", str(tmp_path / "b"), "--no-progress"])
    assert code == 2 and "weird_gamma" in capsys.readouterr().err
    # one format failing does not stop the others (onnx-int8 reports why it could not start)
    from edgeproof.convert import onnx_export

    def boom(*a, **k):
        raise RuntimeError("injected tf2onnx failure")

    monkeypatch.setattr(onnx_export, "to_onnx", boom)
    m = convert_run(small_run, tmp_path / "c", ["tflite-fp32", "onnx-fp32", "onnx-int8", "tflite-fp16"], calib_count=12)
    assert [a.status for a in m.artifacts] == ["ok", "ok", "failed", "failed"]
    assert "injected tf2onnx failure" in m.get("onnx-int8").error


def test_manifest_merges_and_failed_reconversion_removes_stale_file(small_run, tmp_path, monkeypatch):
    from edgeproof.convert import convert_run

    convert_run(small_run, tmp_path, ["tflite-fp32"])
    first = json.loads((tmp_path / "manifest.json").read_text())["artifacts"]["tflite-fp32"]
    convert_run(small_run, tmp_path, ["onnx-fp32"])
    data = json.loads((tmp_path / "manifest.json").read_text())
    assert set(data["artifacts"]) == {"tflite-fp32", "onnx-fp32"}
    assert data["artifacts"]["tflite-fp32"]["sha256"] == first["sha256"]
    import edgeproof.convert.tflite as tfl

    monkeypatch.setattr(tfl, "to_tflite", lambda *a, **k: (_ for _ in ()).throw(ValueError("bad op")))
    m = convert_run(small_run, tmp_path, ["tflite-fp32"])
    assert m.get("tflite-fp32").status == "failed" and m.get("onnx-fp32").status == "ok"
    assert not (tmp_path / "model.tflite-fp32.tflite").exists()  # no artifact that the manifest calls failed
    assert (tmp_path / "model.onnx-fp32.onnx").exists()


def test_interrupted_write_leaves_nothing(small_run, tmp_path, monkeypatch):
    from edgeproof.convert import convert_run, verify

    def interrupt(path, *a, **k):
        assert Path(path).stat().st_size > 0  # the bytes are on disk under the temp name
        raise KeyboardInterrupt

    monkeypatch.setattr(verify, "verify_tflite", interrupt)
    with pytest.raises(KeyboardInterrupt):
        convert_run(small_run, tmp_path, ["tflite-fp32"])
    assert [p.name for p in tmp_path.iterdir() if p.name != "manifest.json"] == []


@pytest.mark.slow
def test_killed_process_leaves_no_complete_looking_file(small_run, tmp_path):
    """SIGKILL in the middle of writing an artifact: only a hidden *.tmp can remain."""
    script = textwrap.dedent(f"""
        import os, signal
        import edgeproof.convert.verify as verify
        def die(path, *a, **k):
            os.kill(os.getpid(), signal.SIGKILL)
        verify.verify_tflite = die
        from edgeproof.convert import convert_run
        convert_run({str(small_run)!r}, {str(tmp_path)!r}, ["tflite-fp32"])
    """)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, timeout=300, check=False)
    assert proc.returncode == -9, proc.stderr[-2000:]
    left = [p.name for p in tmp_path.iterdir()]
    assert "model.tflite-fp32.tflite" not in left
    assert all(n.startswith(".") and n.endswith(".tmp") or n == "manifest.json" for n in left), left
    if "manifest.json" in left:
        assert "tflite-fp32" not in json.loads((tmp_path / "manifest.json").read_text())["artifacts"]


def _fake_compiler(tmp_path, monkeypatch) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir(parents=True)
    fake = bindir / "edgetpu_compiler"
    # Stands in for the Coral compiler: refuses input with edgeproof's zip trailer, copies the model.
    fake.write_text(textwrap.dedent("""\
        #!/bin/sh
        while [ $# -gt 1 ]; do case "$1" in -o) out="$2"; shift 2;; *) shift;; esac; done
        if grep -q metadata.json "$1"; then echo "input still has metadata" >&2; exit 3; fi
        cp "$1" "$out/$(basename "$1" .tflite)_edgetpu.tflite"
        echo "Number of operations that will run on Edge TPU: 7"
        echo "Number of operations that will run on CPU: 2"
    """))
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")


def test_edgetpu_compiler_gets_bare_flatbuffer_and_metadata_survives(small_run, tmp_path, monkeypatch):
    from edgeproof.convert import convert_run

    _fake_compiler(tmp_path, monkeypatch)
    m = convert_run(small_run, tmp_path / "out", ["edgetpu"], calib_count=12)
    r = m.get("edgetpu")
    assert r.status == "ok", r.error
    meta = read_metadata(r.path)
    assert meta.extra["edgetpu"]["compiled"] is True
    assert meta.extra["edgetpu"]["placement"] == {"accelerator": 7, "cpu": 2, "total": 9}
    assert meta.input.dtype == "uint8"


def test_compile_hint_and_compile_later(small_run, tmp_path, monkeypatch):
    from edgeproof.convert import convert_run
    from edgeproof.convert.edgetpu import compile_artifact

    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    r = convert_run(small_run, tmp_path, ["edgetpu"], calib_count=12).get("edgetpu")
    assert r.status == "ok" and any("edgetpu_compiler is not on PATH" in n for n in r.notes)
    with pytest.raises(UsageError, match="not on PATH"):
        compile_artifact(r.path)

    # Compiling in place later updates the manifest entry, so the runtime's sha256 check still passes.
    from edgeproof.runtime.integrity import sha256_file, verify_manifest

    before = r.sha256
    _fake_compiler(tmp_path / "c", monkeypatch)
    compile_artifact(r.path)
    entry = json.loads((tmp_path / "manifest.json").read_text())["artifacts"]["edgetpu"]
    assert entry["status"] == "ok" and entry["sha256"] == sha256_file(r.path) != before
    assert entry["bytes"] == r.path.stat().st_size and not any("not on PATH" in n for n in entry["notes"])
    assert verify_manifest(r.path) == entry["sha256"]


def test_denylist_and_int16x8_hooks(small_run):
    import keras

    from edgeproof.convert.calibration import calibration_batch
    from edgeproof.convert.tflite import float_ops, tensor_names, to_tflite

    model = keras.saving.load_model(small_run / "model.keras", compile=False)
    calib, _, _ = calibration_batch(small_run, 12)
    plain = to_tflite(model, "tflite-int8", calib=calib)
    conv = [n for n in tensor_names(plain) if "conv2" in n and "Relu" in n]  # conv1 is float by the recipe
    assert conv, tensor_names(plain)
    kept = to_tflite(model, "tflite-int8", calib=calib, denylisted_nodes=conv[:1])
    assert float_ops(plain) == {"CONV_2D": 1}  # the recipe's float first convolution
    assert float_ops(kept).get("CONV_2D") == 2
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=to_tflite(model, "tflite-int8", calib=calib, int16x8=True))
    assert it.get_input_details()[0]["dtype"] == np.int16
    with pytest.raises(UsageError, match="not tensors of this model"):
        to_tflite(model, "tflite-int8", calib=calib, denylisted_nodes=["no/such/tensor"])
    with pytest.raises(UsageError, match="full-integer"):
        to_tflite(model, "tflite-fp16", int16x8=True)


def test_quantize_onnx_excludes_nodes(small_run, tmp_path):
    import keras
    import onnx

    from edgeproof.convert.calibration import calibration_batch
    from edgeproof.convert.onnx_export import to_onnx
    from edgeproof.convert.onnx_quant import quantize_onnx

    model = keras.saving.load_model(small_run / "model.keras", compile=False)
    onnx.save(to_onnx(model), str(tmp_path / "fp32.onnx"))
    calib, _, _ = calibration_batch(small_run, 12)
    full = onnx.load(str(quantize_onnx(tmp_path / "fp32.onnx", tmp_path / "a.onnx", calib)))
    conv = [n.name for n in onnx.load(str(tmp_path / "fp32.onnx")).graph.node if n.op_type == "Conv"][1]  # the
    # first Conv is float by the recipe
    part = onnx.load(str(quantize_onnx(tmp_path / "fp32.onnx", tmp_path / "b.onnx", calib, nodes_to_exclude=[conv])))
    count = lambda m: sum(n.op_type == "QuantizeLinear" for n in m.graph.node)
    assert count(part) < count(full)
    with pytest.raises(UsageError, match="not in"):
        quantize_onnx(tmp_path / "fp32.onnx", tmp_path / "c.onnx", calib, nodes_to_exclude=["nope"])


def test_bad_opset_is_a_usage_error(small_run, tmp_path):
    from edgeproof.convert import convert_run

    with pytest.raises(UsageError, match="opset"):
        convert_run(small_run, tmp_path, ["onnx-fp32"], opset=99)
