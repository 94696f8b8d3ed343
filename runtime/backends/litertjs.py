"""LiteRT.js (@litertjs/core, WebAssembly/XNNPACK) running a .tflite file in headless Chromium.

LiteRT.js 2.5's JavaScript tensors are float32, int32 and uint8: a full-int8 model with int8 I/O cannot be fed
("Element type INT8 is not supported"); one with uint8 I/O (edgetpu, or --int8-io uint8) can. The page fixes
the dynamic batch of the tensor signatures to 1 (runtime.web.tflite_batch), which LiteRT.js needs.
"""

from __future__ import annotations

from edgeproof.runtime.backends.web_page import WebPageBackend


class LiteRTJSBackend(WebPageBackend):
    name = "litertjs"
    runtime = "litertjs"
