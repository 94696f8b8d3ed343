"""parity's bad input is refused before any work, in one line, exit 2, leaving nothing behind: NaN/inf or
out-of-range tolerance overrides (a NaN limit would fail every artifact, `not x <= nan`, after minutes of
work), flags that would be ignored, a folder that is not a run."""

from __future__ import annotations

import pytest

from edgeproof.cli.main import run_cli
from edgeproof.errors import UsageError
from edgeproof.parity.session import run_parity


@pytest.mark.parametrize("flag,value", [("--max-abs", "nan"), ("--max-abs", "inf"), ("--max-delta-acc", "nan"),
                                        ("--min-snr", "nan"), ("--min-snr", "inf"), ("--min-snr", "-inf"),
                                        ("--min-snr", "twelve"), ("--max-abs", "-1"), ("--min-snr", "-5")])
def test_non_finite_or_negative_limits_exit_2_in_one_line(flag, value, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:  # refused while parsing: the run folder is never read
        run_cli(["parity", str(tmp_path / "no-run"), f"{flag}={value}"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert flag in err and value in err and "Traceback" not in err


@pytest.mark.parametrize("flags", [{"max_abs": float("nan")}, {"min_snr": float("inf")}, {"min_agreement": 1.5},
                                   {"max_delta_acc": -2.0}, {"min_snr_db": 12.0}, {"max_abs": "0.1"},
                                   {"min_snr": -5.0}])
def test_library_refuses_bad_overrides_before_reading_the_run(flags, tmp_path):
    with pytest.raises(UsageError) as exc:  # the run folder does not exist: the flags are checked first
        run_parity(tmp_path / "no-run", tol_flags=flags, write=False)
    assert next(iter(flags)) in str(exc.value)


def test_library_accepts_in_range_overrides(tmp_path):
    with pytest.raises(UsageError) as exc:  # gets past the flags to the missing run folder
        run_parity(tmp_path / "no-run", tol_flags={"max_abs": 0.0, "min_agreement": 1.0, "min_snr": 0.0,
                                                   "max_delta_acc": None, "strict_ties": True}, write=False)
    assert "does not exist" in str(exc.value)


def test_wide_with_json_is_refused_not_ignored(tmp_path, capsys):
    assert run_cli(["parity", str(tmp_path / "no-run"), "--wide", "--json"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--wide" in err and "--json" in err


def test_a_refused_parity_leaves_no_report_folder_in_a_folder_that_is_not_a_run(tmp_path, capsys):
    """`parity photos/` (not a run folder) used to leave photos/parity/library-output.log behind, which a later
    `--data photos` then read as a class folder named 'parity'."""
    photos = tmp_path / "photos"
    photos.mkdir()
    assert run_cli(["parity", str(photos)]) == 2
    assert "not a complete edgeproof run folder" in capsys.readouterr().err
    assert list(photos.iterdir()) == []
    assert run_cli(["parity", str(photos), "-o", str(tmp_path / "new" / "rep")]) == 2
    assert not (tmp_path / "new").exists()
    kept = tmp_path / "old-rep"
    kept.mkdir()
    (kept / "library-output.log").write_text("an earlier run's output\n")
    assert run_cli(["parity", str(photos), "-o", str(kept)]) == 2
    assert (kept / "library-output.log").read_text() == "an earlier run's output\n"


@pytest.mark.parametrize("value", ["", ",,", " , "])
def test_a_backends_list_naming_no_backend_is_refused(value, tmp_path, capsys):
    """`--backends ,,` judged no artifact at all and exited 0; `--backends ''` silently meant every backend."""
    assert run_cli(["parity", str(tmp_path / "no-run"), f"--backends={value}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "names no backend" in err and "onnxruntime" in err


def test_prefer_without_fix_is_refused_not_ignored(tmp_path, capsys):
    assert run_cli(["parity", str(tmp_path / "no-run"), "--prefer", "speed"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--prefer speed" in err and "--fix" in err

