"""`edgeproof serve`: an HTTP inference API on the device (TF-free; needs the `edgeproof[serve]` extra).

    from edgeproof.serve import ServeConfig, serve
    serve("model.tflite-int8.tflite", ServeConfig(port=8000, max_batch=8))

Endpoints: POST /v1/classify, the Open Inference Protocol v2 under /v2, GET /metrics (Prometheus) and
GET / (a page to classify a photo from a phone). See docs/serve.md.
Only the settings module is imported here; Starlette and uvicorn load when `serve()` runs.
"""

from __future__ import annotations

from typing import Any

from edgeproof.serve.config import ServeConfig

__all__ = ["ServeConfig", "serve"]


def __getattr__(name: str) -> Any:
    if name == "serve":
        from edgeproof.serve.server import serve

        return serve
    raise AttributeError(f"module 'edgeproof.serve' has no attribute {name!r}")
