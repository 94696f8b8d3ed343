"""Emulated targets (edgeproof.targets): a Raspberry Pi 5's aarch64 userland under qemu-user.

The emulated test builds the rpi5 sysroot once into the user's cache folder (XDG_CACHE_HOME or ~/.cache:
kept between runs, unlike the tests' own cache), then checks what a user would: the parity table gains
aarch64 rows judged by the same gate, fp32 rows equal the host's within the fp32 tolerance, and
`run --target` prints the same top-1 as the host. Skipped, with the reason, where qemu-user cannot run.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from edgeproof.cli.main import run_cli


def _user_cache() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "edgeproof"


def test_targets_list_names_the_boards_and_their_cpus(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEPROOF_CACHE", str(tmp_path))
    assert run_cli(["targets", "list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["rpi5"]["cpu"] == "cortex-a76" and rows["rpi4"]["cpu"] == "cortex-a72"
    assert "generic-aarch64" in rows
    assert rows["rpi5"]["state"].startswith("not built")
    assert rows["rpi4-bullseye"]["state"].startswith("not supported") and "3.9" in rows["rpi4-bullseye"]["unsupported"]


@pytest.mark.parametrize("argv, needle", [
    (["targets", "build", "rpi4-bullseye"], "Python is 3.9"),
    (["targets", "show", "rpi4-bullseye"], "Python is 3.9"),
    (["targets", "show", "rpi5"], "edgeproof targets build rpi5"),
    (["targets", "build", "rpi9"], "valid targets: rpi5"),
    (["bench", "m.tflite", "--target", "rpi5"], "not the board's speed"),
    (["run", "m.tflite", "img.png", "--target", "rpi5"], "edgeproof targets build rpi5"),
])
def test_target_refusals_are_one_line_and_exit_2(argv, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEPROOF_CACHE", str(tmp_path))  # nothing built here
    assert run_cli(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


def _emulated_rpi5(monkeypatch):
    """The rpi5 sysroot in the user's cache (built on first use), or a skip naming why qemu cannot run."""
    from edgeproof.targets.sysroot import emulation_problem, open_target

    problem = emulation_problem()
    if problem:
        pytest.skip(f"emulated aarch64 target not tested: {problem}")
    monkeypatch.setenv("EDGEPROOF_CACHE", str(_user_cache()))
    if not (_user_cache() / "targets" / "rpi5" / "target.json").is_file():
        from edgeproof.targets.build import build_target

        t = time.perf_counter()
        build_target("rpi5")
        print(f"built rpi5 in {time.perf_counter() - t:.0f} s")
    return open_target("rpi5")


@pytest.mark.slow
@pytest.mark.emulated
def test_parity_and_run_on_an_emulated_rpi5(tiny_run, tiny_artifacts, monkeypatch, capfd):
    from edgeproof.formats import FORMATS
    from edgeproof.parity import run_parity

    sysroot = _emulated_rpi5(monkeypatch)
    assert sysroot.manifest["probe"]["machine"] == "aarch64"
    assert "asimddp" in sysroot.manifest["probe"]["hwcaps"]  # the A76's dot product, which XNNPACK's int8 uses
    rep = run_parity(tiny_run, artifacts_dir=tiny_artifacts, backends=["litert", "onnxruntime"], triage=False,
                     e2e=False, write=False, target="rpi5")
    host = {(r.format, r.backend): r for r in rep.rows if r.target is None}
    pi = {r.format: r for r in rep.rows if r.backend.endswith("@rpi5")}
    for fmt in ("tflite-fp32", "tflite-fp16", "tflite-int8", "onnx-fp32", "onnx-int8"):
        r = pi[fmt]
        assert r.comparison is not None, (fmt, r.status, r.reason)  # it ran on aarch64 and the gate judged it
        assert r.status == host[(fmt, r.backend.split("@")[0])].status, (fmt, r.reason)
        assert r.vs_host is not None and r.vs_host["n"] == rep.n_images
    for fmt in ("tflite-fp32", "onnx-fp32"):  # float kernels: the x86 and aarch64 results agree to fp32 precision
        assert pi[fmt].vs_host["max_abs"] <= FORMATS[fmt].tolerance.max_abs, pi[fmt].vs_host
    d = rep.to_dict()["results"]
    assert any(x["backend"] == "litert@rpi5" and x["vs_host"] is not None for x in d)
    assert all(r.latency_p50_ms is None for r in pi.values())  # no emulated timings in the table

    int8 = next(tiny_artifacts.glob("*.tflite-int8.tflite"))
    folder = Path(json.loads((tiny_run / "split.json").read_text())["splits"]["test"][0][0]).parent.parent
    capfd.readouterr()  # the emulated process writes to the file descriptors: capfd, not capsys
    assert run_cli(["run", str(int8), str(folder), "--json", "--top-k", "1"]) == 0
    on_host = [json.loads(x) for x in capfd.readouterr().out.splitlines()]
    assert run_cli(["run", str(int8), str(folder), "--json", "--top-k", "1", "--target", "rpi5"]) == 0
    on_pi = capfd.readouterr()
    assert "not the board's speed" in on_pi.err
    on_pi = [json.loads(x) for x in on_pi.out.splitlines()]
    assert len(on_pi) == len(on_host) > 2
    top1 = lambda lines: [(x["input"], x["top_k"][0]["label"]) for x in lines if "top_k" in x]
    assert top1(on_pi) == top1(on_host)
    assert on_pi[-1]["summary"]["count"] == on_host[-1]["summary"]["count"] == len(top1(on_host))


@pytest.mark.slow
def test_a_wheel_missing_from_the_target_makes_its_rows_unsupported(tiny_artifacts, tmp_path):
    """A target built without onnxruntime (no aarch64 wheel for its Python): the ONNX rows say so, nothing runs."""
    import numpy as np

    from edgeproof.parity.runner import Batches, Images, find_artifacts
    from edgeproof.parity.target_rows import target_rows
    from edgeproof.targets.catalog import get_target
    from edgeproof.targets.sysroot import Sysroot

    why = "no aarch64 wheel of onnxruntime for CPython 3.11 (manylinux, glibc 2.36)"
    sysroot = Sysroot(get_target("rpi5"), tmp_path, {"backends": ["litert", "opencv"], "missing": {"onnxruntime": why}})
    rows = target_rows(sysroot, find_artifacts(tiny_artifacts), Batches(Images([], None, "none")),
                       np.zeros((0, 3), np.float32), ["onnxruntime"], {}, [])
    assert sorted(r.format for r in rows) == ["onnx-fp32", "onnx-int8"]
    assert all(r.status == "unsupported" and r.backend == "onnxruntime@rpi5" and why in r.reason for r in rows)
