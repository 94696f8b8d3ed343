"""onnxruntime-web (WebAssembly execution provider, one thread) running an .onnx file in headless Chromium."""

from __future__ import annotations

from edgeproof.runtime.backends.web_page import WebPageBackend


class OrtWebBackend(WebPageBackend):
    name = "ort-web"
    runtime = "ort-web"
