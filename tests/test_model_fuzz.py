"""Corrupt and hostile model files (issue 8): >= 1,000 mutated variants, absurd shapes, CLI behaviour.

Every variant of the tiny models (truncated, bit-flipped, header damage, zeroed runs, spliced blocks,
small int32s made huge) must end in a clean edgeproof error (InvalidModel/UsageError, one line) or a
correct load (load + one predict: finite probabilities of shape (1, C)); never a crash, a hang, a
traceback or runtime chatter on stdout/stderr. Variants run in worker processes (tests/_model_fuzz.py)
so a crash is attributed to its seed and printed with a one-line repro command.
"""

from __future__ import annotations

import collections
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from _model_fuzz import KINDS, Job, make_jobs, mutate, outcome_of, run_jobs

from edgeproof.cli.main import run_cli
from edgeproof.errors import InvalidModel, UsageError
from edgeproof.formats import BACKENDS, FORMATS, backend_installed
from edgeproof.runtime import load
from edgeproof.runtime.model_check import MAX_SIDE, FlatBuffer

pytestmark = pytest.mark.slow
pytest.importorskip("ai_edge_litert")
pytest.importorskip("onnxruntime")

# Seeds per seed model. Each variant runs on every backend the format table lists for its format, so with all
# of them installed: litert 360, litert-compiled 300, onnxruntime 360, opencv 300, openvino 660 (1,980 in all).
SEEDS = {"tflite-fp32": 150, "tflite-int8": 150, "edgetpu": 60, "onnx-fp32": 300, "onnx-int8": 60}
PLAN = [(key, backend, n) for key, n in SEEDS.items() for backend in FORMATS[key].backends]
MIN_PER_BACKEND = 300  # variants per native backend (issue 24: every one ends with 0 signal deaths)
# The browser backends (opt-in: litertjs, ort-web) run only where named and start a headless browser, so no
# format lists them and they are not fuzzed here: their runtimes parse the file inside the browser's sandbox.
NATIVE = [name for name, b in BACKENDS.items() if not b.opt_in]
# Seeds that once killed the process: OpenCV DNN's importer on tests/_runtime_models' onnx-fp32 (SIGSEGV for
# header/flip damage, SIGFPE for seed 1) before ONNX Runtime parsed the file first; LiteRT CompiledModel
# (SIGBUS, seed 877 of tflite-fp32, a flip the Interpreter refuses) before the preflight refused what the
# Interpreter cannot open. Always run.
REGRESSION = {("onnx-fp32", "opencv"): [1, 8, 38, 50, 56, 67, 73, 80, 86, 110],
              ("tflite-fp32", "litert-compiled"): [877]}


@pytest.fixture(scope="module")
def seed_models(tiny_artifacts) -> dict[str, Path]:
    pytest.importorskip("tensorflow", reason="builds its tiny models with edgeproof[train]")
    from _runtime_models import tiny_models

    tm = tiny_models()
    return {"tflite-fp32": tm.files["tflite-fp32"], "tflite-int8": tm.files["tflite-int8"],
            "edgetpu": tm.files["edgetpu"], "onnx-fp32": tm.files["onnx-fp32"],
            "onnx-int8": tiny_artifacts / "model.onnx-int8.onnx"}


def test_mutation_is_a_pure_function_of_the_seed():
    data = bytes(range(256)) * 40
    for seed in range(60):
        assert mutate(data, seed) == mutate(data, seed)
        assert mutate(data, seed)[0] == KINDS[seed % len(KINDS)]
    assert len({mutate(data, s)[1] for s in range(60)}) > 40  # the seeds really differ (truncation lengths may repeat)


def test_pristine_seed_models_load_in_every_backend(seed_models):
    """The fuzz test's 'ok' path is real: each unmutated model loads and predicts."""
    for key, backend, _ in PLAN:
        if backend_installed(backend):
            assert outcome_of(seed_models[key], backend)[0] == "ok", (key, backend)


@pytest.mark.timeout(900)  # OpenVINO's 660 variants took 158-220 s on 2 shared cores
@pytest.mark.parametrize("backend", NATIVE)
def test_fuzzed_models_end_in_a_clean_error_or_a_correct_load(seed_models, tmp_path, capsys, backend):
    """Every variant of every seed model on this backend (each format it claims), in worker processes."""
    if not backend_installed(backend):
        pytest.skip(f"{backend} is not installed")
    plan = [(key, b, n) for key, b, n in PLAN if b == backend]
    jobs: list[Job] = []
    for key, _b, n in plan:
        seeds = sorted(set(range(n)) | set(REGRESSION.get((key, backend), [])))
        jobs += make_jobs(seed_models[key], backend, seeds, key)
    assert len(jobs) >= MIN_PER_BACKEND, (backend, len(jobs))
    halves = [jobs[0::2], jobs[1::2]]  # two workers (CI has 2 cores)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        parts = list(pool.map(lambda js: run_jobs(js, timeout_s=600, env={"EDGEPROOF_CACHE": str(tmp_path)}),
                              halves))
    results = {k: v for part in parts for k, v in part.items()}
    wall = time.perf_counter() - t0
    assert set(results) == {j.id for j in jobs}
    by_outcome = collections.Counter(r["outcome"] for r in results.values())
    by_group = collections.Counter(":".join(k.split(":")[:2]) + ":" + r["outcome"] for k, r in results.items())
    by_kind = collections.Counter(k.split(":")[3] + ":" + r["outcome"] for k, r in results.items())
    with capsys.disabled():
        print(f"\nmodel fuzz {backend}: {len(jobs)} variants in {wall:.1f} s: {dict(by_outcome)}\n  by model: "
              f"{dict(sorted(by_group.items()))}\n  by mutation: {dict(sorted(by_kind.items()))}")
    bad = [f"{k}: {r['outcome']}: {r['detail']}" for k, r in results.items() if r["outcome"] not in ("ok", "error")]
    assert not bad, "\n".join(bad[:20])  # no signal death, hang, traceback or chatter
    for key, _b, _n in plan:  # both outcomes happen in every group: the test exercises both paths
        assert by_group[f"{key}:{backend}:ok"] and by_group[f"{key}:{backend}:error"], (key, backend)
    for k, r in results.items():
        if r["outcome"] == "error":
            assert r["detail"].startswith(("InvalidModel: ", "NeedsNewerRuntime: ", "UsageError: ", "UnsupportedModel: ")), (k, r["detail"])


def test_every_native_backend_gets_its_share_of_variants():
    per_backend = collections.Counter()
    for _key, backend, n in PLAN:
        per_backend[backend] += n
    assert set(per_backend) == set(NATIVE)  # every native backend of the table, every format it claims
    assert min(per_backend.values()) >= MIN_PER_BACKEND, per_backend


# ---------------------------------------------------------------- absurd shapes, made on purpose

def _tflite_input_shape_at(data: bytes) -> int:
    """Byte position of the first input tensor's shape vector (its first int32) in a .tflite."""
    fb = FlatBuffer(data)
    sg = fb.tables(fb.table(0), 2)[0]
    tensor = fb.tables(sg, 0)[fb.ints(sg, 1)[0]]
    return fb.vector(tensor, 0, 4)[0]


@pytest.mark.parametrize("shape, why", [((1, 100000, 100000, 3), "GiB"), ((1, -5, 32, 3), "impossible shape"),
                                        ((1, 32, 32, 1 << 30), "GiB")])
def test_tflite_with_absurd_tensor_shape_is_refused_before_allocation(seed_models, tmp_path, shape, why):
    data = bytearray(seed_models["tflite-fp32"].read_bytes())
    at = _tflite_input_shape_at(data)
    struct.pack_into("<4i", data, at, *shape)
    path = tmp_path / "huge.tflite"
    path.write_bytes(bytes(data))
    with pytest.raises(InvalidModel, match=rf"huge.tflite is not a valid TFLite model: tensor \d+ .*{why}"):
        load(path)


@pytest.mark.parametrize("side, why", [(8000, r"tensor \d+ '.*' becomes \[1, 7998, 7998, 8\] \(1.91 GiB, limit 1024 MiB\)"),
                                       (9000, r"its operators cannot be prepared \(RuntimeError: Conv im2col")])
def test_tflite_input_that_makes_small_declared_tensors_huge_is_refused_before_allocation(seed_models, tmp_path,
                                                                                           side, why):
    """Only the input's shape patched (768 MiB at 8000x8000, under the per-tensor limit): the declared
    intermediates stay 32x32 and pass check_tflite, but allocate_tensors would size them from the input
    (XNNPACK took 24 s and 14 GiB for 9000x9000). The prepared-shape check refuses it first."""
    data = bytearray(seed_models["tflite-fp32"].read_bytes())
    struct.pack_into("<4i", data, _tflite_input_shape_at(data), 1, side, side, 3)
    path = tmp_path / "wide.tflite"
    path.write_bytes(bytes(data))
    with pytest.raises(InvalidModel, match=rf"wide.tflite is not a valid TFLite model: .*{why}"):
        load(path)
    assert run_cli(["inspect", str(path), "--no-load"]) == 2


def test_onnx_with_absurd_declared_shapes_is_refused(seed_models, tmp_path):
    onnx = pytest.importorskip("onnx")
    from edgeproof.runtime.metadata import read_metadata, set_onnx_metadata

    m = onnx.load(str(seed_models["onnx-fp32"]))
    for d in m.graph.input[0].type.tensor_type.shape.dim[1:3]:
        d.dim_value = 10**9
    onnx.save(m, str(tmp_path / "dims.onnx"))
    with pytest.raises(InvalidModel, match=rf"dims.onnx .*declares shape .*1000000000.* at most {MAX_SIDE}"):
        load(tmp_path / "dims.onnx")
    meta = read_metadata(seed_models["onnx-fp32"])  # a sane graph whose metadata asks for a 10^9 x 10^9 image
    meta.preprocess.height = meta.preprocess.width = 10**9
    m = onnx.load(str(seed_models["onnx-fp32"]))
    m.graph.input[0].type.tensor_type.shape.dim[1].dim_param = "h"
    m.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "w"
    set_onnx_metadata(m, meta)
    onnx.save(m, str(tmp_path / "meta.onnx"))
    with pytest.raises(UsageError, match=r"meta.onnx' carries invalid edgeproof metadata: preprocessing height "
                       r"1000000000 is not a whole number of pixels in 1\.\.16384"):  # refused as it is read
        load(tmp_path / "meta.onnx")


@pytest.mark.parametrize("where", ["graph", "metadata"])
def test_onnx_image_input_over_a_gib_per_image_is_refused(seed_models, tmp_path, where):
    """12000x12000 is under MAX_SIDE, but one image is 1.61 GiB as float32: 'run' took 2.6 GB and 5 s
    per image preparing it. Declared in the graph (no metadata) or asked for by the metadata."""
    onnx = pytest.importorskip("onnx")
    from edgeproof.runtime.metadata import read_metadata, set_onnx_metadata

    m = onnx.load(str(seed_models["onnx-fp32"]))
    meta = read_metadata(seed_models["onnx-fp32"])
    for i, d in enumerate(m.graph.input[0].type.tensor_type.shape.dim[1:3]):
        if where == "graph":
            d.dim_value = 12000
        else:
            d.dim_param = "hw"[i]
    if where == "graph":
        del m.metadata_props[:]
    else:
        meta.preprocess.height = meta.preprocess.width = 12000
        set_onnx_metadata(m, meta)
    onnx.save(m, str(tmp_path / "big.onnx"))
    with pytest.raises(InvalidModel, match=r"big.onnx .*preprocess 12000x12000\): 1.61 GiB per image as float32 "
                                           r"\(limit 1024 MiB\)"):
        load(tmp_path / "big.onnx")


def test_nan_weights_are_an_error_not_an_answer(seed_models, tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    m = onnx.load(str(seed_models["onnx-fp32"]))
    big = max(m.graph.initializer, key=lambda i: int(np.prod(i.dims)))
    big.CopyFrom(numpy_helper.from_array(np.full_like(numpy_helper.to_array(big), np.nan), big.name))
    onnx.save(m, str(tmp_path / "nan.onnx"))
    with load(tmp_path / "nan.onnx") as model, pytest.raises(InvalidModel, match="non-finite scores"):
        model.predict(np.zeros((1, 32, 32, 3), np.float32))


@pytest.mark.parametrize("fmt", ["tflite-fp32", "tflite-int8", "onnx-fp32"])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nan_or_inf_input_is_the_callers_error_not_damaged_weights(seed_models, fmt, value):
    x = np.zeros((3, 32, 32, 3), np.float32)
    x[1, 4, 5, 2] = value
    with load(seed_models[fmt]) as model:
        with pytest.raises(UsageError, match=r"predict got 1 NaN/inf value\(s\) in its input \(batch row\(s\) 1\)"
                           ) as exc:
            model.predict(x)
        assert not isinstance(exc.value, InvalidModel)  # quantized inputs too: never silently clipped
        x[1, 4, 5, 2] = 0.0
        assert np.isfinite(model.predict(x)).all()


# ---------------------------------------------------------------- the CLI: exit 2, one line, nothing else

def _bad_files(seed_models, folder: Path) -> dict[str, Path]:
    import cv2

    ok, enc = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))
    tfl = seed_models["tflite-fp32"].read_bytes()
    huge = bytearray(tfl)
    struct.pack_into("<4i", huge, _tflite_input_shape_at(huge), 1, 100000, 100000, 3)
    files = {"empty.tflite": b"", "truncated.tflite": tfl[: len(tfl) // 3], "photo.tflite": enc.tobytes(),
             "absurd.tflite": bytes(huge), "empty.onnx": b"",
             "truncated.onnx": seed_models["onnx-fp32"].read_bytes()[:700], "photo.onnx": enc.tobytes(),
             "text.onnx": b"this is not a model\n"}
    out = {}
    for name, data in files.items():
        (folder / name).write_bytes(data)
        out[name] = folder / name
    return out


@pytest.mark.parametrize("command", ["run", "inspect", "bench"])
def test_cli_on_bad_model_files_exits_2_with_one_line(seed_models, tmp_path, capfd, command):
    import cv2

    img = tmp_path / "img.png"
    cv2.imwrite(str(img), np.zeros((32, 32, 3), np.uint8))
    for name, path in _bad_files(seed_models, tmp_path).items():
        argv = {"run": ["run", str(path), str(img)], "inspect": ["inspect", str(path)],
                "bench": ["bench", str(path), "--runs", "1", "--warmup", "0", "--no-plot", "--no-isolate"]}[command]
        code = run_cli(argv)
        out, err = capfd.readouterr()
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert code == 2, (name, code, err)
        assert out == "" and len(lines) == 1, (name, out, err)
        assert lines[0].startswith(f"edgeproof: error: {name} is not a valid "), (name, lines[0])
        assert "Traceback" not in err and "EP Error" not in err



# ---------------------------------------------------------------- the guarded child itself

@pytest.mark.parametrize("code, kw, verdict, detail", [
    ("pass", {}, "ok", None),
    ("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)", {}, "crash", "SIGSEGV"),
    ("import os, signal\nos.kill(os.getpid(), signal.SIGFPE)", {}, "crash", "SIGFPE"),
    ("import time\ntime.sleep(60)", {"timeout": 1.0}, "timeout", "within 1 s"),
    ("x = bytearray(3 << 30)", {"memory": 1 << 30}, "memory", "1024 MiB"),
    ("raise ValueError('a clean rejection')", {}, "error", "ValueError: a clean rejection"),
])
def test_guarded_trial_verdicts(code, kw, verdict, detail):
    from edgeproof.runtime.guard import run_trial

    got = run_trial(code, [], **kw)
    assert got["verdict"] == verdict and (detail is None or detail in got["detail"]), got


def test_guard_verdict_is_cached_by_content(seed_models, tmp_path, monkeypatch):
    import shutil

    from edgeproof.runtime import guard

    monkeypatch.setenv("EDGEPROOF_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "m.onnx"
    shutil.copyfile(seed_models["onnx-fp32"], path)
    monkeypatch.setattr(guard, "OPENCV_TRIAL", "import os, signal\nos.kill(os.getpid(), signal.SIGFPE)")
    with pytest.raises(InvalidModel, match=r"m.onnx is not a valid ONNX model: it crashed the OpenCV DNN importer "
                                           r"\(SIGFPE\)"):
        load(path, backend="opencv")
    monkeypatch.setattr(guard, "OPENCV_TRIAL", "raise SystemExit('must not run: the verdict is cached')")
    with pytest.raises(InvalidModel, match="SIGFPE"):
        load(path, backend="opencv")
    assert len(list((tmp_path / "cache" / "trials").glob("opencv-*.json"))) == 1
    import onnx

    m = onnx.load(str(path))  # other bytes (one more metadata entry): a new key, so a new trial
    m.metadata_props.add().key = "note"
    onnx.save(m, str(path))
    monkeypatch.setattr(guard, "OPENCV_TRIAL", "pass")
    load(path, backend="opencv").close()
    assert len(list((tmp_path / "cache" / "trials").glob("opencv-*.json"))) == 2


@pytest.mark.parametrize("cache", ["a-file", "read-only"])
def test_guard_works_when_its_cache_cannot_be_written(seed_models, tmp_path, monkeypatch, cache):
    """EDGEPROOF_CACHE naming a file, or a cache folder that refuses writes (simulated: tests run as
    root): the trial still runs and decides; only the verdict is not kept."""
    import shutil

    from edgeproof import atomic
    from edgeproof.runtime import guard

    target = tmp_path / "cache"
    if cache == "a-file":
        target.write_text("not a folder")
    else:
        def refuse(*a, **k):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(atomic, "write_json", refuse)
    monkeypatch.setenv("EDGEPROOF_CACHE", str(target))
    path = tmp_path / "m.onnx"
    shutil.copyfile(seed_models["onnx-fp32"], path)
    monkeypatch.setattr(guard, "OPENCV_TRIAL", "pass")
    load(path, backend="opencv").close()
    monkeypatch.setattr(guard, "OPENCV_TRIAL", "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)")
    with pytest.raises(InvalidModel, match="SIGSEGV"):  # not cached: tried again
        load(path, backend="opencv")
    assert target.is_file() if cache == "a-file" else not list(target.rglob("*.json"))
