"""What the two in-browser backends share: the artifact exported as a one-model site, open in headless Chromium.

Not a backend itself (litertjs.py and ortweb.py are). `run(x)` gets the tensor Model.predict prepared (the
model's dtype, quantized and laid out exactly as for every other backend) and hands it to the page's own
engine.js, which calls LiteRT.js or onnxruntime-web in WebAssembly; the raw output comes back as float32.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgeproof.contract import TensorSpec
from edgeproof.errors import EdgeproofError
from edgeproof.runtime.backends.base import Backend


class WebPageBackend(Backend):
    runtime = ""  # "litertjs" | "ort-web": the page's runtime (runtime.web.site)

    def load(self) -> None:
        from edgeproof.runtime.web.browser import Page, missing_browser
        from edgeproof.runtime.web.site import build

        why = missing_browser()
        if why:
            raise EdgeproofError(f"backend '{self.name}' needs a headless browser: {why}")
        self._tmp = Path(tempfile.mkdtemp(prefix=f"edgeproof-{self.name}-"))
        self._page = None
        try:
            site = build([self.path], self._tmp / "site", runtime=self.runtime)
            entry = site.models[0]
            self._page = Page(site.folder, "index.html?driver")
            info = self._page.load(0)
        except BaseException:
            self.close()
            raise
        self.entry, self.versions = entry, {"browser": f"Chromium {self._page.browser}", "runtime": info["version"]}
        i, o = TensorSpec(**entry["input"]), TensorSpec(**entry["output"])
        if info["inputDtype"] != i.dtype:
            self.close()
            raise EdgeproofError(f"{info['version']} sees a {info['inputDtype']} input; the metadata says {i.dtype}")
        self.input_spec = TensorSpec(i.name, [1, *i.shape[1:]], i.dtype, i.scale, i.zero_point)
        self.output_spec = TensorSpec(o.name, [1, *o.shape[1:]], o.dtype, o.scale, o.zero_point)
        self.batch_ok = False  # Model feeds one image per call
        self.placement = {"accelerator": None, "cpu": None, "total": None,
                          "where": f"{info['version']} (WebAssembly, CPU) in headless {self.versions['browser']}",
                          **self.versions}

    def run(self, x: np.ndarray) -> np.ndarray:
        out = [self._page.run(0, row[None]) for row in x]
        return np.stack(out).reshape(len(x), -1)

    def time_inside(self, x: np.ndarray, warmup: int, runs: int) -> dict[str, Any]:
        """Per-inference latency timed in the page (performance.now around each run), with what timed it."""
        samples = self._page.bench(0, np.ascontiguousarray(x[:1]), warmup, runs)
        return {"samples_ms": samples, "timed_in": "the page: performance.now() around each run()", **self.versions}

    def close(self) -> None:
        page, self._page = getattr(self, "_page", None), None
        if page is not None:
            page.close()
        if getattr(self, "_tmp", None) is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
