"""`edgeproof devices list | show | detect` (in-process through the real CLI parser)."""

from __future__ import annotations

import json
import platform

import pytest

from edgeproof.cli.main import run_cli
from edgeproof.devices import profile_names
from edgeproof.devices.probe import normalize_machine


def test_list_json_has_every_profile(capsys):
    assert run_cli(["devices", "list", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [d["name"] for d in data] == profile_names()
    coral = next(d for d in data if d["name"] == "coral")
    assert coral["delegates"] == ["libedgetpu.so.1"] and coral["accelerator"] == "libedgetpu.so.1"


def test_list_table_and_bare_devices(capsys):
    assert run_cli(["devices", "list"]) == 0
    out = capsys.readouterr().out
    assert "rpi5" in out and "jetson" in out and "OpenVINO GPU" in out
    assert run_cli(["devices"]) == 0  # no action: the list
    assert "generic-x86_64" in capsys.readouterr().out


def test_show_prints_install_limits_and_host_check(capsys):
    assert run_cli(["devices", "show", "coral"]) == 0
    out = capsys.readouterr().out
    assert "libedgetpu1-std" in out and "known limits" in out and "this host:" in out
    assert "delegate libedgetpu.so.1" in out


def test_show_json(capsys):
    assert run_cli(["devices", "show", "jetson", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["providers"][0] == "TensorrtExecutionProvider"
    assert isinstance(data["host_ready"], bool) and data["host_check"]
    assert all({"ok", "message"} <= set(c) for c in data["host_check"])


def test_show_unknown_is_exit_2_one_line(capsys):
    assert run_cli(["devices", "show", "pi6"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown device 'pi6'" in err[0] and "rpi5" in err[0]


def test_detect_names_this_hosts_profile_with_reasons(capsys):
    assert run_cli(["devices", "detect"]) == 0
    lines = capsys.readouterr().out.splitlines()
    name = lines[0].strip()
    assert name in profile_names()
    assert any(line.strip().startswith("- chose") for line in lines)
    assert run_cli(["devices", "detect", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["profile"] == name and data["reasons"] and data["facts"]["machine"]
    assert normalize_machine(platform.machine()) in data["detail"]["arch"]


@pytest.mark.skipif(normalize_machine(platform.machine()) != "x86_64", reason="x86_64 host only")
def test_detect_on_x86_names_an_x86_profile(capsys):
    assert run_cli(["devices", "detect", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    if data["facts"]["edgetpu_loadable"]:
        assert data["profile"] == "coral"
    else:
        assert data["profile"] in ("generic-x86_64", "intel", "intel-gpu", "intel-npu")
