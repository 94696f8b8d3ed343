"""Packaging and CLI skeleton: import names, the TF-free runtime, exit codes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from edgeproof.cli.main import SUBCOMMANDS, run_cli


def test_runtime_import_never_imports_tensorflow():
    code = (
        "import sys, edgeproof.runtime, edgeproof.formats, edgeproof.contract, edgeproof.runtime.metadata;"
        "import edgeproof.cli.main as m; m.build_parser();"
        "bad = [k for k in sys.modules if k.split('.')[0] in ('tensorflow', 'keras', 'tf2onnx')];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_bare_top_level_names_are_not_installed():
    code = (
        "import importlib.util, sys, os; sys.path = [p for p in sys.path if p not in ('', os.getcwd())];"
        "bad = [n for n in ('train', 'convert', 'runtime', 'devices', 'parity') if importlib.util.find_spec(n)];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd="/")


def test_version_flag(capsys):
    with pytest.raises(SystemExit) as exc:
        run_cli(["--version"])
    assert exc.value.code == 0
    assert "edgeproof" in capsys.readouterr().out


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        run_cli([command, "--help"])
    assert exc.value.code == 0
    assert "usage" in capsys.readouterr().out


def test_unknown_subcommand_exits_2():
    with pytest.raises(SystemExit) as exc:
        run_cli(["frobnicate"])
    assert exc.value.code == 2


def test_python_dash_m_entry_point():
    out = subprocess.run([sys.executable, "-m", "edgeproof", "version", "--json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert '"edgeproof"' in out.stdout
