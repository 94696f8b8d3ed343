"""Labels and file names are data, never terminal commands or rich markup (issue 17, item 7)."""

from __future__ import annotations

import pytest

from edgeproof.cli.main import run_cli
from edgeproof.text import printable

cv2 = pytest.importorskip("cv2")
pytest.importorskip("onnxruntime")

from _runtime_models import color_onnx, solid

HOSTILE = ["\x1b[2Jred", "\x1b]0;pwned\x07green", "blue\x1b]52;c;ZWNobyBwd25lZA==\x07\nFAKE.jpg dog 0.999"]


def test_printable_escapes_every_control_character():
    assert printable("a\x1b[2Jb") == "a\\e[2Jb"
    assert printable("x\ny\tz\r") == "x\\ny\\tz\\r"
    assert printable("\x07\x00\x7f\x9b") == "\\x07\\x00\\x7f\\x9b"
    assert printable("abc\u202edcba") == "abc\\u202edcba"  # a bidi override reorders what is shown
    assert printable("chat 猫 👨\u200d👩") == "chat 猫 👨\u200d👩"  # text and emoji joiners are kept
    assert printable(3.5) == "3.5"


def _no_controls(text: str) -> None:
    assert "\x1b" not in text and "\x07" not in text, repr(text)


@pytest.fixture
def hostile(tmp_path):
    model = color_onnx(tmp_path / "m.onnx", labels=HOSTILE)
    folder = tmp_path / "in[/]x"
    folder.mkdir(parents=True)  # "in[" / "]x": the path reads in[/]x
    cv2.imwrite(str(folder / "a\x1b]0;title\x07.png"), solid("blue"))
    return model, folder


def test_run_text_output_escapes_labels_and_file_names(hostile, capsys):
    model, folder = hostile
    assert run_cli(["run", str(model), str(folder)]) == 0
    out, err = capsys.readouterr()
    _no_controls(out + err)
    rows = out.strip().splitlines()
    assert len(rows) == 2 and "FAKE.jpg" in rows[1]  # the forged row stays inside the real one
    assert "blue\\e]52;c;" in rows[1] and "\\nFAKE.jpg" in rows[1] and "a\\e]0;title\\x07.png" in rows[1]


def test_inspect_escapes_labels(hostile, capsys):
    model, _ = hostile
    assert run_cli(["inspect", str(model), "--no-load"]) == 0
    out = capsys.readouterr().out
    _no_controls(out)
    assert "\\e[2Jred" in out and not any(line.startswith("FAKE") for line in out.splitlines())


def test_run_save_warning_about_a_folder_with_brackets_does_not_crash(hostile, capsys):
    model, folder = hostile
    assert run_cli(["run", str(model), str(folder), "--save", str(folder)]) == 0
    assert run_cli(["run", str(model), str(folder), "--save", str(folder)]) == 0  # warns about the earlier output
    err = capsys.readouterr().err
    assert "left out 1 annotated output(s)" in err and "in[/]x" in err
    _no_controls(err)


def test_console_helpers_show_markup_and_controls_literally(capsys):
    from edgeproof.cli import console

    console.warn("folder 'a[/]b' and [red]c[/red] \x1b[2J")
    console.info("info [bold]x")
    console.error_line("bad 'p\nq'")
    console.table("t [/]", ["col [x]"], [["cell\x1b]0;t\x07 [/]"]])
    out, err = capsys.readouterr()
    assert "folder 'a[/]b' and [red]c[/red] \\e[2J" in err and "info [bold]x" in err
    assert "edgeproof: error: bad 'p\\nq'" in err
    assert "cell\\e]0;t\\x07 [/]" in out and "col [x]" in out and "t [/]" in out
    _no_controls(out + err)
