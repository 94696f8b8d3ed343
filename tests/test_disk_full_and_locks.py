"""Full disks, concurrent writers, odd manifests (issue 8): convert and train keep what is written.

A full disk (ENOSPC, simulated: CI cannot mount a tiny tmpfs) during convert, train or a dataset
build is one line naming the fix, never a deleted earlier artifact or an 'internal error'; a second
convert into one OUT is refused while the first runs. Helpers: tests/_kill_checks.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

pytest.importorskip("tensorflow", reason="needs edgeproof[train]")

from _kill_checks import SMALL, check_checkpoint, check_run_folder, hidden_are_temps, snapshot  # noqa: E402

from edgeproof.cli.main import run_cli  # noqa: E402


def test_train_on_a_full_disk_keeps_the_old_run_says_how_to_resume_and_resumes(tiny_run, shapes_dir, tmp_path,
                                                                               monkeypatch, capfd):
    """ENOSPC while writing the new run folder (after both epochs were checkpointed) was an 'internal
    error' (exit 1) saying nothing of the checkpoint; now one line, exit 2, and --resume finishes."""
    import errno

    from edgeproof.train import report

    out = tmp_path / "run"
    shutil.copytree(tiny_run, out)
    old = snapshot(out)

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(report, "plot_confusion", full)
    args = ["train", "--data", str(shapes_dir), *SMALL, "-o", str(out)]
    assert run_cli(args) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert err[-1] == (f"edgeproof: error: no space left on the device ({tmp_path}); free some space or choose "
                       f"another -o, then add --resume to continue after epoch 2 (checkpoint in "
                       f"'{tmp_path / '.run.partial'}'); '{out}' is as before this run"), err
    check_run_folder(out, old)
    assert check_checkpoint(tmp_path / ".run.partial")["epoch"] == 2
    monkeypatch.undo()
    assert run_cli([*args, "--resume"]) == 0
    assert json.loads((out / "metrics.json").read_text())["resumed_after_epoch"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_dataset_build_on_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    import errno

    from edgeproof.errors import EdgeproofError
    from edgeproof.train import datasets

    def generate(folder, *a):
        (folder / "half.png").write_bytes(b"\x89PNG")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(datasets, "_generator", lambda info: generate)
    with pytest.raises(EdgeproofError) as exc:
        datasets.build_dataset("shapes", root=tmp_path)
    assert str(exc.value) == (f"no space left on the device of '{tmp_path}' while building the shapes dataset; free "
                              "some space or give another dataset root")
    assert list(tmp_path.iterdir()) == []


def test_a_second_convert_into_the_same_out_is_refused_while_the_first_runs(tiny_run, tiny_artifacts, tmp_path,
                                                                             capfd):
    """Two converts into one OUT each merge their entries into the manifest they read at the start:
    the later write lost the other's entries (and could vouch for a sha256 the other replaced). The
    second is refused at once; the lock is the kernel's, so a killed holder never leaves it behind."""
    from edgeproof.atomic import Flock

    out = tmp_path / "out"
    shutil.copytree(tiny_artifacts, out)
    old = snapshot(out)
    args = ["convert", str(tiny_run), "--to", "tflite-fp32", "-o", str(out), "--no-progress"]
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom edgeproof.atomic import Flock\n"
                               "lock = Flock(sys.argv[1], folder=True)\nprint('held', flush=True)\ntime.sleep(60)",
                               str(out)], stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == b"held\n"
        assert run_cli(args) == 2
        out_text, err = capfd.readouterr()
        assert err.strip() == (f"edgeproof: error: another 'edgeproof convert' is writing to '{out}' right now; "
                               "wait for it to finish or choose another -o") and out_text == ""
        assert snapshot(out) == old and not hidden_are_temps(out)
    finally:
        holder.kill()
        holder.wait()
    with Flock(out, folder=True):  # the dead holder's lock is gone
        pass


@pytest.mark.parametrize("where", ["artifact", "manifest"])
def test_convert_on_a_full_disk_keeps_the_earlier_artifacts_and_says_so_in_one_line(
        tiny_run, tiny_artifacts, tmp_path, monkeypatch, capfd, where):
    """ENOSPC while writing tflite-fp32's temp file, or the manifest after the new file is in: the
    earlier complete artifact was deleted as 'failed' (and every later format failed the same way)."""
    import errno

    from edgeproof.convert import manifest, verify
    from edgeproof.runtime.integrity import verify_manifest

    out = tmp_path / "out"
    shutil.copytree(tiny_artifacts, out)
    old = snapshot(out)

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    if where == "artifact":
        monkeypatch.setattr(verify, "verify_tflite", full)
    else:
        real = manifest.write_json
        monkeypatch.setattr(manifest, "write_json", lambda p, obj: full() if obj["artifacts"]["tflite-fp32"][
            "status"] == "ok" and obj["artifacts"]["tflite-fp32"]["sha256"] else real(p, obj))
    args = ["convert", str(tiny_run), "--to", "tflite-fp32,onnx-fp32", "-o", str(out), "--no-progress"]
    assert run_cli(args) == 2
    stdout, err = capfd.readouterr()
    assert err.strip().splitlines()[-1] == (
        f"edgeproof: error: tflite-fp32: no space left on the device ({out}); free some space or choose another -o, "
        f"then re-run (what '{out}' already holds is complete and matches manifest.json)")
    assert "onnx-fp32" not in err  # stopped: the next format would fail the same way
    now = snapshot(out)
    assert set(now) == set(old) and not hidden_are_temps(out)
    changed = {k for k in old if now[k] != old[k]}
    assert changed == ({"manifest.json", "model.tflite-fp32.tflite"} if where == "manifest" else set())
    for name in now:
        if name.endswith((".tflite", ".onnx")):
            verify_manifest(out / name)  # each file matches its entry, or its entry is 'pending' (unchecked)


def test_calibrated_convert_prints_no_quantizer_chatter(tiny_run, tmp_path, capfd):
    """TensorFlow's calibrating quantizer wrote 'fully_quantize: 0, inference_type: 6, ...' to fd 2."""
    args = ["convert", str(tiny_run), "--to", "tflite-int8", "-o", str(tmp_path / "out"), "--no-progress",
            "--calib-count", "8"]
    assert run_cli(args) == 0
    err = capfd.readouterr().err
    assert "fully_quantize" not in err and "manifest:" in err


@pytest.mark.parametrize("kind", ["folder", "fifo", "deep"])
def test_convert_into_an_out_with_an_odd_manifest(tiny_run, tmp_path, capfd, kind):
    """A folder or FIFO named manifest.json: refused before anything is written (was an 'internal
    error' after the artifact was written, or a read blocked forever). JSON nested 100,000 deep
    (RecursionError, an 'internal error') is not a manifest edgeproof wrote: the user's file is kept
    byte for byte and convert refuses in one line (it used to be replaced)."""
    import os

    out = tmp_path / "out"
    out.mkdir()
    mpath = out / "manifest.json"
    {"folder": mpath.mkdir, "fifo": lambda: os.mkfifo(mpath),
     "deep": lambda: mpath.write_text("[" * 100_000)}[kind]()
    rc = run_cli(["convert", str(tiny_run), "--to", "tflite-fp32", "-o", str(out), "--no-progress"])
    err = capfd.readouterr().err.strip().splitlines()
    if kind == "deep":
        assert rc == 2 and len(err) == 1 and "manifest.json" in err[0] and "-o" in err[0], err
        assert mpath.read_text() == "[" * 100_000 and [p.name for p in out.iterdir()] == ["manifest.json"]
    else:
        assert rc == 2 and err == [f"edgeproof: error: '{mpath}' is not a file; remove or rename it (convert "
                                   "writes the artifacts' sha256 there), or choose another -o"]
        assert [p.name for p in out.iterdir()] == ["manifest.json"]


@pytest.mark.parametrize("text, unreadable", [(None, False), ('{"calibration": {"requested": 12}}', False),
                                              ("[1, 2]", True), ('{"calibration": "x"}', True),
                                              ("[" * 100_000, True), ('{"calibration": {"requested": "many"}}', True)])
def test_parity_triage_reads_any_manifest_without_crashing(tiny_run, tmp_path, text, unreadable):
    """A list, a string calibration entry or JSON nested too deep raised AttributeError/RecursionError."""
    from edgeproof.parity.triage import calibration_for
    from edgeproof.train.run_dir import load_run

    if text is not None:
        (tmp_path / "manifest.json").write_text(text)
    batch, notes = calibration_for(load_run(tiny_run), tmp_path)
    assert len(batch) > 0
    assert ("manifest.json unreadable; calibrating with 200 images" in notes) == unreadable
