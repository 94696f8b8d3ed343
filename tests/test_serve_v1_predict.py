"""KServe's V1 protocol (issue 28 item 14): `:predict` with tensors or b64 images gives the runtime's scores."""

from __future__ import annotations

import base64

import httpx
import numpy as np
from _serve_helpers import colour_model, png_bytes, running


def test_v1_predict_with_tensors_and_b64_images(tmp_path):
    from edgeproof.runtime import load
    from edgeproof.runtime.preprocess import decode, prepare

    model = colour_model(tmp_path / "colour.onnx")
    images = [png_bytes((210, 20, 20)), png_bytes((20, 20, 210), seed=3)]
    with load(model) as m:
        x = np.stack([prepare(decode(b), m.preprocess) for b in images]).astype(np.float32)
        want = m.predict(x)
    with running(model) as s, httpx.Client(base_url=s.url) as c:
        assert c.get("/v1/models/colour").json() == {"name": "colour", "ready": True}
        r = c.post("/v1/models/colour:predict", json={"instances": x.tolist()})
        assert r.status_code == 200
        np.testing.assert_allclose(r.json()["predictions"], want, rtol=1e-5, atol=1e-6)
        r = c.post("/v1/models/colour:predict",
                   json={"instances": [{"b64": base64.b64encode(b).decode()} for b in images]})
        np.testing.assert_allclose(r.json()["predictions"], want, rtol=1e-5, atol=1e-6)
        for bad in ({"instances": []}, {"inputs": 1}, {"instances": [[[True]]]}):
            r = c.post("/v1/models/colour:predict", json=bad)
            assert r.status_code == 400 and r.json()["error"], bad
        assert c.post("/v1/models/other:predict", json={"instances": x.tolist()}).status_code == 404
