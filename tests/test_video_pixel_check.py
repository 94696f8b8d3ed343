"""Files that go to cv2.VideoCapture (animated GIFs, videos) get the image pixel check (issue 17, item 3)."""

from __future__ import annotations

import json
import struct

import pytest

from edgeproof.cli.main import run_cli
from edgeproof.runtime.video_check import gif_canvas

cv2 = pytest.importorskip("cv2")
pytest.importorskip("onnxruntime")

from _runtime_models import LABELS, color_onnx, solid


def _gif(w: int, h: int, frames: list[tuple[int, int, int, int]] | None = None) -> bytes:
    """A tiny valid GIF (2-colour global table, one LZW clear+end per frame) declaring w x h."""
    data = b"GIF89a" + struct.pack("<HHBBB", w, h, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    for left, top, fw, fh in frames or [(0, 0, w, h)]:
        data += b"\x21\xf9\x04\x00\x0a\x00\x00\x00"  # graphic control extension (a frame delay)
        data += b"\x2c" + struct.pack("<HHHHB", left, top, fw, fh, 0) + b"\x02\x02\x4c\x01\x00"
    return data + b"\x3b"


def test_gif_canvas_reads_the_screen_and_every_frame():
    assert gif_canvas(_gif(16000, 16000)) == (16000, 16000)
    assert gif_canvas(_gif(10, 10, [(0, 0, 10, 10), (5000, 7, 3000, 20)])) == (8000, 27)
    assert gif_canvas(_gif(10, 10)[:25]) == (10, 10)  # truncated: what is there is checked


@pytest.fixture
def env(tmp_path):
    model = color_onnx(tmp_path / "model.onnx-fp32.onnx")
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    cv2.imwrite(str(imgs / "a_red.png"), solid(LABELS[0]))
    (imgs / "bomb.gif").write_bytes(_gif(1200, 1200))  # 1.44 MP: OpenCV decodes it
    return model, imgs


def test_a_gif_over_the_limit_in_a_folder_is_skipped(env, capsys):
    model, imgs = env
    rc = run_cli(["run", str(model), str(imgs), "--json", "--max-image-pixels", "1M"])
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])["summary"]
    assert rc == 3 and summary["count"] == 1
    assert summary["skipped_by_reason"] == {"image too large (over the 1 MP limit)": 1}


def test_a_gif_over_the_limit_given_alone_is_refused(env, capsys):
    model, imgs = env
    assert run_cli(["run", str(model), str(imgs / "bomb.gif"), "--max-image-pixels", "1M"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bomb.gif" in err[0] and "image too large (over the 1 MP limit)" in err[0]
    assert run_cli(["run", str(model), str(imgs / "bomb.gif"), "--max-image-pixels", "2M", "--json"]) == 0


def test_a_video_whose_frames_are_over_the_limit_is_refused(env, tmp_path, capsys):
    model, _ = env
    path = tmp_path / "big.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (1100, 1000))
    for _ in range(2):
        writer.write(solid(LABELS[1], 1000, 1100))
    writer.release()
    assert run_cli(["run", str(model), str(path), "--max-image-pixels", "1M"]) == 2
    assert "image too large (over the 1 MP limit)" in capsys.readouterr().err
    assert run_cli(["run", str(model), str(path), "--max-image-pixels", "2M", "--json"]) == 0
