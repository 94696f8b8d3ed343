"""`edgeproof export web` in a real headless Chromium: the page classifies a photo as `edgeproof run` does,
never leaves its origin, and works offline after the first visit; parity and bench with the browser backends.

Needs Chromium + chromedriver (Debian's chromium and chromium-driver; .ci/run installs them) and the pinned
npm tarballs of the runtimes ($EDGEPROOF_CACHE/web, fetched once with npm pack). Without a browser
the tests are skipped and say why. About 45 s on 2 cores (the artifacts come from the session fixture).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgeproof.runtime.web.browser import missing_browser

WHY = missing_browser()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(WHY is not None, reason=f"browser tests: {WHY}")]
PAGE_FORMATS = ("tflite-fp32", "tflite-int8", "edgetpu", "onnx-fp32", "onnx-int8")


def _photo(tmp: Path) -> Path:
    """scikit-image's cat photo (PNG: the browser and OpenCV decode the same pixels)."""
    skdata = pytest.importorskip("skimage.data", reason="the photo comes from scikit-image")
    import cv2

    path = tmp / "chelsea.png"
    cv2.imwrite(str(path), cv2.cvtColor(skdata.chelsea(), cv2.COLOR_RGB2BGR))
    return path


@pytest.fixture(scope="module", autouse=True)
def runtimes():
    """The pinned runtime tarballs in the cache (fetched once with npm pack); skipped, saying why,
    where they cannot be had."""
    from edgeproof.errors import EdgeproofError
    from edgeproof.runtime.web.assets import RUNTIME_PACKAGES, tarball

    for packages in RUNTIME_PACKAGES.values():
        for pkg in packages:
            try:
                tarball(pkg)
            except EdgeproofError as exc:
                pytest.skip(f"browser tests: {exc}")


@pytest.fixture(scope="module")
def site(tiny_artifacts, tmp_path_factory):
    from edgeproof.runtime.web.site import build

    arts = [tiny_artifacts / f"model.{f}{'.onnx' if f.startswith('onnx') else '.tflite'}" for f in PAGE_FORMATS]
    return build(arts, tmp_path_factory.mktemp("web") / "site", leave_out_unsupported=True)


def test_export_lists_what_it_carries_and_leaves_out_int8_io_for_litertjs(site):
    assert [m["format"] for m in site.models] == ["tflite-fp32", "edgetpu", "onnx-fp32", "onnx-int8"]
    assert [name for name, _ in site.left_out] == ["model.tflite-int8.tflite"]
    assert "int8 input" in site.left_out[0][1] and "LiteRT.js" in site.left_out[0][1]
    third = json.loads((site.folder / "runtime" / "THIRD_PARTY.json").read_text())
    assert {(r["name"], r["license"]) for r in third} == {("@litertjs/core", "Apache-2.0"),
                                                          ("@litertjs/wasm-utils", "Apache-2.0"),
                                                          ("onnxruntime-web", "MIT")}
    listed = json.loads((site.folder / "files.json").read_text())["files"]
    assert all((site.folder / f).is_file() for f in listed if f != "./")
    assert {"index.html", "sw.js", "manifest.webmanifest", "runtime/ort/ort-wasm-simd-threaded.wasm"} <= set(listed)


def test_page_classifies_a_photo_as_edgeproof_run_does(site, tiny_artifacts, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    from edgeproof.runtime import load
    from edgeproof.runtime.preprocess import load_image
    from edgeproof.runtime.web.browser import Page

    photo = _photo(tmp_path)
    page = Page(site.folder)
    try:
        for i, entry in enumerate(site.models):
            with load(tiny_artifacts / Path(entry["file"]).name) as m:  # what `edgeproof run` does
                want = m.predict(load_image(photo, m.preprocess)[None])[0]
                x_py = load_image(photo, m.preprocess)
            # the page's own decode + preprocessing: OpenCV's pixels exactly
            assert np.array_equal(page.preprocess(i, photo.read_bytes()), x_py), entry["file"]
            Select(page.driver.find_element(By.ID, "model")).select_by_index(i)
            WebDriverWait(page.driver, 30).until(lambda d: d.find_element(By.ID, "status").text.startswith("ready"))
            page.driver.execute_script("document.body.dataset.top1 = ''; document.getElementById('file').value = ''")
            page.driver.find_element(By.ID, "file").send_keys(str(photo))
            WebDriverWait(page.driver, 30).until(lambda d: d.execute_script("return document.body.dataset.top1"))
            got = np.array(page.driver.execute_script("return JSON.parse(document.body.dataset.scores)"), np.float32)
            top1 = page.driver.execute_script("return document.body.dataset.top1")
            assert top1 == m.labels[int(want.argmax())], entry["file"]
            if entry["format"].endswith("fp32"):
                assert np.abs(got - want).max() < 1e-4, (entry["file"], got, want)
            assert entry["runtime_version"] in page.driver.find_element(By.ID, "runtime").text
        assert "ms" in page.driver.find_element(By.ID, "timing").text
    finally:
        page.close()


def test_page_stays_on_its_origin_and_works_offline(site, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from edgeproof.runtime.web.browser import Page, StaticServer

    photo = _photo(tmp_path)
    page = Page(site.folder)
    try:
        page.call("await navigator.serviceWorker.ready; return true;")  # every file cached
        page.driver.find_element(By.ID, "file").send_keys(str(photo))
        WebDriverWait(page.driver, 30).until(lambda d: d.execute_script("return document.body.dataset.top1"))
        urls = page.requests()
        outside = [u for u in urls if not u.startswith((page.origin + "/", "blob:", "data:"))]
        assert urls and not outside, outside
        assert f"{page.origin}/runtime/ort/ort-wasm-simd-threaded.wasm" in urls or \
            f"{page.origin}/runtime/litertjs/litert_wasm_internal.wasm" in urls  # the runtime came from the site
        # the service worker (not in the page's log) caches files.json's list: relative paths only
        assert not [f for f in json.loads((site.folder / "files.json").read_text())["files"] if ":" in f or "//" in f]
        # the server goes away: the page still loads, from its service worker's cache, and classifies
        page.server.close()
        page.server = StaticServer(tmp_path)  # Page.close() closes it
        page.driver.refresh()
        page.call("await window.edgeproofReady; return true;")
        page.driver.find_element(By.ID, "file").send_keys(str(photo))
        WebDriverWait(page.driver, 30).until(lambda d: d.execute_script("return document.body.dataset.top1"))
        assert page.driver.execute_script("return document.getElementById('error').textContent") == ""
    finally:
        page.close()


def test_live_camera_frames_are_classified(site):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from edgeproof.runtime.web.browser import Page

    # Chromium's fake camera (a moving test pattern, 640x480) stands in for the phone's rear camera
    page = Page(site.folder, "index.html?driver", ("--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"))
    try:
        page.driver.find_element(By.ID, "camera").click()
        WebDriverWait(page.driver, 30).until(lambda d: "frames/s" in d.find_element(By.ID, "timing").text)
        assert page.driver.find_element(By.ID, "status").text.startswith("live camera")
        labels = site.models[0]["labels"]
        assert page.driver.execute_script("return document.body.dataset.top1") in labels
        page.driver.find_element(By.ID, "camera").click()  # stops it
        assert page.driver.execute_script("return document.getElementById('video').srcObject.active") is False
    finally:
        page.close()


def test_parity_in_the_browser_adds_judged_rows(tiny_run, tiny_artifacts, tmp_path):
    from edgeproof.parity.session import run_parity

    arts = tmp_path / "artifacts"
    arts.mkdir()
    for f in ("model.tflite-fp32.tflite", "model.tflite-int8.tflite", "model.onnx-fp32.onnx"):
        shutil.copyfile(tiny_artifacts / f, arts / f)
    rep = run_parity(tiny_run, artifacts_dir=arts, backends=["litert", "onnxruntime", "litertjs", "ort-web"],
                     triage=False, out_dir=tmp_path / "parity")
    rows = {(r.format, r.backend): r for r in rep.rows}
    assert rows["tflite-fp32", "litertjs"].status == "pass" and rows["onnx-fp32", "ort-web"].status == "pass"
    for key in (("tflite-fp32", "litertjs"), ("onnx-fp32", "ort-web")):  # the same gate as the native rows
        assert rows[key].comparison.tensor.max_abs < 1e-5
    int8 = rows["tflite-int8", "litertjs"]
    assert int8.status == "unsupported" and "int8 input" in int8.reason and "LiteRT.js 2.5.3" in int8.reason
    page = rep.e2e["page_preprocessing"]
    assert page["n"] == rep.n_images and page["pixels_identical_fraction"] == 1.0 and page["top1_changed"] == 0


def test_bench_in_the_browser_times_inside_the_page(tiny_artifacts):
    from edgeproof.bench.runner import BenchSpec, run_spec

    rec = run_spec(BenchSpec(model=str(tiny_artifacts / "model.onnx-fp32.onnx"), backend="ort-web", runs=20,
                             warmup=2))[0]
    assert rec["timed_in"].startswith("the page") and len(rec["samples_ms"]) == 20
    assert rec["versions"]["runtime"] == "onnxruntime-web 1.31.1" and rec["versions"]["browser"].startswith("Chromium")
    assert 0 <= rec["p50_ms"] <= rec["driver_p50_ms"]  # the driver's call includes the round trip into the page
