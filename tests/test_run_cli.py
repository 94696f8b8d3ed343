"""`edgeproof run`: outputs (table, --json, --save, --show), flags, exit codes, and the TF-free one-shot path."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from edgeproof.cli.main import parse_args, run_cli

cv2 = pytest.importorskip("cv2")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from _runtime_models import LABELS, color_onnx, solid


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    model = color_onnx(root / "model.onnx-fp32.onnx")
    bare = color_onnx(root / "bare.onnx", with_meta=False)
    imgs = root / "imgs"
    imgs.mkdir()
    for i, n in enumerate(LABELS):
        cv2.imwrite(str(imgs / f"{i}_{n}.png"), solid(n))
    return {"root": root, "model": str(model), "bare": str(bare), "imgs": imgs}


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_one_image_prints_a_table(env, capsys):
    assert run_cli(["run", env["model"], str(env["imgs"] / "0_red.png")]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["input", "top-1", "score"]
    assert lines[1].split()[1] == "red" and "0_red.png" in lines[1]
    assert "summary: 1 input(s)" in err and "onnx-fp32" in err


def test_json_lines_topk_labels_and_summary(env, capsys, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("rouge\nvert\nbleu\n")
    (env["imgs"] / "zz_broken.png").write_bytes(b"\x89PNG broken")
    try:
        rc = run_cli(["run", env["bare"], "--source", str(env["imgs"]), "--json", "--top-k", "2", "--batch", "2",
                      "--size", "8x8", "--labels", str(labels)])
    finally:
        (env["imgs"] / "zz_broken.png").unlink()
    assert rc == 3  # finished, but an input was skipped
    rows = _json_lines(capsys.readouterr().out)
    results, summary = rows[:-1], rows[-1]["summary"]
    assert [r["top_k"][0]["label"] for r in results] == ["rouge", "vert", "bleu"]
    assert all(len(r["top_k"]) == 2 for r in results) and [r["index"] for r in results] == [0, 1, 2]
    assert summary["count"] == 3 and summary["skipped"][0]["input"].endswith("zz_broken.png")
    assert summary["skipped_total"] == 1 and summary["skipped_by_reason"] == {"not an image (unknown format)": 1}
    assert summary["model"]["backend"] == "onnxruntime" and summary["model"]["format"] is None


def test_save_annotated_images_and_video(env, tmp_path, capsys):
    out = tmp_path / "ann"
    assert run_cli(["run", env["model"], str(env["imgs"]), "--save", str(out), "--json"]) == 0
    saved = sorted(p.name for p in out.iterdir())
    assert saved == ["0_red.png", "1_green.png", "2_blue.png"]
    assert cv2.imread(str(out / "0_red.png")).shape == (24, 20, 3)
    video = tmp_path / "clip.avi"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 8, (64, 48))
    for n in LABELS * 2:
        w.write(solid(n, 48, 64))
    w.release()
    vout = tmp_path / "vid"
    assert run_cli(["run", env["model"], "--source", str(video), "--save", str(vout)]) == 0
    assert [p.name for p in vout.iterdir()] == ["annotated.mp4"]
    cap = cv2.VideoCapture(str(vout / "annotated.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 6
    cap.release()
    assert "saved:" in capsys.readouterr().err


def test_missing_provider_fails_unless_fallback(env, capsys):
    argv = ["run", env["model"], str(env["imgs"] / "0_red.png"), "--provider", "CUDAExecutionProvider"]
    assert run_cli(argv) == 2
    assert "CUDAExecutionProvider not in this onnxruntime build" in capsys.readouterr().err
    assert run_cli([*argv, "--allow-fallback", "--json"]) == 0
    out, err = capsys.readouterr()
    assert "EXECUTION PROVIDER FALLBACK" in err and json.loads(out.splitlines()[0])["top_k"][0]["label"] == "red"


def test_show_without_display_is_an_error(env, capsys, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert run_cli(["run", env["model"], str(env["imgs"]), "--show"]) == 2
    assert "--show needs a display" in capsys.readouterr().err


@pytest.mark.parametrize("argv,message", [
    (["{imgs}"], "no source given"),
    (["{imgs}", "--source", "{imgs}"], "two sources"),
    (["{imgs}", "--top-k", "0"], "--top-k must be >= 1"),
    (["{imgs}", "--size", "big"], "--size 'big' is not valid"),
    (["{imgs}", "--mean", "1,2"], r"mean \[1.0, 2.0\] is not 1 or 3 numbers \(one per channel\) for a 3-channel"),
    (["{imgs}", "--mean", "1,x"], "--mean '1,x' is not valid"),
    (["{imgs}", "--std", "0"], "contains 0"),
    (["{imgs}", "--size", "16x16"], "does not fit the model's fixed input 8x8"),
    (["{root}/nope.png"], "source '.*nope.png' not found"),
])
def test_bad_input_is_one_line_exit_2(env, capsys, argv, message):
    import re

    argv = [a.format(**{k: str(v) for k, v in env.items()}) for a in argv]
    if argv[0] == str(env["imgs"]) and message == "no source given":
        argv = []
    assert run_cli(["run", env["model"], *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(message, err[0]), err


def test_missing_model_and_unreadable_only_inputs(env, tmp_path, capsys):
    assert run_cli(["run", str(tmp_path / "missing.tflite"), str(env["imgs"])]) == 2
    assert "model file" in capsys.readouterr().err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.png").write_bytes(b"")
    assert run_cli(["run", env["model"], str(bad)]) == 2
    assert "none of the 1 input(s) could be read (first:" in capsys.readouterr().err


class _Camera:
    """A cv2.VideoCapture stand-in at 30 FPS; tests override read()."""

    i = 0

    def isOpened(self):
        return True

    def get(self, prop):
        return 30.0

    def release(self):
        pass


def test_camera_source_and_ctrl_c_exit_130(env, capsys):
    from edgeproof.cli import run as run_cmd

    frames = [solid(n) for n in LABELS]

    class Cap(_Camera):
        def read(self):
            self.i += 1
            if self.i > 5:
                raise KeyboardInterrupt  # lands in the producer thread: must not kill the run silently
            return True, frames[(self.i - 1) % 3]

    class InterruptingCap(Cap):
        def read(self):
            self.i += 1
            return True, frames[self.i % 3]

    args = parse_args(["run", env["model"], "--source", "0", "--json", "--limit", "4"])
    assert run_cmd.run(args, capture_factory=lambda t: InterruptingCap()) == 0
    rows = _json_lines(capsys.readouterr().out)
    assert len(rows) == 5 and rows[-1]["summary"]["stopped"] == "limit of 4 reached"
    args = parse_args(["run", env["model"], "--source", "0"])
    assert run_cmd.run(args, capture_factory=lambda t: Cap()) == 130
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 1 + 5 and "summary: 5 input(s)" in err


def test_camera_lost_mid_run_exits_4_after_the_results(env, capsys, monkeypatch):
    from edgeproof.cli import run as run_cmd
    from edgeproof.runtime import sources

    monkeypatch.setattr(sources._GrabLoop.__init__, "__defaults__", (2, 0.001, 0.002, lambda s: None))
    frames = [solid(n) for n in LABELS]

    class DyingCap(_Camera):
        def read(self):
            self.i += 1
            return (True, frames[self.i % 3]) if self.i <= 4 else (False, None)

    args = parse_args(["run", env["model"], "--source", "0", "--json"])
    assert run_cmd.run(args, capture_factory=lambda t: DyingCap()) == 4
    rows = _json_lines(capsys.readouterr().out)
    assert len(rows) == 5 and rows[-1]["summary"]["source_lost"] is True
    assert "3 consecutive frame grabs failed" in rows[-1]["summary"]["stopped"]
    args = parse_args(["run", env["model"], "--source", "0", "--json", "--limit", "3"])
    assert run_cmd.run(args, capture_factory=lambda t: DyingCap()) == 0  # stopped before the camera died
    assert _json_lines(capsys.readouterr().out)[-1]["summary"]["source_lost"] is False


@pytest.mark.slow
def test_one_shot_tflite_run_never_imports_tensorflow(tmp_path):
    """`edgeproof run model.tflite image.png` in a fresh process: works, and TensorFlow is never imported."""
    pytest.importorskip("tensorflow", reason="making the .tflite needs edgeproof[train]")
    from _runtime_models import tiny_models

    tm = tiny_models()
    code = ("import sys; from edgeproof.cli.main import run_cli;"
            f"rc = run_cli(['run', {str(tm.files['tflite-int8'])!r}, {str(tm.images[0])!r}, '--json']);"
            "bad = [k for k in sys.modules if k.split('.')[0] in ('tensorflow', 'keras', 'tf2onnx', 'onnxruntime')];"
            "assert not bad, bad; sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    assert "INFO: Created TensorFlow Lite" not in r.stderr, r.stderr  # the runtime's C++ chatter is dropped
    first = json.loads(r.stdout.splitlines()[0])
    assert first["top_k"][0]["label"] == ["red", "green", "blue"][tm.keras_top1[str(tm.images[0])]]


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("INFO: ")]
    assert len(lines) == 1 and lines[0].startswith("edgeproof: error:"), err
    assert "internal error" not in err and "Traceback" not in err
    return lines[0]


def test_options_may_sit_between_model_and_source(env, capsys):
    """`edgeproof run MODEL --top-k 1 IMAGE` used to fail with 'unrecognized arguments: IMAGE'."""
    img = str(env["imgs"] / "1_green.png")
    assert run_cli(["run", env["model"], "--top-k", "1", "--json", img]) == 0
    rows = _json_lines(capsys.readouterr().out)
    assert rows[0]["top_k"] == [{"label": "green", "score": rows[0]["top_k"][0]["score"]}]
    assert run_cli(["run", "--json", env["model"], "--backend", "onnxruntime", img]) == 0
    assert _json_lines(capsys.readouterr().out)[0]["top_k"][0]["label"] == "green"
    with pytest.raises(SystemExit) as exc:  # still one source only
        parse_args(["run", env["model"], img, "--json", img])
    assert exc.value.code == 2
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        parse_args(["run", "--help"])
    assert exc.value.code == 0 and "model [source]" in capsys.readouterr().out


def test_labels_file_must_match_the_class_count(env, capsys, tmp_path):
    labels = tmp_path / "two.txt"
    labels.write_text("a\nb\n")
    img = str(env["imgs"] / "0_red.png")
    assert run_cli(["run", env["bare"], img, "--size", "8", "--labels", str(labels)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "--labels gives 2 label(s)" in line and "outputs 3 classes" in line


def test_save_into_an_unwritable_place_exits_2(env, capsys, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    img = str(env["imgs"] / "0_red.png")
    assert run_cli(["run", env["model"], img, "--save", str(blocker / "sub")]) == 2
    assert "--save" in _one_error_line(capsys.readouterr().err)


def test_damaged_image_is_skipped_without_opencv_warnings(env, tmp_path):
    """The skip reason is the one report: no libpng 'WARN' lines from OpenCV on stderr."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    good = (env["imgs"] / "0_red.png").read_bytes()
    (folder / "a_ok.png").write_bytes(good)
    (folder / "b_cut.png").write_bytes(good[:60])
    damaged = bytearray(good)  # whole chunk structure, garbage pixel data: only OpenCV can tell
    i = damaged.index(b"IDAT") + 4
    damaged[i:i + 8] = b"\xff" * 8
    (folder / "c_bad.png").write_bytes(bytes(damaged))
    r = subprocess.run([sys.executable, "-m", "edgeproof", "run", env["model"], str(folder)],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 3, r.stderr  # some inputs skipped
    assert "b_cut.png: truncated PNG" in r.stderr and "c_bad.png: corrupt image" in r.stderr, r.stderr
    assert "WARN" not in r.stderr, r.stderr


def test_a_folder_as_model_says_to_give_the_file(env, capsys, tmp_path):
    assert run_cli(["run", str(tmp_path), str(env["imgs"] / "0_red.png")]) == 2
    assert "is a folder; give a .tflite or .onnx file" in _one_error_line(capsys.readouterr().err)
    assert run_cli(["inspect", str(tmp_path)]) == 2
    assert "is a folder" in _one_error_line(capsys.readouterr().err)


def test_save_into_the_input_folder_keeps_the_originals(env, tmp_path, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    original = (env["imgs"] / "0_red.png").read_bytes()
    (folder / "0_red.png").write_bytes(original)
    assert run_cli(["run", env["model"], str(folder), "--save", str(folder)]) == 0
    assert (folder / "0_red.png").read_bytes() == original
    assert (folder / "0_red.annotated.png").is_file()


def test_rerun_with_save_into_the_input_folder_leaves_out_its_own_outputs(env, tmp_path, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "0_red.png").write_bytes((env["imgs"] / "0_red.png").read_bytes())
    (folder / "my.annotated.notes.png").write_bytes((env["imgs"] / "1_green.png").read_bytes())  # a user's file
    for _ in range(2):
        assert run_cli(["run", env["model"], str(folder), "--save", str(folder), "--json"]) == 0
    out, err = capsys.readouterr()
    inputs = [d["input"] for d in _json_lines(out) if "input" in d]
    assert sorted(p.rsplit("/", 1)[-1] for p in inputs[:2]) == ["0_red.png", "my.annotated.notes.png"]
    assert sorted(p.rsplit("/", 1)[-1] for p in inputs[2:]) == ["0_red.png", "my.annotated.notes.png"]
    assert "left out 2 annotated output(s) of an earlier --save" in err
    assert not list(folder.glob("*.annotated.annotated.*"))


def test_corrupt_video_is_one_line_without_ffmpeg_chatter(env, tmp_path):
    import os

    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all\n" * 10)
    environ = {k: v for k, v in os.environ.items() if k != "OPENCV_FFMPEG_LOGLEVEL"}
    r = subprocess.run([sys.executable, "-m", "edgeproof", "run", env["model"], str(bad)], capture_output=True,
                       text=True, check=False, env=environ)
    assert r.returncode == 2
    assert "cannot open video file" in _one_error_line(r.stderr) and "moov" not in r.stderr


@pytest.mark.parametrize("text", ["{broken", "{}", '{"labels": 5, "preprocess": "x"}'])
def test_damaged_embedded_metadata_exits_2_and_inspect_says_so(env, tmp_path, capsys, text):
    import onnx

    from edgeproof.contract import METADATA_KEY

    model = onnx.load(env["bare"])
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, text
    path = tmp_path / "damaged.onnx"
    onnx.save(model, str(path))
    for backend in ("onnxruntime", "opencv"):
        assert run_cli(["run", str(path), str(env["imgs"] / "0_red.png"), "--backend", backend]) == 2
        assert "carries edgeproof metadata that cannot be read" in _one_error_line(capsys.readouterr().err)
    assert run_cli(["inspect", str(path), "--no-load"]) == 2  # the report, then the error: run refuses it
    out, err = capsys.readouterr()
    assert "metadata: embedded but damaged" in out and "carries edgeproof metadata" in _one_error_line(err)


def test_help_documents_exit_codes_and_summary_reports_drops(env, capsys):
    import argparse

    from edgeproof.cli import run as run_cmd
    from edgeproof.runtime.pipeline import Summary

    with pytest.raises(SystemExit):
        run_cli(["run", "--help"])
    out = capsys.readouterr().out
    assert "exit codes:" in out and "  3    the run finished but some inputs were skipped" in out
    summary = Summary(source="0", kind="camera", count=4, seconds=1.0, dropped=7)
    summary.skip("0#2", "corrupt image")
    run_cmd._report(argparse.Namespace(json=False), summary, None)
    err = capsys.readouterr().err
    assert "skipped 1 (by reason: corrupt image: 1)" in err and "dropped 7 live frame(s)" in err
    assert run_cmd.exit_code(summary) == 3
    for i in range(11):
        summary.skip(f"0#{10 + i}", "corrupt image")
    run_cmd._report(argparse.Namespace(json=False), summary, None)
    err = capsys.readouterr().err
    assert "skipped 12 (by reason: corrupt image: 12)" in err and "  ... and 2 more (--json lists the first 12)" in err
    assert err.count(": corrupt image\n") == 10
    summary = Summary(source="0", kind="camera", count=4, seconds=1.0, dropped=7)
    assert run_cmd.exit_code(summary) == 0  # drops alone do not change the exit code
    summary.interrupted = True
    assert run_cmd.exit_code(summary) == 130


@pytest.mark.parametrize("argv, source, top_k", [(["m.tflite", "img.png"], "img.png", 5),
                                                 (["m.tflite", "--top-k", "3", "img.png"], "img.png", 3),
                                                 (["--top-k", "2", "m.tflite", "img.png"], "img.png", 2),
                                                 (["m.tflite", "--json", "img.png", "--top-k", "1"], "img.png", 1)])
def test_run_options_may_sit_anywhere_around_model_and_source(argv, source, top_k):
    args = parse_args(["run", *argv])
    assert (args.model, args.source, args.top_k) == ("m.tflite", source, top_k)


def test_run_bad_flag_value_between_positionals_is_one_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        parse_args(["run", "m.tflite", "--top-k", "x", "img.png"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "argument --top-k: invalid int value: 'x'" in err and "Traceback" not in err
