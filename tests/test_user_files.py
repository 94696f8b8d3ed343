"""Files the user names are regular files read with a bound (issue 24, item 4).

A FIFO used to hang each reader without a word, /dev/zero grew without end, and a 1.5 GB sparse list file was
read whole. Each reader is called in a daemon thread with a deadline, so a reader that blocks fails this test
instead of hanging the suite."""

from __future__ import annotations

import os
import resource
import threading
from pathlib import Path

import pytest
from _errors import one_error_line

from edgeproof import user_files
from edgeproof.errors import UsageError


def _labels(p: Path):
    from edgeproof.runtime.model import read_labels

    return read_labels(p)


def _list(p: Path):
    from edgeproof.runtime.sources import _list_file

    return _list_file(p)


def _cluster(p: Path):
    from edgeproof.train.distributed import resolve_topology

    return resolve_topology(p, environ={})


def _profile(p: Path):
    from edgeproof.devices.profiles import load_profile_file

    return load_profile_file(p)


def _split(p: Path):
    from edgeproof.train.run_dir import read_split

    return read_split(p)


READERS = {"labels": (_labels, user_files.LABELS), "list": (_list, user_files.LIST),
           "cluster": (_cluster, user_files.CLUSTER), "profile": (_profile, user_files.PROFILE),
           "split": (_split, user_files.SPLIT)}


def _call(fn, path: Path, seconds: float = 10.0) -> BaseException | None:
    """What fn(path) raised (None if it returned), or fail when it is still blocked after `seconds`."""
    box: list = []

    def target():
        try:
            fn(path)
            box.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test, which asserts its type
            box.append(exc)

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    assert box, f"reading {path} was still blocked after {seconds} s"
    return box[0]


@pytest.mark.parametrize("reader", sorted(READERS))
@pytest.mark.parametrize("what", ["fifo", "char device", "directory"])
def test_a_user_named_file_that_is_not_a_regular_file_is_refused_unread(tmp_path, reader, what):
    fn, _kind = READERS[reader]
    path = tmp_path / f"input.{'toml' if reader == 'profile' else 'txt'}"
    if what == "fifo":
        os.mkfifo(path)
    elif what == "directory":
        path.mkdir()
    else:
        path.symlink_to("/dev/null")  # reads as empty: only the file-type check can refuse it
    exc = _call(fn, path)
    assert isinstance(exc, UsageError), exc
    msg = str(exc)
    assert "\n" not in msg and str(path) in msg and "not a regular file" in msg and ("give " in msg or "re-run" in msg), msg


@pytest.mark.parametrize("reader", sorted(READERS))
def test_a_file_over_its_kinds_limit_is_refused_before_it_is_read(tmp_path, reader):
    fn, kind = READERS[reader]
    path = tmp_path / "big.txt"
    with open(path, "wb") as fh:  # sparse: costs no disk, and reading it would cost limit + 1 bytes of memory
        fh.truncate(kind.limit + 1)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    exc = _call(fn, path, seconds=20)
    grew_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert isinstance(exc, UsageError), exc
    assert f"{kind.limit + 1:,} bytes, over the" in str(exc), exc
    assert grew_mib < 16, f"refusing {path} grew the process by {grew_mib:.0f} MiB"


def test_the_limits_fit_what_each_kind_really_holds():
    from edgeproof.contract import MAX_LABELS

    # a 21k-class label list is about 400 KB; a split of a million images of 100-byte paths about 100 MB
    assert user_files.LABELS.limit >= MAX_LABELS * 300
    assert user_files.SPLIT.limit >= 10**6 * 100
    assert user_files.LIST.limit >= 10**6 * 200
    assert user_files.KEY.limit <= 64 * 1024 and user_files.CLUSTER.limit <= 16 * 2**20


def test_a_file_that_grows_while_it_is_read_is_cut_at_the_limit(tmp_path, monkeypatch):
    path = tmp_path / "key"
    path.write_text("k" * 100)
    real_read = os.read
    monkeypatch.setattr(os, "read", lambda fd, n: real_read(fd, n) or b"x" * n)  # never ends, like /dev/zero
    with pytest.raises(UsageError, match="grew past the 4 KiB limit"):
        user_files.read_bytes(path, user_files.KEY)


def test_cli_labels_fifo_and_cluster_device_are_one_line_exit_2(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    import cv2
    from _runtime_models import color_onnx, solid

    from edgeproof.cli.main import run_cli

    fifo = tmp_path / "labels.txt"
    os.mkfifo(fifo)
    model = color_onnx(tmp_path / "m.onnx")
    cv2.imwrite(str(tmp_path / "x.png"), solid("red"))
    rc = []
    assert _call(lambda p: rc.append(run_cli(["run", str(model), str(tmp_path / "x.png"), "--labels", str(p)])),
                 fifo) is None
    assert rc == [2]
    line = one_error_line(capsys.readouterr().err)
    assert "labels file" in line and "FIFO" in line and "not a regular file" in line, line
    base = ["train", "--data", str(tmp_path), "--epochs", "1", "-o", str(tmp_path / "r")]
    assert run_cli([*base, "--cluster", "/dev/null"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "--cluster '/dev/null'" in line and "character device" in line, line


def test_a_json_integer_past_pythons_digit_limit_is_a_user_file_error(tmp_path):
    """json.loads raises a bare ValueError (not JSONDecodeError) for an integer of over 4,300 digits."""
    from edgeproof.user_files import CLUSTER, UserFileError, read_json

    p = tmp_path / "cluster.json"
    p.write_text('{"workers": ' + "9" * 5000 + "}")
    with pytest.raises(UserFileError) as exc:
        read_json(p, CLUSTER, "--cluster")
    assert "--cluster" in str(exc.value) and "4300 digits" in str(exc.value) and "\n" not in str(exc.value)
