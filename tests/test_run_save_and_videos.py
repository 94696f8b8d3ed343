"""run --save and video edge cases (issue 17, section 5): the output folder is never an input, a full disk
is one line, output names stay unique in linear time, a zero-frame video is counted, and OpenCV's AVI
reader's lines stay off the terminal."""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
import sys

import pytest

from edgeproof.cli.main import run_cli

cv2 = pytest.importorskip("cv2")
pytest.importorskip("onnxruntime")

from _runtime_models import LABELS, color_onnx, solid


def _lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture
def env(tmp_path):
    model = color_onnx(tmp_path / "model.onnx-fp32.onnx")
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i, n in enumerate(LABELS):
        cv2.imwrite(str(imgs / f"{i}_{n}.png"), solid(n))
    return str(model), imgs


def test_a_save_folder_inside_the_source_is_never_an_input(env, capsys):
    model, imgs = env
    for _ in range(3):  # 3 -> 6 -> 9 inputs before: each rerun took the earlier outputs as inputs
        assert run_cli(["run", model, str(imgs), "--save", str(imgs / "out"), "--json"]) == 0
        summary = _lines(capsys.readouterr().out)[-1]["summary"]
        assert summary["count"] == 3 and len(summary["saved"]) == 3
    assert sorted(p.name for p in (imgs / "out").iterdir()) == ["0_red.png", "1_green.png", "2_blue.png"]


def test_a_full_disk_during_save_is_one_line_exit_2(env, capsys, monkeypatch):
    from edgeproof import atomic

    model, imgs = env
    real, calls = atomic.write_bytes, []

    def fills_up(path, data, *a, **k):
        calls.append(path)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, data, *a, **k)

    monkeypatch.setattr(atomic, "write_bytes", fills_up)
    assert run_cli(["run", model, str(imgs), "--save", str(imgs.parent / "out")]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("edgeproof: error:")]
    assert len(err) == 1 and "no space left on the device after 1 annotated image(s)" in err[0]


def test_output_names_stay_unique_for_inputs_with_the_same_name():
    from edgeproof.runtime.annotate import _Names

    names = _Names()
    got = [names.take(f"/d{i}/x.png") for i in range(5)] + [names.take("x_1.png"), names.take("/e/x.png")]
    assert got == ["x.png", "x_1.png", "x_2.png", "x_3.png", "x_4.png", "x_1_1.png", "x_5.png"]
    assert len(set(got)) == len(got)
    assert names.take("cam#3") == "cam.jpg"


def _video(path, frames: int):
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (32, 32))
    for _ in range(frames):
        w.write(solid("red", 32, 32))
    w.release()
    return path


def test_a_zero_frame_video_in_a_folder_is_counted_as_skipped(env, capsys):
    model, imgs = env
    _video(imgs / "empty.avi", 0)
    assert run_cli(["run", model, str(imgs), "--json"]) == 3
    summary = _lines(capsys.readouterr().out)[-1]["summary"]
    assert summary["count"] == 3 and summary["skipped_by_reason"] == {"video has no frames": 1}


def test_a_truncated_avi_is_one_line_without_opencvs_reader_output(env, tmp_path):
    model, imgs = env
    good = _video(tmp_path / "v.avi", 10).read_bytes()
    bad = tmp_path / "trunc.avi"
    bad.write_bytes(good[:len(good) // 2])
    r = subprocess.run([sys.executable, "-m", "edgeproof", "run", model, str(bad)], capture_output=True, check=False)
    err = r.stderr.decode(errors="replace")
    assert r.returncode == 2 and "Unexpected element" not in err, err
    assert [ln for ln in err.splitlines() if ln.strip()] == [
        f"edgeproof: error: cannot open video file '{bad}': the file is not a video OpenCV can decode (codec "
        "missing or file corrupt)"]
    shutil.copy(bad, imgs / "trunc.avi")  # in a folder: skipped with its reason, and just as quiet
    r = subprocess.run([sys.executable, "-m", "edgeproof", "run", model, str(imgs)], capture_output=True, check=False)
    assert r.returncode == 3 and b"Unexpected element" not in r.stderr
