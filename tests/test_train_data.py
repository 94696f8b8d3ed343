"""Embedded datasets and the folder loader (no TensorFlow needed except where marked)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from edgeproof.contract import Preprocess
from edgeproof.errors import UsageError

cv2 = pytest.importorskip("cv2")


def _tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def _png(path: Path, img: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img)
    return path


def _folder(root: Path, classes=("a", "b"), n=6, size=12) -> Path:
    rng = np.random.default_rng(0)
    for c in classes:
        for i in range(n):
            _png(root / c / f"{i}.png", rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
    return root


# ------------------------------------------------------------------ embedded datasets

def test_shapes_deterministic_and_idempotent(tmp_path):
    from edgeproof.train.datasets import MARKER, build_dataset

    a = build_dataset("shapes", root=tmp_path / "a", image_size=24, per_class=8, seed=3)
    b = build_dataset("shapes", root=tmp_path / "b", image_size=24, per_class=8, seed=3)
    c = build_dataset("shapes", root=tmp_path / "c", image_size=24, per_class=8, seed=4)
    assert _tree_hash(a) == _tree_hash(b) != _tree_hash(c)
    assert sorted(p.name for p in (a / "train").iterdir()) == ["circle", "square", "triangle"]
    assert len(list((a / "train" / "circle").iterdir())) == 8
    assert len(list((a / "test" / "circle").iterdir())) == 2
    # a second call reuses the folder; one without the completion marker is rebuilt
    mtime = (a / MARKER).stat().st_mtime_ns
    assert build_dataset("shapes", root=tmp_path / "a", image_size=24, per_class=8, seed=3) == a
    assert (a / MARKER).stat().st_mtime_ns == mtime
    (a / MARKER).unlink()
    (a / "train" / "circle" / "circle_0000.png").unlink()
    assert build_dataset("shapes", root=tmp_path / "a", image_size=24, per_class=8, seed=3) == a
    assert _tree_hash(a) == _tree_hash(b)
    assert not [p for p in (tmp_path / "a").iterdir() if p.name.endswith(".tmp")]


def test_dataset_cache_location_and_bad_names(tmp_path, monkeypatch):
    from edgeproof.train.datasets import build_dataset, cache_root

    monkeypatch.setenv("EDGEPROOF_CACHE", str(tmp_path / "cache"))
    assert cache_root() == tmp_path / "cache" / "datasets"
    with pytest.raises(UsageError, match="unknown dataset 'nope'; valid: textures, shapes"):
        build_dataset("nope")
    with pytest.raises(UsageError, match="too small"):
        build_dataset("shapes", per_class=2)


def test_texture_crops_stay_inside_their_band():
    """Encode the row index in the pixel value: a split's crops may only contain its own rows."""
    from edgeproof.train.textures import BANDS, crop

    photo = np.repeat(np.arange(250, dtype=np.uint8)[:, None], 300, axis=1)
    rng = np.random.default_rng(0)
    for split, band in BANDS.items():
        lo, hi = round(band[0] * 250), round(band[1] * 250)
        for size in (16, 64):  # down- and up-scaling
            for _ in range(30):
                img = crop(photo, band, 45, size, rng)
                assert img.shape == (size, size)
                assert lo <= img.min() and img.max() <= hi - 1, (split, img.min(), img.max())


def test_textures_dataset(tmp_path):
    pytest.importorskip("skimage")
    from edgeproof.train.datasets import build_dataset
    from edgeproof.train.textures import CLASSES

    root = build_dataset("textures", root=tmp_path, image_size=32, per_class=10, seed=0)
    for split, n in (("train", 10), ("val", 2), ("test", 2)):
        assert sorted(p.name for p in (root / split).iterdir()) == sorted(CLASSES)
        for c in CLASSES:
            files = sorted((root / split / c).iterdir())
            assert len(files) == n
    gray = cv2.imread(str(root / "train" / "brick" / "brick_0000.png"), cv2.IMREAD_UNCHANGED)
    colour = cv2.imread(str(root / "train" / "hubble" / "hubble_0000.jpg"), cv2.IMREAD_UNCHANGED)
    assert gray.shape == (32, 32) and colour.shape == (32, 32, 3)
    # no image is shared between splits
    digests = {s: {hashlib.sha256(p.read_bytes()).hexdigest() for p in (root / s).rglob("*.*")}
               for s in ("train", "val", "test")}
    assert not (digests["train"] & digests["val"]) and not (digests["train"] & digests["test"])


# ------------------------------------------------------------------ loader

def test_skipped_files_and_conversions(tmp_path):
    from PIL import Image

    from edgeproof.train.data import load_data

    root = _folder(tmp_path / "d", n=4)
    ok = cv2.imencode(".png", np.full((12, 12, 3), 90, np.uint8))[1].tobytes()
    jpg = cv2.imencode(".jpg", np.full((12, 12, 3), 90, np.uint8))[1].tobytes()
    (root / "a" / "zero.png").write_bytes(b"")
    (root / "a" / "trunc.png").write_bytes(ok[: len(ok) // 2])
    (root / "a" / "trunc.jpg").write_bytes(jpg[: len(jpg) - 20])
    (root / "a" / "notes.txt").write_text("not an image")
    (root / "b" / "fake.png").write_text("plain text with a .png name")
    # conversions: RGBA, 16-bit grey, palette, 8-bit grey
    rgba = np.dstack([np.full((12, 12, 3), 200, np.uint8), np.full((12, 12), 255, np.uint8)])
    _png(root / "b" / "rgba.png", rgba)
    _png(root / "b" / "gray16.png", np.full((12, 12), 32896, np.uint16))  # 32896 / 257 = 128
    pal = Image.fromarray(np.zeros((12, 12), np.uint8), mode="P")
    pal.putpalette([10, 200, 30] + [0] * 765)
    pal.save(root / "b" / "pal.png")
    _png(root / "b" / "gray8.png", np.full((12, 12), 77, np.uint8))
    (root / "a" / ".hidden").write_text("ignored")

    data = load_data(root, Preprocess(12, 12), seed=0)
    assert data.skipped_summary() == {"not an image (looks like text)": 2, "truncated PNG": 1, "truncated JPEG": 1,
                                      "zero-byte file": 1}
    skipped = {Path(p).name for p, _ in data.skipped}
    assert skipped == {"zero.png", "trunc.png", "trunc.jpg", "notes.txt", "fake.png"}
    used = {Path(p).name: (s, i) for s, split in data.splits.items() for i, p in enumerate(split.paths)}
    assert {"rgba.png", "gray16.png", "pal.png", "gray8.png"} <= set(used)
    img = {name: data.splits[s].images[i] for name, (s, i) in used.items()}
    assert img["rgba.png"].shape == (12, 12, 3) and (img["rgba.png"] == 200).all()
    assert (img["gray16.png"] == 128).all()
    assert tuple(img["pal.png"][0, 0]) == (10, 200, 30)  # RGB order
    assert (img["gray8.png"] == 77).all()
    meta = data.split_json(0)
    assert meta["skipped"] and all(Path(p).is_absolute() for p, _ in meta["splits"]["train"])


def test_stratified_seeded_split(tmp_path):
    from edgeproof.train.data import load_data

    root = _folder(tmp_path / "d", classes=("x", "y", "z"), n=20, size=8)
    d1 = load_data(root, Preprocess(8, 8), seed=1)
    d2 = load_data(root, Preprocess(8, 8), seed=1)
    d3 = load_data(root, Preprocess(8, 8), seed=2)
    assert d1.layout == "split"
    for s in ("train", "val", "test"):
        assert d1.splits[s].paths == d2.splits[s].paths
        expected = {"train": 14, "val": 3, "test": 3}[s]
        assert np.bincount(d1.splits[s].labels).tolist() == [expected] * 3
    assert d1.splits["test"].paths != d3.splits["test"].paths
    all_paths = [p for s in d1.splits.values() for p in s.paths]
    assert len(all_paths) == len(set(all_paths)) == 60  # disjoint and complete


def test_given_split_folders_and_carving(tmp_path):
    from edgeproof.train.data import load_data

    root = tmp_path / "d"
    _folder(root / "train", n=20, size=8)
    _folder(root / "test", n=3, size=8)
    data = load_data(root, Preprocess(8, 8), seed=0)
    assert data.layout == "folders"
    assert len(data.splits["test"].paths) == 6 and all("/test/" in p for p in data.splits["test"].paths)
    assert np.bincount(data.splits["val"].labels).tolist() == [3, 3]  # carved out of train
    assert len(data.splits["train"].paths) == 34


def test_resize_matches_runtime_preprocessing(tmp_path):
    from edgeproof.runtime.preprocess import load_image
    from edgeproof.train.data import load_data

    root = _folder(tmp_path / "d", n=4, size=40)
    pp = Preprocess(16, 16)
    data = load_data(root, pp)
    split = data.splits["train"]
    np.testing.assert_array_equal(split.images[0].astype(np.float32), load_image(split.paths[0], pp))


@pytest.mark.parametrize("setup, message", [
    ("missing", "does not exist"),
    ("file", "is a file, not a folder"),
    ("empty", "is empty"),
    ("loose", "no class subfolders, only 2 loose file(s)"),
    ("single", "has a single class ('a')"),
    ("unreadable_class", "class 'b' has no readable images"),
    ("non_images", "no readable images in"),
    ("split_without_train", "has test/val/ but no train/"),
])
def test_bad_input_exits_2(tmp_path, capsys, setup, message):
    from edgeproof.cli.main import run_cli

    pytest.importorskip("tensorflow")
    d = tmp_path / "data"
    if setup == "file":
        d.write_text("x")
    elif setup == "empty":
        d.mkdir()
    elif setup == "loose":
        d.mkdir()
        (d / "1.png").write_bytes(b"1")
        (d / "2.png").write_bytes(b"2")
    elif setup == "single":
        _folder(d, classes=("a",))
    elif setup == "unreadable_class":
        _folder(d, classes=("a",))
        (d / "b").mkdir()
        (d / "b" / "x.jpg").write_bytes(b"")
        (d / "b" / "y.txt").write_text("hello")
    elif setup == "non_images":
        for c in ("a", "b"):
            (d / c).mkdir(parents=True)
            (d / c / "readme.txt").write_text("text")
    elif setup == "split_without_train":
        _folder(d / "val")
        _folder(d / "test")
    out = tmp_path / "run"
    rc = run_cli(["train", "--data", str(d), "-o", str(out), "--no-progress", "--epochs", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("edgeproof: error:") and message in err[0], err
    assert not out.exists() and not list(tmp_path.glob(".run*"))


def test_bad_options_exit_2(tmp_path, capsys):
    from edgeproof.cli.main import run_cli

    pytest.importorskip("tensorflow")
    root = _folder(tmp_path / "d")
    for argv, msg in ((["--img-size", "4"], "--img-size 4"), (["--epochs", "0"], "--epochs 0"),
                      (["--lr", "-1"], "--lr -1")):
        rc = run_cli(["train", "--data", str(root), "-o", str(tmp_path / "r"), "--no-progress", *argv])
        assert rc == 2 and msg in capsys.readouterr().err
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    rc = run_cli(["train", "--data", str(root), "-o", str(tmp_path / "mine"), "--no-progress"])
    assert rc == 2 and "not an edgeproof run folder" in capsys.readouterr().err
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


def test_missing_tensorflow_gives_install_hint(tmp_path, capsys, monkeypatch):
    import sys

    from edgeproof.cli.main import run_cli

    monkeypatch.setitem(sys.modules, "tensorflow", None)  # makes `import tensorflow` raise ImportError
    data = str(_folder(tmp_path / "d"))
    rc = run_cli(["train", "--data", data, "-o", str(tmp_path / "r"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "pip install 'edgeproof[train]'" in err and "edgeproof train" in err


def test_load_image_tf_close_to_opencv(tmp_path):
    pytest.importorskip("tensorflow")
    from edgeproof.runtime.preprocess import load_image
    from edgeproof.train.data import load_image_tf

    rng = np.random.default_rng(0)
    smooth = cv2.GaussianBlur(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8), (7, 7), 2)
    path = _png(tmp_path / "x.png", smooth)
    tf_img = load_image_tf(path, 24, 24)
    cv_img = load_image(path, Preprocess(24, 24))
    assert tf_img.shape == cv_img.shape == (24, 24, 3) and tf_img.dtype == np.float32
    diff = np.abs(tf_img - cv_img)
    assert diff.mean() < 3.0  # same pixels, different resize kernels: small drift, not zero
    same = load_image_tf(path, 48, 48)
    np.testing.assert_allclose(same, cv2.cvtColor(smooth, cv2.COLOR_BGR2RGB).astype(np.float32), atol=1e-4)
    with pytest.raises(UsageError, match="cannot decode"):
        (tmp_path / "bad.png").write_text("nope")
        load_image_tf(tmp_path / "bad.png", 8, 8)
    assert json.dumps(tf_img.tolist())  # plain float32 numpy, serialisable


_CLI_PROBE = ("import sys; from edgeproof.cli.main import run_cli; rc = run_cli(sys.argv[1:]); "
              "print('tensorflow' in sys.modules); sys.exit(rc)")


@pytest.mark.parametrize("case", ["missing", "empty_classes", "out_under_a_file", "out_in_proc", "out_dot"])
def test_bad_train_input_fails_fast_with_one_line(tmp_path, case):
    """Bad data or -o fails before TensorFlow's import and before any progress bar: exactly one line."""
    import subprocess
    import sys

    data = tmp_path / "data"
    out = tmp_path / "run"
    if case == "empty_classes":
        (data / "a").mkdir(parents=True)
        (data / "b").mkdir()
    elif case != "missing":
        for c in ("a", "b"):
            _png(data / c / "x.png", np.zeros((8, 8, 3), np.uint8))
        (tmp_path / "a_file").write_text("x")
        out = {"out_under_a_file": tmp_path / "a_file" / "run", "out_in_proc": Path("/proc/edgeproof-test-run"),
               "out_dot": Path(".")}[case]
    proc = subprocess.run([sys.executable, "-c", _CLI_PROBE, "train", "--data", str(data), "-o", str(out),
                           "--img-size", "16"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("edgeproof: error:"), proc.stderr
    assert proc.stdout.strip() == "False"  # TensorFlow never imported
    assert case == "out_dot" or not out.exists()


@pytest.mark.slow
def test_tensorflow_start_up_banner_is_filtered():
    import subprocess
    import sys

    from edgeproof.train.tf_quiet import drop_banner

    noise = ("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
             "I0000 00:00:1795946745.177963    1653 port.cc:153] oneDNN custom operations are on.\n")
    assert drop_banner(noise + "E0000 00:00:1.5 12 x.cc:1] real error\nplain line\n" + noise) == \
        "E0000 00:00:1.5 12 x.cc:1] real error\nplain line\n"
    pytest.importorskip("tensorflow")
    proc = subprocess.run([sys.executable, "-c", "from edgeproof.train.tf_quiet import import_tensorflow as i; "
                           "import sys; print(i().__name__); print('after', file=sys.stderr)"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "tensorflow", proc.stderr
    assert proc.stderr == "after\n", proc.stderr


def test_unwritable_dataset_cache_exits_2(tmp_path, capsys, monkeypatch):
    from edgeproof.cli.main import run_cli

    (tmp_path / "a_file").write_text("x")
    monkeypatch.setenv("EDGEPROOF_CACHE", str(tmp_path / "a_file"))
    assert run_cli(["train", "--dataset", "shapes", "-o", str(tmp_path / "run"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "cannot write the shapes dataset" in err and "EDGEPROOF_CACHE" in err and "internal error" not in err
    assert not (tmp_path / "run").exists()


def test_a_symlink_loop_in_a_class_folder_is_skipped_with_its_reason(tmp_path):
    """Path.resolve() raises RuntimeError on a loop: the scan must not fail ('internal error'), the file
    is skipped like in 'edgeproof run'."""
    from edgeproof.train.data import load_data

    root = _folder(tmp_path / "d", n=4)
    (root / "a" / "loop1.png").symlink_to("loop2.png")
    (root / "a" / "loop2.png").symlink_to("loop1.png")
    data = load_data(root, Preprocess(12, 12), seed=0)
    assert sorted(Path(p).name for p, _ in data.skipped) == ["loop1.png", "loop2.png"]
    assert {r for _, r in data.skipped} == {"unreadable (Too many levels of symbolic links)"}
    assert sum(len(s.paths) for s in data.splits.values()) == 8
