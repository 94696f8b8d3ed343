"""Honest promotion: a fix keeps its own format's name, and a much slower fix is never promoted silently.

Issue 22: the demo's promoted 'tflite-int8' file was int16x8 (16.5 ms p50 against 0.25 ms for int8), and nothing
said so. Constructed rows and files: no model is trained or converted here.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edgeproof.convert.quant_search import Candidate
from edgeproof.formats import FORMATS
from edgeproof.parity import fix_ladder, promote, runner


def _fix(status="pass", ratio=1.0, real="tflite-int8", variant="calibration: x", path=Path("f")):
    return SimpleNamespace(status=status, latency_ratio=ratio, rejected=None, real_format=real, variant=variant,
                           path=path, edgetpu_full=False, recipe={"converter": "x"},
                           side_by_side_ms={"before": 0.25, "after": 0.25 * ratio})


def test_a_much_slower_fix_is_rejected_unless_fidelity_is_preferred(monkeypatch):
    monkeypatch.setattr(promote, "side_by_side_ms", lambda before, after, backend, x_of: (0.25, 16.5))
    for prefer, taken in (("balanced", False), ("speed", False), ("fidelity", True)):
        fixed = SimpleNamespace(path=Path("v"), rejected=None)
        why = promote.acceptor(prefer, Path("a"), "litert", None)(fixed)
        assert (why is None) == taken, prefer
        assert fixed.latency_ratio == pytest.approx(66.0)
        if not taken:
            assert "66.0x slower" in why and "16.5 vs 0.25 ms" in why and "side by side" in why
    fixed = SimpleNamespace(path=Path("v"), rejected=None)
    monkeypatch.setattr(promote, "side_by_side_ms", lambda *a: (0.25, 0.45))  # 1.8x: within the limit
    assert promote.acceptor("speed", Path("a"), "litert", None)(fixed) is None


def test_choose_follows_prefer():
    slow = _fix(ratio=66.0)
    slow.rejected = "66.0x slower"
    fast = _fix(ratio=1.1)
    assert promote.choose([_fix("fail"), slow, fast], "balanced") == (fast, None)
    slow.rejected = "66.0x slower"
    assert promote.choose([_fix("fail"), slow], "speed") == (None, None)
    taken, note = promote.choose([_fix("fail"), slow], "balanced")  # nothing faster passed: taken, and said
    assert taken is slow and "66.0x slower" in note and "--prefer speed keeps" in note
    assert promote.choose([_fix("fail")], "balanced") == (None, None)


def test_the_ladder_goes_on_past_a_rejected_fix(tmp_path, monkeypatch):
    def variant(name, real=None):
        def build(calib, dest: Path) -> Path:
            dest.mkdir(parents=True, exist_ok=True)
            (dest / name).write_bytes(name.encode())
            return dest / name
        return fix_ladder.Variant(name, Candidate(name, {}, build), False, real_format=real)

    monkeypatch.setattr(fix_ladder, "_write_with_meta", lambda built, dest, src, v: shutil.copyfile(built, dest))
    judged = []

    def judge(dest, fmt):
        judged.append((dest.name, fmt.name))
        return runner.Row(dest.name, dest, fmt.name, "litert", "pass")

    row = SimpleNamespace(backend="litert", path=tmp_path / "model.tflite-int8.tflite", latency_p50_ms=0.25)
    rows = fix_ladder.run_ladder(row, FORMATS["tflite-int8"], iter([variant("int16x8", "tflite-int16x8"),
                                                                     variant("float layers")]),
                                 np.zeros((1, 2)), None, None, None, tmp_path, judge=judge,
                                 accept=lambda r: "66.0x slower" if r.step == "int16x8" else None)
    # the int16x8 file is named, and judged, as tflite-int16x8; the next rung is tried and taken
    assert judged == [("model-fix-1-int16x8.tflite-int16x8.tflite", "tflite-int16x8"),
                      ("model-fix-2-float-layers.tflite-int8.tflite", "tflite-int8")]
    assert [(r.step, r.real_format, r.rejected) for r in rows] == [("int16x8", "tflite-int16x8", "66.0x slower"),
                                                                   ("float layers", "tflite-int8", None)]


def test_variant_files_never_claim_another_format(tmp_path):
    c = Candidate("x", {}, lambda x, d: d)
    assert fix_ladder.variant_path(tmp_path, FORMATS["tflite-int8"], 3, fix_ladder.Variant(
        "int16x8", c, False, real_format="tflite-int16x8")).name == "model-fix-3-int16x8.tflite-int16x8.tflite"
    onnx16 = fix_ladder.variant_path(tmp_path, FORMATS["onnx-int8"], 4, fix_ladder.Variant(
        "int16x8", c, False, real_format=fix_ladder.NO_FORMAT))
    assert onnx16.name == "model-fix-4-int16x8.onnx"  # no format in the table is ONNX int16
    from edgeproof.formats import format_of

    assert format_of(onnx16) is None


def _artifacts(tmp_path: Path) -> Path:
    from edgeproof.convert.manifest import ArtifactResult, Manifest
    from edgeproof.runtime.integrity import sha256_file

    art = tmp_path / "art"
    art.mkdir()
    m = Manifest(out_dir=art)
    for name in ("tflite-int8", "tflite-int16x8"):
        p = art / f"model.{name}.tflite"
        p.write_bytes(f"original {name}".encode())
        m.put(ArtifactResult(format=name, path=p, status="ok", sha256=sha256_file(p), bytes=p.stat().st_size))
    m.write()
    return art


def test_an_int16x8_fix_of_int8_is_promoted_as_tflite_int16x8_and_the_int8_file_moves_aside(tmp_path):
    art = _artifacts(tmp_path)
    fixed = tmp_path / "fixed" / "model-fix-3-int16x8.tflite-int16x8.tflite"
    fixed.parent.mkdir()
    fixed.write_bytes(b"the int16x8 fix")
    fix = _fix(ratio=66.0, real="tflite-int16x8", variant="int16x8: tflite-converter int16x8", path=fixed)
    fix.rejected = "66.0x slower"
    old_rows = [runner.Row("model.tflite-int8.tflite", art / "model.tflite-int8.tflite", "tflite-int8", b, "fail",
                           failures=["x"]) for b in ("litert", "openvino")]
    old16 = runner.Row("model.tflite-int16x8.tflite", art / "model.tflite-int16x8.tflite", "tflite-int16x8", "litert",
                       "pass")
    report = SimpleNamespace(rows=[*old_rows, old16], triage=[SimpleNamespace(
        format="tflite-int8", artifact="model.tflite-int8.tflite", fixes=[_fix("fail"), fix])])
    reran = []

    def rerun(items):
        reran.extend(items)
        return [runner.Row(p.name, p, f.name, "litert", "pass") for p, f in items]

    assert promote.promote_passing(report, art, rerun, "speed") == []  # speed: the failing int8 file stays
    assert (art / "model.tflite-int8.tflite").read_bytes() == b"original tflite-int8"
    done = promote.promote_passing(report, art, rerun, "balanced")
    assert len(done) == 1 and done[0]["format"] == "tflite-int16x8" and done[0]["replaces"] == "tflite-int8"
    assert "66.0x slower" in done[0]["note"]
    assert not (art / "model.tflite-int8.tflite").exists()  # no int8-named file holds int16x8 tensors
    assert (art / "model.tflite-int16x8.tflite").read_bytes() == b"the int16x8 fix"
    assert [p.read_bytes() for p in art.glob("model.tflite-int8.tflite.replaced-*")] == [b"original tflite-int8"]
    assert [p.read_bytes() for p in art.glob("model.tflite-int16x8.tflite.replaced-*")] == [b"original tflite-int16x8"]
    entries = json.loads((art / "manifest.json").read_text())["artifacts"]
    assert entries["tflite-int8"]["status"] == "replaced"
    assert entries["tflite-int8"]["options"]["replaced_by"] == "tflite-int16x8"
    assert entries["tflite-int16x8"]["status"] == "ok"
    assert reran == [(art / "model.tflite-int16x8.tflite", FORMATS["tflite-int16x8"])]
    assert [(r.artifact, r.status) for r in report.rows] == [
        ("model.tflite-int8.tflite", "replaced"), ("model.tflite-int8.tflite", "replaced"),
        ("model.tflite-int16x8.tflite", "pass")]
    assert all(not r.failures for r in report.rows)
    assert "16.5 ms vs 0.25 ms, 66.0x" in report.rows[0].reason


def test_an_onnx_int16_fix_is_never_promoted(tmp_path, caplog):
    fix = _fix(real=fix_ladder.NO_FORMAT, variant="int16x8: MinMax", path=tmp_path / "model-fix-3-int16x8.onnx")
    report = SimpleNamespace(rows=[], triage=[SimpleNamespace(format="onnx-int8", artifact="model.onnx-int8.onnx",
                                                              fixes=[fix])])
    with caplog.at_level("WARNING", logger="edgeproof.parity.promote"):
        assert promote.promote_passing(report, tmp_path, lambda items: [], "fidelity") == []
    assert "no format in the table" in caplog.text
