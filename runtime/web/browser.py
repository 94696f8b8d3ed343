"""Headless Chromium driving an exported site from Python (Selenium + chromedriver), served on 127.0.0.1.

`Page` serves a site folder from a thread, opens it in a fresh headless Chromium profile and calls the
page's own engine.js: `run` (a tensor already in the model's dtype and layout, as every backend gets),
`preprocess` (raw image bytes through the page's JavaScript preprocessing), `bench` (latency measured in
the page with performance.now). Every request the browser makes is recorded (`requests`), so a caller can
prove the page never leaves its origin.
"""

from __future__ import annotations

import base64
import functools
import http.server
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np

from edgeproof.errors import EdgeproofError

INSTALL = "pip install 'edgeproof[web]'"
BROWSER_HINT = ("install Chromium and its driver (Debian/Ubuntu: apt-get install chromium chromium-driver), or "
                "point EDGEPROOF_CHROMIUM / EDGEPROOF_CHROMEDRIVER at them")
TYPED = {"float32": "Float32Array", "int8": "Int8Array", "uint8": "Uint8Array", "int16": "Int16Array",
         "int32": "Int32Array"}
SCRIPT_TIMEOUT_S = 120
INTERNAL = ("chrome://", "chrome-untrusted://", "devtools://")


def find_browser() -> tuple[str | None, str | None]:
    """(chromium, chromedriver) paths, or None for each one that is not found."""
    chromium = os.environ.get("EDGEPROOF_CHROMIUM") or next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    return chromium, os.environ.get("EDGEPROOF_CHROMEDRIVER") or shutil.which("chromedriver")


def missing_browser() -> str | None:
    """Why no page can be driven here (None when selenium, Chromium and chromedriver are all present)."""
    import importlib.util

    if importlib.util.find_spec("selenium") is None:
        return f"selenium is not installed: {INSTALL}"
    chromium, driver = find_browser()
    if not (chromium and driver):
        return f"no headless browser (chromium: {chromium or 'missing'}, chromedriver: {driver or 'missing'}); " \
               + BROWSER_HINT
    return None


class _Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, ".wasm": "application/wasm",
                      ".mjs": "text/javascript", ".js": "text/javascript", ".webmanifest": "application/manifest+json"}

    def __init__(self, *args, log: list[str], **kwargs) -> None:
        self._log = log
        super().__init__(*args, **kwargs)

    def log_message(self, fmt: str, *args: Any) -> None:  # one record per request, nothing on stderr
        self._log.append(self.path)


class StaticServer:
    """A site folder over HTTP on 127.0.0.1 (an ephemeral port), in a daemon thread."""

    def __init__(self, folder: Path) -> None:
        self.paths: list[str] = []
        handler = functools.partial(_Handler, directory=str(folder), log=self.paths)
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/"
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="edgeproof-site", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def start_chromium(width: int = 1000, height: int = 1000, extra_args: tuple[str, ...] = ()):
    """A headless Chromium under chromedriver, with a throwaway profile; EdgeproofError saying why not.

    extra_args: more Chromium switches (e.g. the fake camera: --use-fake-device-for-media-stream)."""
    why = missing_browser()
    if why:
        raise EdgeproofError(why)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager fetch a browser or driver
    chromium, driver_path = find_browser()
    profile = tempfile.mkdtemp(prefix="edgeproof-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--disable-features=OptimizationHints,Translate,MediaRouter",
                f"--user-data-dir={profile}", f"--window-size={width},{height}", *extra_args):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    try:
        driver = webdriver.Chrome(options=opts, service=Service(executable_path=driver_path))
    except Exception as exc:  # noqa: BLE001 - selenium raises many types for a browser that cannot start
        shutil.rmtree(profile, ignore_errors=True)
        raise EdgeproofError(f"chromium did not start ({str(exc).splitlines()[0][:200]}); {BROWSER_HINT}") from None
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(SCRIPT_TIMEOUT_S)
    driver._edgeproof_profile = profile  # removed by close_chromium
    return driver


def close_chromium(driver) -> None:
    try:
        driver.quit()
    finally:
        shutil.rmtree(getattr(driver, "_edgeproof_profile", ""), ignore_errors=True)


class Page:
    """One exported site open in headless Chromium; `model` indexes models.json."""

    def __init__(self, folder: Path, page: str = "index.html", browser_args: tuple[str, ...] = ()) -> None:
        self.server = StaticServer(folder)
        self.driver = None
        try:
            self.driver = start_chromium(extra_args=browser_args)
            self._urls: list[str] = []
            self.driver.get(self.server.url + page)
            self.call("await window.edgeproofReady; if (document.getElementById('error').textContent) "
                      "throw new Error(document.getElementById('error').textContent); return true;")
            self.browser = self.driver.capabilities.get("browserVersion", "?")
        except BaseException:
            self.close()
            raise

    @property
    def origin(self) -> str:
        return self.server.url.rstrip("/")

    def call(self, body: str, *args: Any) -> Any:
        """Run an async function body in the page (`engine` is engine.js, `models` the loaded ones, `args`);
        a JavaScript error comes back as EdgeproofError with its message."""
        script = ("const done = arguments[arguments.length - 1]; const args = Array.from(arguments).slice(0, -1);"
                  "(async () => { const engine = await import('./engine.js');"
                  "window._ep = window._ep || {models: {}}; const models = window._ep.models;"
                  f"{body} }})().then((v) => done({{ok: v}}), (e) => done({{error: String(e && e.stack || e)}}));")
        out = self.driver.execute_async_script(script, *args)
        if "error" in out:
            raise EdgeproofError(f"in the browser: {out['error'].splitlines()[0][:300]}")
        return out["ok"]

    def load(self, index: int) -> dict:
        """Load models.json[index] in its runtime; returns {version, inputDtype, loadMs}."""
        return self.call("const list = await engine.readModels(); const m = await engine.loadModel(list[args[0]]);"
                         "models[args[0]] = m; return {version: m.version, inputDtype: m.inputDtype, loadMs: m.loadMs};",
                         index)

    def run(self, index: int, x: np.ndarray) -> np.ndarray:
        """One forward pass of the loaded model on `x` (its dtype and layout, batch 1) -> raw float32 output."""
        arr = np.ascontiguousarray(x)
        b64 = base64.b64encode(arr.tobytes()).decode()
        out = self.call(f"const bytes = Uint8Array.from(atob(args[1]), (c) => c.charCodeAt(0));"
                        f"const data = new {TYPED[arr.dtype.name]}(bytes.buffer);"
                        "const raw = await models[args[0]].run(data);"
                        "let s = ''; const u = new Uint8Array(raw.buffer, raw.byteOffset, raw.byteLength);"
                        "for (let i = 0; i < u.length; i += 8192) s += String.fromCharCode(...u.subarray(i, i + 8192));"
                        "return btoa(s);", index, b64)
        return np.frombuffer(base64.b64decode(out), np.float32).copy()

    def preprocess(self, index: int, image: bytes) -> np.ndarray:
        """Encoded image bytes through the page's decode and preprocessing -> float32 HxWx3 (model-input space)."""
        out = self.call("const list = await engine.readModels(); const e = list[args[0]];"
                        "const bytes = Uint8Array.from(atob(args[1]), (c) => c.charCodeAt(0));"
                        "const x = await engine.preprocess(new Blob([bytes]), e);"
                        "let s = ''; const u = new Uint8Array(x.buffer);"
                        "for (let i = 0; i < u.length; i += 8192) s += String.fromCharCode(...u.subarray(i, i + 8192));"
                        "return {b64: btoa(s), h: e.preprocess.height, w: e.preprocess.width};",
                        index, base64.b64encode(image).decode())
        return np.frombuffer(base64.b64decode(out["b64"]), np.float32).reshape(out["h"], out["w"], 3).copy()

    def bench(self, index: int, x: np.ndarray, warmup: int, runs: int) -> list[float]:
        """Per-inference latency in ms, timed inside the page (performance.now around each run)."""
        arr = np.ascontiguousarray(x)
        return self.call(f"const bytes = Uint8Array.from(atob(args[1]), (c) => c.charCodeAt(0));"
                         f"const data = new {TYPED[arr.dtype.name]}(bytes.buffer); const m = models[args[0]];"
                         "for (let i = 0; i < args[2]; i++) await m.run(data);"
                         "const t = []; for (let i = 0; i < args[3]; i++) { const t0 = performance.now();"
                         "await m.run(data); t.push(performance.now() - t0); } return t;",
                         index, base64.b64encode(arr.tobytes()).decode(), warmup, runs)

    def requests(self) -> list[str]:
        """Every URL the page requested since it was opened (from the browser's network log)."""
        import json

        for entry in self.driver.get_log("performance"):
            msg = json.loads(entry["message"])["message"]
            url = msg.get("params", {}).get("request", {}).get("url", "")
            # chrome:// pages (the start tab) come from the browser binary, not from any network
            if msg.get("method") == "Network.requestWillBeSent" and not url.startswith(INTERNAL):
                self._urls.append(url)
        return list(self._urls)

    def close(self) -> None:
        if self.driver is not None:
            close_chromium(self.driver)
            self.driver = None
        self.server.close()
