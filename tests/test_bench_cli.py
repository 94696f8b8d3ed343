"""`edgeproof bench` end to end on tiny models (a hand-built ONNX; the converted artifacts when slow)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeproof.cli.main import run_cli

FAST = ["--runs", "30", "--warmup", "3"]


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory) -> Path:
    """A 16x16 NHWC conv -> pool -> softmax ONNX model built with onnx.helper (no TensorFlow)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(0, 0.05, (8, 3, 3, 3)).astype(np.float32), "w")
    g = numpy_helper.from_array(rng.normal(0, 0.1, (8, 3)).astype(np.float32), "g")
    nodes = [helper.make_node("Transpose", ["image"], ["nchw"], perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["nchw", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("MatMul", ["f", "g"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["probs"], axis=1)]
    graph = helper.make_graph(nodes, "tiny",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 16, 16, 3])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 3])], [w, g])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path_factory.mktemp("bench") / "tiny.onnx"
    onnx.save(model, str(path))
    return path


def _bench_json(capsys, argv) -> dict:
    assert run_cli(["bench", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_bench_end_to_end_writes_every_output(tiny_onnx, tmp_path, capsys):
    doc = _bench_json(capsys, [str(tiny_onnx), "--backend", "onnxruntime", "--threads", "1,2", *FAST,
                               "-o", str(tmp_path)])
    assert [r["threads"] for r in doc["results"]] == [1, 2]
    for r in doc["results"]:
        assert r["status"] == "ok", r.get("error")
        assert r["backend"] == "onnxruntime" and r["rss_isolated"] is True
        for key in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "throughput_ips", "load_s", "first_inference_ms",
                    "peak_rss_mib", "overhead_ratio", "size_bytes"):
            assert isinstance(r[key], (int, float)) and r[key] > 0, key
        assert r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"]
        assert len(r["samples_ms"]) == 30 and r["baseline"]["name"] == "onnxruntime run()"
        assert r["placement"]["total"] >= 1
    assert doc["machine"]["cpu_count"] >= 1 and "onnxruntime" in doc["machine"]["packages"]
    assert doc["summary"]["overhead"]["count"] == 2
    md = (tmp_path / "bench.md").read_text()
    assert "| tiny.onnx | onnxruntime | 1 | 1 |" in md and "| tiny.onnx | onnxruntime | 2 | 1 |" in md
    assert json.loads((tmp_path / "bench.json").read_text())["results"][0]["p99_ms"] > 0
    if doc["outputs"]["png_skipped"] is None:
        assert (tmp_path / "bench.png").stat().st_size > 1000


def test_bench_end_to_end_source_folder_and_video(tiny_onnx, tmp_path, capsys):
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(0)
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in range(4):
        cv2.imwrite(str(imgs / f"{i}.png"), rng.integers(0, 256, (40, 30, 3), dtype=np.uint8))
    (imgs / "broken.jpg").write_bytes(b"not an image")
    video = tmp_path / "clip.avi"
    vw = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 24))
    for _ in range(5):
        vw.write(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
    vw.release()
    for src, kind in ((imgs, "folder"), (video, "video")):
        doc = _bench_json(capsys, [str(tiny_onnx), "--threads", "1", "--no-isolate", "--no-baseline", *FAST,
                                   "--source", str(src)])
        (r,) = doc["results"]
        e2e = r["end_to_end"]
        assert r["status"] == "ok" and r["overhead_ratio"] is None and r["rss_isolated"] is False
        assert e2e["source_kind"] == kind and e2e["images"] == 30 and e2e["images_per_s"] > 0
        assert set(e2e["stage_ms_per_image"]) == {"decode", "preprocess", "infer", "other"}
        # the stages account for the whole wall time (video: re-opening the 5-frame clip is "other")
        assert sum(e2e["stage_ms_per_image"].values()) == pytest.approx(1e3 / e2e["images_per_s"], rel=1e-6)
        assert sum(e2e["stage_share"].values()) == pytest.approx(1.0)
        assert e2e["e2e_vs_infer_only"] > 0
        if kind == "folder":
            assert any("broken.jpg" in s for s in e2e["skipped"])
        assert doc["summary"]["end_to_end"][0]["source_kind"] == kind


@pytest.mark.parametrize("argv, message", [
    (["missing.onnx"], "does not exist"),
    (["{m}", "--threads", "0"], "--threads '0' is not valid"),
    (["{m}", "--threads", "a,b"], "--threads 'a,b' is not valid"),
    (["{m}", "--backend", "tensorrt"], "unknown backend 'tensorrt'"),
    (["{m}", "--backend", "litert"], "no requested backend can read it"),
    (["{m}", "--runs", "0"], "--runs 0 is not valid"),
    (["{m}", "--source", "nowhere/"], "--source 'nowhere/' does not exist"),
    (["{m}", "--keras", "model.h5"], "is not a .keras file"),
    (["{m}", "--timeout", "0"], "--timeout 0.0 is not valid"),
    (["{m}", "--warmup", "-1"], "--warmup -1 is not valid"),
    (["{m}", "--source", "{m}"], "is not an image folder, image or video file"),
    (["{m}", "--source", "{empty}"], "holds no images"),
    ([], "no model given"),
])
def test_bench_bad_input_is_one_line_exit_2(tiny_onnx, tmp_path, capsys, argv, message):
    argv = [a.replace("{m}", str(tiny_onnx)).replace("{empty}", str(tmp_path)) for a in argv]
    assert run_cli(["bench", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_bench_device_fallback_is_an_error_unless_allowed(tiny_onnx, capsys):
    """jetson wants the CUDA/TensorRT EPs (absent here): a failed configuration naming the EP, or with
    --allow-fallback a CPU run that the record and a loud warning both say is a fallback."""
    argv = ["bench", str(tiny_onnx), "--device", "jetson", "--threads", "1", "--no-isolate", *FAST, "--json"]
    assert run_cli(argv) == 1
    (rec,) = json.loads(capsys.readouterr().out)["results"]
    assert rec["status"] == "failed" and "ExecutionProvider" in rec["error"] and "--allow-fallback" in rec["error"]
    assert run_cli([*argv, "--allow-fallback"]) == 0
    captured = capsys.readouterr()
    (rec,) = json.loads(captured.out)["results"]
    assert rec["status"] == "ok" and rec["placement"]["fallback"] is True
    assert "DEVICE FALLBACK" in captured.err and "ran on the CPU" in captured.err


def test_bench_relays_the_isolated_childs_warnings(tiny_onnx, tmp_path, capsys):
    """Each configuration runs in a child whose stderr is captured: its warnings must still reach the
    user (here: rpi5 prefers TFLite artifacts), once, not once per thread count."""
    import shutil

    named = shutil.copy(tiny_onnx, tmp_path / "model.onnx-fp32.onnx")
    assert run_cli(["bench", str(named), "--device", "rpi5", "--threads", "1,2", "--no-baseline",
                    "--runs", "5", "--warmup", "1", "--json"]) == 0
    captured = capsys.readouterr()
    doc, err = json.loads(captured.out), captured.err
    assert all(r["status"] == "ok" for r in doc["results"])
    assert any("prefers" in w for w in doc["results"][0]["warnings"])
    assert err.count("device profile 'rpi5' prefers") == 1


def test_bench_modules_never_import_tensorflow():
    code = ("import sys; import edgeproof.bench.runner, edgeproof.bench.report, "
            "edgeproof.bench.baselines, edgeproof.bench.endtoend, edgeproof.cli.bench; "
            "print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.slow
def test_bench_every_converted_artifact_and_keras(tiny_artifacts, tiny_run, tmp_path, capsys):
    """Every artifact of the format table on its preferred backend, plus the Keras baselines."""
    from edgeproof.formats import FORMATS, artifact_filename

    doc = _bench_json(capsys, [str(tiny_artifacts), "--threads", "1", *FAST, "--keras",
                               str(tiny_run / "model.keras"), "-o", str(tmp_path), "--no-plot"])
    by_fmt = {r["format"]: r for r in doc["results"] if r["kind"] == "artifact"}
    for fmt in FORMATS.values():
        if (tiny_artifacts / artifact_filename(fmt)).exists():
            r = by_fmt[fmt.name]
            assert r["status"] == "ok", (fmt.name, r.get("error"))
            assert r["backend"] == fmt.backends[0] and r["overhead_ratio"] > 0 and r["p99_ms"] > 0
    assert by_fmt["tflite-int8"]["overhead_vs_quantizing_loop"] > 0  # int8 I/O: the (de)quantizing loop too
    keras = [r for r in doc["results"] if r["kind"] == "keras"]
    assert {r["backend"] for r in keras} == {"keras model(x)", "keras predict()"}
    assert all(r["status"] == "ok" and r["p50_ms"] > 0 for r in keras)
    assert doc["summary"]["int8_vs_fp32"] and doc["summary"]["keras_vs_artifacts"]
