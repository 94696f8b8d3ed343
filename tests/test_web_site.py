"""`edgeproof export web` without a browser: what it refuses, the pinned runtimes' checks, the batch fix."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from edgeproof.errors import EdgeproofError, UsageError


@pytest.mark.slow
def test_batch_fix_changes_only_the_signature_and_not_the_answers(tiny_artifacts):
    from ai_edge_litert.interpreter import Interpreter

    from edgeproof.runtime.web.tflite_batch import fix_batch

    data = (tiny_artifacts / "model.tflite-fp32.tflite").read_bytes()
    fixed, n = fix_batch(data)
    assert n > 0 and len(fixed) == len(data)
    assert sum(a != b for a, b in zip(data, fixed)) == 4 * n  # one int32 per tensor, nothing else
    runs = []
    for blob in (data, fixed):
        it = Interpreter(model_content=blob)
        it.allocate_tensors()
        inp, out = it.get_input_details()[0], it.get_output_details()[0]
        runs.append((list(inp["shape_signature"]), inp))
        x = np.random.default_rng(0).uniform(0, 255, inp["shape"]).astype(np.float32)
        it.set_tensor(inp["index"], x)
        it.invoke()
        runs[-1] += (it.get_tensor(out["index"]),)
    assert runs[0][0][0] == -1 and runs[1][0][0] == 1 and runs[0][0][1:] == runs[1][0][1:]
    assert np.array_equal(runs[0][2], runs[1][2])


@pytest.mark.slow
def test_export_refuses_what_the_page_cannot_run(tiny_artifacts, tmp_path):
    from edgeproof.runtime.web.site import build, model_entry

    with pytest.raises(UsageError, match="int8 input, and LiteRT.js 2.5.3 tensors are float32, int32 or uint8 only"):
        model_entry(tiny_artifacts / "model.tflite-int8.tflite")
    with pytest.raises(UsageError, match="none of the artifacts"):
        build([tiny_artifacts / "model.tflite-int8.tflite"], tmp_path / "s", leave_out_unsupported=True)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="not an empty folder or an earlier"):
        build([tiny_artifacts / "model.onnx-fp32.onnx"], busy)
    assert (busy / "notes.txt").read_text() == "mine"
    bare = tmp_path / "model.onnx"
    shutil.copyfile(tiny_artifacts / "model.onnx-fp32.onnx", bare)
    import onnx

    m = onnx.load(str(bare))
    del m.metadata_props[:]
    onnx.save(m, str(bare))
    with pytest.raises(UsageError, match="carries no edgeproof metadata"):
        model_entry(bare)


@pytest.mark.slow
def test_entry_carries_the_contract_from_the_metadata(tiny_artifacts):
    from edgeproof.runtime.metadata import read_metadata
    from edgeproof.runtime.web.site import model_entry

    path = tiny_artifacts / "model.edgetpu.tflite"
    meta, entry = read_metadata(path), model_entry(path)
    assert entry["labels"] == meta.labels and entry["preprocess"] == meta.preprocess.to_dict()
    assert entry["input"]["dtype"] == "uint8" and entry["input"]["scale"] == meta.input.scale
    assert entry["runtime"] == "litertjs" and json.dumps(entry)


def test_a_tarball_that_is_not_the_pinned_one_is_never_used(tmp_path, monkeypatch):
    from edgeproof.runtime.web import assets

    monkeypatch.setenv("EDGEPROOF_CACHE", str(tmp_path / "cache"))
    (tmp_path / assets.ORT_WEB.tarball_name).write_bytes(b"not the package")
    with pytest.raises(UsageError, match="no verified onnxruntime-web-1.31.1.tgz"):
        assets.tarball(assets.ORT_WEB, npm_cache=tmp_path, fetch=False)
    # npm that hands back another package's bytes: refused, and nothing is cached
    monkeypatch.setattr(assets, "_npm_pack", lambda pkg, cache: b"a rewritten tarball")
    with pytest.raises(EdgeproofError, match="does not match the pinned integrity"):
        assets.tarball(assets.ORT_WEB, npm_cache=tmp_path)
    assert not (tmp_path / "cache" / "web" / assets.ORT_WEB.tarball_name).exists()


def test_without_npm_the_fetch_fails_in_one_line_naming_what_to_do(tmp_path, monkeypatch):
    from edgeproof.runtime.web import assets

    monkeypatch.setenv("EDGEPROOF_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path))  # no npm on it
    with pytest.raises(EdgeproofError, match="no npm here .* 'npm pack onnxruntime-web@1.31.1'"):
        assets.tarball(assets.ORT_WEB)


def test_a_missing_npm_cache_folder_is_refused_not_silently_skipped(tmp_path, capsys):
    """A typo in --npm-cache used to be ignored: the export went on to the registry (or failed offline naming
    the edgeproof cache), never saying the folder given does not exist."""
    from edgeproof.cli.main import run_cli

    model = tmp_path / "model.onnx-fp32.onnx"
    model.write_bytes(b"\x08\x07")
    assert run_cli(["export", "web", str(model), "-o", str(tmp_path / "site"),
                    "--npm-cache", str(tmp_path / "tarbals")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--npm-cache" in err and "tarbals" in err and "not a folder" in err
    assert not (tmp_path / "site").exists()


def test_serve_web_mounts_an_exported_site_publicly_and_nothing_else(tmp_path):
    pytest.importorskip("starlette", reason="needs edgeproof[serve]")
    pytest.importorskip("onnx", reason="the test model is built with onnx")
    import httpx
    from _serve_helpers import KEY, colour_model, running

    model = colour_model(tmp_path / "colour.onnx")
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<!doctype html><title>site</title>")
    (site / "models.json").write_text("[]")
    key = tmp_path / "key.txt"
    key.write_text(KEY)
    with running(model, "--api-key-file", str(key), "--web", str(site)) as s:
        assert httpx.get(f"{s.url}/web/").text.startswith("<!doctype html>")  # public, like the page
        assert httpx.head(f"{s.url}/web/models.json").status_code == 200
        assert httpx.get(f"{s.url}/web", follow_redirects=False).headers["location"] == "/web/"
        outside = httpx.get(f"{s.url}/web/%2e%2e/key.txt")  # the site's parent holds the key
        assert outside.status_code == 404 and KEY not in outside.text
        assert httpx.get(f"{s.url}/webx").status_code == 401  # the rest still needs the key
        assert 'id="weblink"' in httpx.get(f"{s.url}/").text
    from edgeproof.cli.main import run_cli

    assert run_cli(["serve", str(model), "--web", str(tmp_path)]) == 2  # no models.json: one line, exit 2
