"""A crash is never an answer (issue 24, item 2): `run --backend litert-compiled` died with SIGSEGV on mutated
.tflite files. Three causes, one test each:
- the preflight silently passed a file the LiteRT Interpreter cannot even open, so CompiledModel saw it;
- the guarded trial's child is flaky on such files (exit 0, -11, -11 on three tries) and one lucky "ok" was
  cached for good;
- the trial compiled with other settings (num_threads=1, its own buffers) than the parent it vouches for.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from edgeproof.errors import InvalidModel

pytest.importorskip("ai_edge_litert")


@pytest.fixture(scope="module")
def tflite_fp32(tmp_path_factory) -> Path:
    pytest.importorskip("tensorflow", reason="builds its tiny models with edgeproof[train]")
    from _runtime_models import tiny_models

    return tiny_models().files["tflite-fp32"]


def _unknown_builtin_op(src: Path, dest: Path) -> Path:
    """Operator code 0 patched to builtin 250: every offset and index stays valid (the flatbuffer walk passes),
    but no interpreter has that op."""
    from edgeproof.runtime.model_check import FlatBuffer, check_tflite

    data = bytearray(src.read_bytes())
    fb = FlatBuffer(data)
    code = fb.tables(fb.table(0), 1)[0]
    struct.pack_into("<i", data, fb.field(code, 3), 250)
    dest.write_bytes(bytes(data))
    check_tflite(dest)  # structurally sound
    return dest


@pytest.mark.slow
def test_a_file_the_interpreter_cannot_open_is_refused_before_compiled_model_sees_it(tflite_fp32, tmp_path,
                                                                                      monkeypatch):
    from edgeproof.runtime import guard, load

    bad = _unknown_builtin_op(tflite_fp32, tmp_path / "op250.tflite")
    monkeypatch.setenv("EDGEPROOF_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(guard, "run_trial", lambda *a, **k: pytest.fail("CompiledModel's trial saw the file"))
    for backend in ("litert-compiled", "litert", "openvino"):
        with pytest.raises(InvalidModel, match=r"op250.tflite is not a valid TFLite model: the LiteRT interpreter "
                                               r"cannot open it \(ValueError: Op builtin_code out of range: 250"):
            load(bad, backend=backend)


def _flaky(tmp_path: Path, outcomes: list[str]) -> str:
    """Trial code whose n-th run does outcomes[n] ('ok', 'segv' or 'error'), counted in a file."""
    counter = tmp_path / "runs"
    counter.write_text("0")
    return (f"import os, signal, pathlib\np = pathlib.Path({str(counter)!r})\nn = int(p.read_text())\n"
            f"p.write_text(str(n + 1))\nwhat = {outcomes!r}[min(n, {len(outcomes) - 1})]\n"
            "if what == 'segv':\n    os.kill(os.getpid(), signal.SIGSEGV)\n"
            "if what == 'error':\n    raise ValueError('clean rejection')\n")


def _model(tmp_path: Path) -> Path:
    p = tmp_path / "m.tflite"
    p.write_bytes(b"any bytes: the trial code decides")
    return p


def test_one_lucky_ok_from_a_flaky_child_is_not_kept(tmp_path, monkeypatch):
    from edgeproof.runtime import guard

    monkeypatch.setenv("EDGEPROOF_CACHE", str(tmp_path / "cache"))
    trial = guard.Trial("flaky", "LiteRT CompiledModel", "1", _flaky(tmp_path, ["ok", "segv", "segv"]),
                        agree=guard.FLAKY_AGREE)
    with pytest.raises(InvalidModel, match=r"it crashed the LiteRT CompiledModel importer \(SIGSEGV\)"):
        guard.guarded_load(_model(tmp_path), trial, "tflite", None, None)
    kept = [json.loads(p.read_text()) for p in (tmp_path / "cache" / "trials").glob("flaky-*.json")]
    assert [k["verdict"] for k in kept] == ["crash"]  # the crash is kept, the lucky ok never was


def test_ok_is_kept_only_when_the_children_agree(tmp_path, monkeypatch):
    from edgeproof.runtime import guard

    monkeypatch.setenv("EDGEPROOF_CACHE", str(tmp_path / "cache"))
    trials = tmp_path / "cache" / "trials"
    flaky = guard.Trial("mixed", "X", "1", _flaky(tmp_path, ["ok", "error", "ok"]), agree=guard.FLAKY_AGREE)
    guard.guarded_load(_model(tmp_path), flaky, "tflite", None, None)  # no crash: the real load decides
    assert not list(trials.glob("mixed-*.json"))  # disagreement: nothing kept, the next load tries again
    steady = guard.Trial("steady", "X", "1", "pass", agree=guard.FLAKY_AGREE)
    guard.guarded_load(_model(tmp_path), steady, "tflite", None, None)
    assert [json.loads(p.read_text())["verdict"] for p in trials.glob("steady-*.json")] == ["ok"]


@pytest.mark.slow
def test_the_trial_child_runs_the_parents_own_load_with_its_options(tflite_fp32, tmp_path, monkeypatch):
    """The child's code, run here with the child's entry point recorded: it must build the backend with the
    parent's threads, accelerators and fallback, and call its load_unguarded and run (the parent's path)."""
    from edgeproof.runtime import guard, load
    from edgeproof.runtime.backends import litert_compiled, litert_compiled_trial

    monkeypatch.setenv("EDGEPROOF_CACHE", str(tmp_path / "cache"))
    seen: list = []
    calls: list[str] = []
    real_main = litert_compiled_trial.main

    def run_trial(code, args, **kw):
        monkeypatch.setattr(litert_compiled_trial, "main", lambda *a: (seen.append(a), real_main(*a)))
        monkeypatch.setattr("sys.argv", ["-c", *args])
        exec(code, {"__name__": "__trial__"})
        return {"verdict": "ok", "detail": None}

    for name in ("load_unguarded", "run"):
        real = getattr(litert_compiled.LiteRTCompiledBackend, name)
        monkeypatch.setattr(litert_compiled.LiteRTCompiledBackend, name,
                            lambda self, *a, _n=name, _r=real: (calls.append(_n), _r(self, *a))[1])
    monkeypatch.setattr(guard, "run_trial", run_trial)
    with load(tflite_fp32, backend="litert-compiled", threads=3) as m:
        assert m.predict(__import__("numpy").zeros((1, 32, 32, 3), "float32")).shape[0] == 1
    assert seen and seen[0][1:] == (3, ["CPU"], False), seen
    assert calls[:3] == ["load_unguarded", "run", "run"], calls  # the child: the parent's load, then 2 runs


@pytest.mark.slow
def test_serve_on_litert_compiled_refuses_such_a_file_in_one_line_and_serves_a_good_one(tflite_fp32, tmp_path):
    """serve loads through the same load(): the refusal is at start-up, exit 2, before any port is bound."""
    import os
    import subprocess

    from _serve_helpers import running, serve_cmd

    env = {**os.environ, "EDGEPROOF_CACHE": str(tmp_path / "cache")}
    bad = _unknown_builtin_op(tflite_fp32, tmp_path / "op250.tflite")
    proc = subprocess.run(serve_cmd(bad, "--backend", "litert-compiled"), capture_output=True, text=True, env=env,
                          timeout=120)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1, (proc.returncode, proc.stderr)
    assert "the LiteRT interpreter cannot open it" in lines[0], lines
    with running(tflite_fp32, "--backend", "litert-compiled", env={"EDGEPROOF_CACHE": str(tmp_path / "cache")}) as s:
        import urllib.request

        with urllib.request.urlopen(f"{s.url}/v1/model", timeout=30) as r:
            card = json.loads(r.read())
        assert card["backend"] == "litert-compiled" and card["ready"] is True, card
