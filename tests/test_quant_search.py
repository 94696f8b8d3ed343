"""The int8 recipe search: judged on held-out calibration images, recorded in the manifest and the artifact."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgeproof.convert import quant_search as qs


def _fake(monkeypatch, outputs: dict[str, np.ndarray]):
    """Candidates write their name into the file; predict_file returns the probabilities kept for that name."""
    seen = []

    def predict(path: Path, x: np.ndarray) -> np.ndarray:
        seen.append(len(x))
        return outputs[path.read_text()][: len(x)]

    monkeypatch.setattr(qs, "predict_file", predict)

    def cand(name: str, fail: bool = False) -> qs.Candidate:
        def build(x: np.ndarray, dest: Path) -> Path:
            if fail:
                raise RuntimeError("converter exploded")
            dest.write_text(name)
            return dest

        return qs.Candidate(name, {"name": name}, build)

    return cand, seen


def test_search_picks_the_most_faithful_on_held_out_images_and_keeps_going_past_failures(monkeypatch, tmp_path):
    ref = np.eye(3)[np.arange(40) % 3] * 0.9 + 0.05
    noisy = ref + np.random.default_rng(0).normal(0, 0.02, ref.shape)
    wrong = ref[:, ::-1]
    cand, seen = _fake(monkeypatch, {"default": noisy, "better": ref + 1e-4, "wrong": wrong})
    calib = np.zeros((50, 4, 4, 3), np.float32)
    refs_asked = []

    def reference(x):
        refs_asked.append(len(x))
        return ref[: len(x)]

    chosen, path, res = qs.search([cand("default"), cand("broken", fail=True), cand("wrong"), cand("better")],
                                  calib, reference, tmp_path)
    assert chosen.name == "better" and path.read_text() == "better"
    assert res.held_out == 10 and res.fit == 40 and refs_asked == [10] and set(seen) == {10}
    by_name = {t.name: t for t in res.trials}
    assert by_name["broken"].error.startswith("RuntimeError") and by_name["wrong"].agree < by_name["better"].agree
    rec = res.record()
    assert rec["recipe"] == "better" and "never the parity test set" in rec["search"]["judged_on"]
    assert "better" in res.line() and "broken failed" in res.line()


def test_ties_keep_the_table_default_and_few_images_skip_the_search(monkeypatch, tmp_path):
    ref = np.eye(3)[np.arange(40) % 3]
    cand, _ = _fake(monkeypatch, {"default": ref, "other": ref})
    chosen, _, _ = qs.search([cand("default"), cand("other")], np.zeros((30, 2, 2, 3), np.float32),
                             lambda x: ref[: len(x)], tmp_path / "a")
    assert chosen.name == "default"
    chosen, _, res = qs.search([cand("default"), cand("other")], np.zeros((qs.MIN_FOR_SEARCH - 1, 2, 2, 3)),
                               lambda x: ref[: len(x)], tmp_path / "b")
    assert chosen.name == "default" and len(res.trials) == 1 and "no search" in res.note


def test_every_candidate_is_built_before_any_is_run(monkeypatch, tmp_path):
    """A calibration's memory (onnxruntime keeps every intermediate tensor) never sits on top of the scoring's
    runtimes: the builds come first, then the runs."""
    ref = np.eye(3)[np.arange(40) % 3]
    events: list[str] = []
    cand, _ = _fake(monkeypatch, {"a": ref, "b": ref, "c": ref})
    run = qs.predict_file
    monkeypatch.setattr(qs, "predict_file", lambda path, x: events.append(f"run {path.read_text()}") or run(path, x))

    def logged(name: str) -> qs.Candidate:
        c = cand(name)
        return qs.Candidate(c.name, c.options, lambda x, dest: events.append(f"build {name}") or c.build(x, dest))

    qs.search([logged("a"), logged("b"), logged("c")], np.zeros((30, 2, 2, 3), np.float32), lambda x: ref[: len(x)],
              tmp_path)
    assert events == ["build a", "build b", "build c", "run a", "run b", "run c"]


def test_held_out_split_is_every_fifth_image():
    calib = np.arange(20)[:, None]
    fit, held = qs.split(calib)
    assert held[:, 0].tolist() == [4, 9, 14, 19] and len(fit) == 16


@pytest.mark.slow
def test_converted_int8_artifacts_record_the_chosen_recipe(tiny_artifacts):
    from edgeproof.runtime.metadata import read_metadata

    manifest = json.loads((tiny_artifacts / "manifest.json").read_text())
    arts = manifest["artifacts"]
    arts = arts if isinstance(arts, dict) else {a["format"]: a for a in arts}
    for fmt, suffix in (("tflite-int8", ".tflite"), ("onnx-int8", ".onnx")):
        opts = arts[fmt]["options"]
        names = [t["name"] for t in opts["search"]["trials"]]
        assert len(names) >= 2 and opts["recipe"] in names, opts
        meta = read_metadata(tiny_artifacts / f"model.{fmt}{suffix}")
        assert meta.extra["options"]["recipe"] == opts["recipe"]
