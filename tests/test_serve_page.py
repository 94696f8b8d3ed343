"""The phone page in a real headless Chromium (Debian's chromium + chromium-driver, driven by Selenium).

Screenshots (desktop and phone size) are kept as test artifacts in $EDGEPROOF_TEST_ARTIFACTS (default
tests/.cache/artifacts/). Where no browser is installed the test is skipped and says why.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason="needs edgeproof[serve]")
pytest.importorskip("onnx", reason="the test models are built with onnx")
selenium = pytest.importorskip("selenium", reason="needs selenium (edgeproof[dev])")

from _serve_helpers import KEY, colour_model, png_bytes, running

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
DRIVER = shutil.which("chromedriver")
ARTIFACTS = Path(os.environ.get("EDGEPROOF_TEST_ARTIFACTS") or Path(__file__).parent / ".cache" / "artifacts")
PHONE = (390, 844)  # CSS pixels of a common phone

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER),
    reason=f"no headless browser here (chromium: {CHROMIUM or 'missing'}, chromedriver: {DRIVER or 'missing'}); "
           "install Debian's chromium and chromium-driver (.ci/run does: apt-get install -y chromium chromium-driver)")


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager fetch a browser or driver
    profile = tempfile.mkdtemp(prefix="edgeproof-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1000,1000"):
        opts.add_argument(arg)
    try:
        driver = webdriver.Chrome(options=opts, service=Service(executable_path=DRIVER))
    except Exception as exc:  # noqa: BLE001 - a browser that is installed but cannot start here
        shutil.rmtree(profile, ignore_errors=True)
        pytest.skip(f"chromium is installed but did not start: {str(exc).splitlines()[0][:200]}")
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def served(tmp_path):
    model = colour_model(tmp_path / "colour.onnx")
    (tmp_path / "parity.json").write_text(json.dumps({
        "passed": True, "images": {"source": "test split", "n": 60, "labelled": True},
        "results": [{"artifact": "colour.onnx", "path": str(model), "format": "onnx-fp32", "backend": "onnxruntime",
                     "status": "ok", "metrics": {"verdict": "pass", "top1_agreement": 1.0, "max_abs": 2e-7},
                     "failures": []}]}))
    key_file = tmp_path / "key.txt"
    key_file.write_text(KEY)
    with running(model, "--api-key-file", str(key_file)) as s:
        yield s, model, tmp_path


def _photo(tmp_path: Path) -> tuple[Path, str]:
    """A real photo when scikit-image ships one (a cat: orange-brown), else a drawn one; and the label the
    in-process model gives it (what the page must show)."""
    import cv2

    from edgeproof.runtime import load
    from edgeproof.runtime.preprocess import decode, prepare

    try:
        from skimage import data as skdata

        rgb = skdata.chelsea()
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        data = buf.tobytes()
    except ImportError:
        data = png_bytes((210, 60, 40), size=240)
    path = tmp_path / "photo.jpg"
    path.write_bytes(data)
    with load(tmp_path / "colour.onnx") as m:
        label = m.topk(m.predict(prepare(decode(data), m.preprocess)[None]), 1)[0][0][0]
    return path, label


def _wait(driver, predicate, timeout: float = 20):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(lambda d: predicate(d))


def _text(driver, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id).text


def test_page_classifies_a_photo_and_shows_the_model_card(browser, served):
    from selenium.webdriver.common.by import By

    server, model, tmp = served
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    photo, want = _photo(tmp)

    # Without the key the page asks for it; typed in, the card loads.
    browser.get(server.url + "/")
    _wait(browser, lambda d: d.find_element(By.ID, "keybox").is_displayed())
    assert _text(browser, "status") == "needs key"
    browser.find_element(By.ID, "key").send_keys(KEY)
    browser.find_element(By.CSS_SELECTOR, "#keyform button").click()
    _wait(browser, lambda d: _text(d, "status") == "ready")

    # The card: labels, format, backend, placement, parity verdict.
    assert _text(browser, "m-format") == "onnx-fp32" and _text(browser, "m-backend") == "onnxruntime"
    assert "CPU" in _text(browser, "m-placement")
    assert [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#m-labels li")] == ["red", "green", "blue"]
    assert _text(browser, "m-parity").startswith("PASS") and "top-1 agreement 100.0%" in _text(browser, "m-parity")

    # Upload a photo: the right label comes back as the first bar.
    browser.find_element(By.ID, "file").send_keys(str(photo))
    _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#results li .label"))
    bars = browser.find_elements(By.CSS_SELECTOR, "#results li")
    assert bars[0].find_element(By.CSS_SELECTOR, ".label").text == want
    assert len(bars) == 3 and "server" in _text(browser, "timing")
    widths = [b.find_element(By.CSS_SELECTOR, ".fill").size["width"] for b in bars]
    assert widths == sorted(widths, reverse=True) and widths[0] > widths[-1]  # bars drawn to scale
    browser.save_screenshot(str(ARTIFACTS / "serve_page_desktop.png"))

    # Phone-sized: nothing wider than the screen; the pick button is a big touch target.
    browser.set_window_size(*PHONE)
    _wait(browser, lambda d: d.execute_script("return window.innerWidth") <= PHONE[0])
    assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
    pick = browser.find_element(By.CSS_SELECTOR, "label.pick")
    assert pick.size["height"] >= 44 and pick.size["width"] >= 0.8 * browser.execute_script("return innerWidth")
    browser.save_screenshot(str(ARTIFACTS / "serve_page_phone.png"))

    # A bad file shows the server's reason, and the page keeps working.
    bad = tmp / "notes.png"
    bad.write_text("not a picture at all\n")
    browser.find_element(By.ID, "file").send_keys(str(bad))
    _wait(browser, lambda d: d.find_element(By.ID, "error").is_displayed())
    assert "not an image (looks like text)" in _text(browser, "error")
    browser.save_screenshot(str(ARTIFACTS / "serve_page_phone_error.png"))


def test_the_key_in_the_url_fragment_is_taken_and_removed(browser, served):
    server, _, _ = served
    browser.get(f"{server.url}/#key={KEY}")
    _wait(browser, lambda d: _text(d, "status") == "ready")
    assert KEY not in browser.current_url  # the fragment is dropped from the address bar (and never sent)
    code, out, err = server.stop()
    assert code == 0 and KEY not in out + err
