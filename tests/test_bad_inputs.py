"""Bad images and sources: skipped with a short reason, counted, and the run goes on (issue 8).

Every bad input is built here next to good images: zero-byte, truncated JPEG and PNG, text named
.jpg, a PNG whose IHDR declares 100000x100000 (a decompression bomb), a permission error (simulated: the tests run as root), a garbage .mp4 and a real video. `edgeproof
run` processes the good ones, lists each bad one with its reason and exits 3; training and
calibration skip the same files with the same reasons. A directory named x.jpg where a file was
expected (a glob match, a list entry) is skipped as "is a directory"; a folder scan recurses into it.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from edgeproof.cli.main import run_cli
from edgeproof.contract import Preprocess
from edgeproof.runtime import image_check
from edgeproof.runtime.preprocess import ImageReadError, read_image

cv2 = pytest.importorskip("cv2")
pytest.importorskip("onnxruntime")

from _runtime_models import LABELS, color_onnx, solid

# file name -> the reason it is skipped with, everywhere
BAD = {
    "zero.jpg": "zero-byte file",
    "cut.jpg": "truncated JPEG",
    "cut.png": "truncated PNG",
    "text.jpg": "not an image (looks like text)",
    "bomb.png": "image too large (over the 100 MP limit)",
    "denied.png": "permission denied",
}
DIR = {"dir.jpg": "is a directory"}
VIDEO_BAD = {"garbage.mp4": "cannot open video (unsupported codec or corrupt file)"}


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid 8x8 PNG whose IHDR (with a correct CRC) declares width x height."""
    png = bytearray(cv2.imencode(".png", np.full((8, 8, 3), 90, np.uint8))[1].tobytes())
    struct.pack_into(">II", png, 16, width, height)
    struct.pack_into(">I", png, 29, zlib.crc32(bytes(png[12:29])))
    return bytes(png)


def write_bad(folder: Path, names=BAD) -> None:
    big = cv2.resize(solid("red", 48, 64), (64, 48))
    jpg = cv2.imencode(".jpg", big)[1].tobytes()
    png = cv2.imencode(".png", big)[1].tobytes()
    content = {"zero.jpg": b"", "cut.jpg": jpg[: len(jpg) // 2], "cut.png": png[: len(png) // 2],
               "text.jpg": b"this is a note, not a photo\n", "bomb.png": bomb_png(),
               "denied.png": png, "garbage.mp4": os.urandom(4096)}
    for name in names:
        if name in DIR:
            (folder / name).mkdir()
        else:
            (folder / name).write_bytes(content[name])


def write_good(folder: Path) -> dict[str, str]:
    """Good PNG and JPEG images -> {path: label}."""
    out = {}
    for i, n in enumerate(LABELS):
        p = folder / f"good{i}_{n}.{'png' if i % 2 else 'jpg'}"
        cv2.imwrite(str(p), solid(n))
        out[str(p)] = n
    return out


@pytest.fixture
def deny(monkeypatch):
    """Opening a file named denied.png raises PermissionError (root ignores chmod 000)."""
    real_open = open

    def fake_open(path, *args, **kwargs):
        if Path(path).name == "denied.png":
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(image_check, "open", fake_open, raising=False)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return str(color_onnx(tmp_path_factory.mktemp("m") / "color.onnx-fp32.onnx"))


def _rows(out: str) -> tuple[list[dict], dict]:
    rows = [json.loads(line) for line in out.splitlines() if line.strip()]
    return rows[:-1], rows[-1]["summary"]


# ------------------------------------------------------------------ the check itself

@pytest.mark.parametrize("name", sorted({**BAD, **DIR}))
def test_read_image_gives_the_reason(tmp_path, deny, name):
    write_bad(tmp_path, [name])
    with pytest.raises(ImageReadError) as exc:
        read_image(tmp_path / name)
    assert str(exc.value) == {**BAD, **DIR}[name]


def test_every_readable_format_passes_and_its_size_is_read(tmp_path):
    img = np.random.default_rng(0).integers(0, 255, (64, 80, 3), np.uint8)
    for ext in (".png", ".jpg", ".bmp", ".webp", ".tif", ".ppm", ".jp2", ".hdr", ".ras"):
        data = cv2.imencode(ext, img)[1].tobytes()
        assert image_check.image_size(data)[1] == (80, 64), ext
        (tmp_path / f"x{ext}").write_bytes(data)
        assert read_image(tmp_path / f"x{ext}").shape == (64, 80, 3), ext
    jpg = cv2.imencode(".jpg", img)[1].tobytes()
    image_check.check_bytes(jpg + b"\0" * 16)  # padding after the end marker is legal
    image_check.check_bytes(cv2.imencode(".png", img)[1].tobytes() + b"junk")  # so is junk after IEND


@pytest.mark.parametrize("fmt, patch", [
    ("png", lambda d: bomb_png()),
    ("jpg", lambda d: _patch(d, d.index(b"\xff\xc0") + 5, ">HH", 60000, 60000)),
    ("bmp", lambda d: _patch(d, 18, "<ii", 50000, -50000)),
    ("gif", lambda d: _patch(d, 6, "<HH", 65535, 65535)),
    ("tif", None),
])
def test_pixel_limit_is_enforced_before_any_allocation(monkeypatch, fmt, patch):
    """The declared size is refused from the header: OpenCV's decoder is never called."""
    calls = []
    real = cv2.imdecode
    monkeypatch.setattr(cv2, "imdecode", lambda *a: calls.append(1) or real(*a))
    small = np.full((8, 8, 3), 90, np.uint8)
    if fmt == "gif":
        import io

        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(small).save(buf, format="GIF")
        data = buf.getvalue()
    else:
        data = cv2.imencode(f".{fmt}", small)[1].tobytes()
    from edgeproof.runtime.preprocess import decode

    assert decode(data).shape == (8, 8, 3) and calls  # the spy sees a real decode
    calls.clear()
    if fmt == "tif":  # a limit below the image's own 64 pixels
        monkeypatch.setenv(image_check.ENV, "63")
        bad = data
    else:
        bad = patch(data)
    with pytest.raises(ImageReadError, match=r"image too large \(over the .* MP limit\)"):
        decode(bad)
    assert not calls


def _patch(data: bytes, offset: int, fmt: str, *values) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, *values)
    return bytes(out)


def test_limit_from_env_and_its_parsing(monkeypatch):
    assert image_check.parse_pixels("100M") == image_check.parse_pixels("100MP") == 100_000_000
    assert image_check.parse_pixels("1e6") == image_check.parse_pixels(" 1 mp ") == 1_000_000
    for bad in ("lots", "0", "-5", "nan", "inf", ""):
        with pytest.raises(ValueError):
            image_check.parse_pixels(bad)
    monkeypatch.setenv(image_check.ENV, "64M")
    assert image_check.max_pixels() == 64_000_000
    monkeypatch.setenv(image_check.ENV, "huge")
    with pytest.raises(Exception, match="EDGEPROOF_MAX_IMAGE_PIXELS='huge' is not a pixel count"):
        image_check.max_pixels()


def test_opencv_backstop_is_set_before_cv2_loads_and_a_users_setting_wins():
    """Formats whose header is not read here still meet the limit inside OpenCV."""
    code = "\n".join([
        "import os, numpy as np",
        "from edgeproof.runtime import preprocess",  # before cv2, as every edgeproof path does
        "import cv2",
        "png = cv2.imencode('.png', np.zeros((40, 40, 3), np.uint8))[1].tobytes()",
        "try:",
        "    preprocess._decode_checked(png)  # OpenCV alone, without edgeproof's header check",
        "    why = 'decoded'",
        "except preprocess.ImageReadError as exc:",
        "    why = str(exc)",
        "print(os.environ.get('OPENCV_IO_MAX_IMAGE_PIXELS'), why)"])
    env = {k: v for k, v in os.environ.items() if k != "OPENCV_IO_MAX_IMAGE_PIXELS"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       env={**env, "EDGEPROOF_MAX_IMAGE_PIXELS": "1000"})
    assert r.stdout.strip() == "1000 image too large (over OPENCV_IO_MAX_IMAGE_PIXELS)"  # 1600 px: OpenCV refuses
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       env={**env, "EDGEPROOF_MAX_IMAGE_PIXELS": "1000", "OPENCV_IO_MAX_IMAGE_PIXELS": "5000"})
    assert r.stdout.strip() == "5000 decoded"


# ------------------------------------------------------------------ edgeproof run

def test_run_folder_skips_every_bad_input_with_its_reason_exit_3(model, tmp_path, deny, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    good = write_good(folder)
    write_bad(folder)
    assert run_cli(["run", model, str(folder), "--json"]) == 3
    results, summary = _rows(capsys.readouterr().out)
    assert {r["input"]: r["top_k"][0]["label"] for r in results} == good
    assert {Path(s["input"]).name: s["why"] for s in summary["skipped"]} == BAD
    assert summary["skipped_total"] == len(BAD) and summary["count"] == len(good)
    assert summary["skipped_by_reason"] == {why: 1 for why in BAD.values()}
    assert summary["dropped"] == 0

    assert run_cli(["run", model, str(folder)]) == 3
    err = capsys.readouterr().err
    assert f"skipped {len(BAD)} (by reason: " in err and "zero-byte file: 1" in err
    for name, why in BAD.items():
        assert f"{name}: {why}" in err
    assert "dropped" not in err


def test_glob_and_list_file_entries(model, tmp_path, deny, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    good = write_good(folder)
    write_bad(folder, {**BAD, **DIR})
    assert run_cli(["run", model, str(folder / "*.jpg"), "--json"]) == 3
    results, summary = _rows(capsys.readouterr().out)
    assert {Path(s["input"]).name: s["why"] for s in summary["skipped"]} == {
        n: w for n, w in {**BAD, **DIR}.items() if n.endswith(".jpg")}  # a directory where a file was expected
    lst = tmp_path / "list.txt"
    lst.write_text("\n".join([*good, str(folder / "dir.jpg"), "missing.png", str(folder / "denied.png")]) + "\n")
    assert run_cli(["run", model, str(lst), "--json"]) == 3
    results, summary = _rows(capsys.readouterr().out)
    assert len(results) == len(good)
    assert {Path(s["input"]).name: s["why"] for s in summary["skipped"]} == {
        "dir.jpg": "is a directory", "missing.png": "not found", "denied.png": "permission denied"}


def test_nothing_readable_exits_2_with_one_line(model, tmp_path, deny, capsys):
    folder = tmp_path / "bad"
    folder.mkdir()
    write_bad(folder)
    assert run_cli(["run", model, str(folder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"edgeproof: error: none of the {len(BAD)} input(s) could be read (first: ")
    assert "Traceback" not in "\n".join(err)
    assert run_cli(["run", model, str(folder / "zero.jpg")]) == 2
    assert "zero-byte file" in capsys.readouterr().err


def test_max_image_pixels_flag_and_bad_values(model, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "imgs"
    folder.mkdir()
    write_good(folder)  # 24x20 = 480 pixels each
    assert run_cli(["run", model, str(folder), "--max-image-pixels", "479"]) == 2
    assert "image too large (over the 0.000479 MP limit)" in capsys.readouterr().err
    assert run_cli(["run", model, str(folder), "--max-image-pixels", "480"]) == 0
    assert image_check.max_pixels() == image_check.DEFAULT_MAX_PIXELS  # the flag lasts one run
    capsys.readouterr()
    assert run_cli(["run", model, str(folder), "--max-image-pixels", "big"]) == 2
    assert "--max-image-pixels 'big' is not a pixel count" in capsys.readouterr().err
    monkeypatch.setenv(image_check.ENV, "lots")
    assert run_cli(["run", model, str(folder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "EDGEPROOF_MAX_IMAGE_PIXELS='lots'" in err[0]


def test_folder_with_videos_expands_frames_and_skips_a_garbage_one(model, tmp_path, capsys):
    folder = tmp_path / "media"
    folder.mkdir()
    good = write_good(folder)
    names = ["green", "blue", "red", "red"]
    w = cv2.VideoWriter(str(folder / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 24))
    assert w.isOpened()
    for n in names:
        w.write(solid(n, 24, 32))
    w.release()
    write_bad(folder, VIDEO_BAD)
    assert run_cli(["run", model, str(folder), "--json"]) == 3
    results, summary = _rows(capsys.readouterr().out)
    frames = [r for r in results if "clip.avi#" in r["input"]]
    assert [r["top_k"][0]["label"] for r in frames] == names
    assert {r["input"]: r["top_k"][0]["label"] for r in results if r not in frames} == good
    assert [r["index"] for r in results] == sorted({r["index"] for r in results})  # in order, each once
    assert {Path(s["input"]).name: s["why"] for s in summary["skipped"]} == VIDEO_BAD
    # given directly, a video that cannot be opened is one clear error: nothing to process
    assert run_cli(["run", model, str(folder / "garbage.mp4")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot open video file" in err[0]



def test_a_subfolder_that_cannot_be_listed_is_skipped(model, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "imgs"
    (folder / "locked").mkdir(parents=True)
    good = write_good(folder)
    real_scandir = os.scandir

    def scandir(path="."):
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)  # root ignores chmod 000
    assert run_cli(["run", model, str(folder), "--json"]) == 3
    results, summary = _rows(capsys.readouterr().out)
    assert {r["input"]: r["top_k"][0]["label"] for r in results} == good
    assert [(Path(s["input"]).name, s["why"]) for s in summary["skipped"]] == [("locked", "permission denied")]


# ------------------------------------------------------------------ training and calibration

def test_training_and_calibration_skip_the_same_files_with_the_same_reasons(model, tmp_path, deny, capsys):
    from edgeproof.train.data import load_data

    root = tmp_path / "data"
    for cls in LABELS:
        (root / cls).mkdir(parents=True)
        for i in range(4):
            cv2.imwrite(str(root / cls / f"{i}.png"), solid(cls))
    write_bad(root / "red")
    data = load_data(root, Preprocess(8, 8), seed=0)
    train_reasons = {Path(p).name: r for p, r in data.skipped}
    assert train_reasons == BAD
    assert data.skipped_summary() == {why: 1 for why in BAD.values()}
    assert sum(len(s.paths) for s in data.splits.values()) == 12  # trained on the rest

    # calibration draws from a run's train split: the same files, the same reasons
    from edgeproof.convert.calibration import calibration_batch, describe

    run = tmp_path / "run"
    run.mkdir()
    items = [[str(p), LABELS.index(p.parent.name)] for p in sorted(root.rglob("*")) if p.parent != root]
    (run / "model.keras").write_bytes(b"placeholder")
    (run / "labels.txt").write_text("\n".join(LABELS) + "\n")
    (run / "preprocess.json").write_text(json.dumps(Preprocess(8, 8).to_dict()))
    (run / "split.json").write_text(json.dumps({"splits": {"train": items}}))
    batch, sha, skipped = calibration_batch(run, 100)
    assert len(batch) == 12 and {Path(p).name: r for p, r in skipped} == BAD
    assert describe(batch, sha, skipped, 100)["skipped_by_reason"] == {why: 1 for why in BAD.values()}

    # and `edgeproof run` over the same folder
    assert run_cli(["run", model, str(root / "red"), "--json"]) == 3
    _, summary = _rows(capsys.readouterr().out)
    assert {Path(s["input"]).name: s["why"] for s in summary["skipped"]} == BAD


@pytest.mark.slow
def test_train_cli_trains_on_the_rest_and_reports_skips(tmp_path, capsys):
    pytest.importorskip("tensorflow")
    root = tmp_path / "data"
    for cls in LABELS:
        (root / cls).mkdir(parents=True)
        for i in range(6):
            cv2.imwrite(str(root / cls / f"{i}.png"), solid(cls, 16, 16))
    names = {n: w for n, w in BAD.items() if n != "denied.png"}  # no PermissionError simulated here
    write_bad(root / "green", names)
    out = tmp_path / "run"
    rc = run_cli(["train", "--data", str(root), "-o", str(out), "--img-size", "16", "--epochs", "1",
                  "--no-progress", "--json"])
    assert rc == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["skipped"]["total"] == len(names)
    assert metrics["skipped"]["by_reason"] == {why: 1 for why in names.values()}
    assert f"skipped {len(names)} file(s)" in capsys.readouterr().err


def test_no_verify_loads_a_model_that_does_not_match_its_manifest(tmp_path, capsys):
    folder = tmp_path / "art"
    folder.mkdir()
    model = color_onnx(folder / "color.onnx-fp32.onnx")
    img = tmp_path / "red.png"
    cv2.imwrite(str(img), solid("red"))
    manifest = {"artifacts": {"onnx-fp32": {"path": model.name, "status": "ok", "sha256": "0" * 64}}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert run_cli(["run", str(model), str(img)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not match its manifest" in err[0] and "--no-verify" in err[0]
    assert run_cli(["run", str(model), str(img), "--no-verify", "--json"]) == 0
    assert _rows(capsys.readouterr().out)[0][0]["top_k"][0]["label"] == "red"
