"""Real converted TFLite models (fp32 and full-int8, trained by tests/_runtime_models) behind `edgeproof serve`:
the same answers as in-process `Model.predict`, one image per request or batched by the server."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("starlette", reason="needs edgeproof[serve]")
pytest.importorskip("tensorflow", reason="the trained test models need edgeproof[train]")

from _runtime_models import tiny_models
from _serve_helpers import running

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("fmt,atol", [("tflite-fp32", 1e-5), ("tflite-int8", 1e-6)])
def test_served_tflite_answers_like_the_in_process_model(fmt, atol):
    from edgeproof.runtime import load
    from edgeproof.runtime.preprocess import load_image

    tm = tiny_models()
    path = tm.files[fmt]
    with load(path) as m:
        want = {str(p): m.predict(load_image(p, m.preprocess)[None])[0] for p in tm.images}
        labels = m.labels
    with running(path, "--max-batch", "8", "--batch-timeout-ms", "20") as s, \
            httpx.Client(base_url=s.url, timeout=60) as c:
        assert "litert" in s.line and "batches of up to 8" in s.line

        def one(p):
            r = c.post("/v1/classify?top_k=3", content=p.read_bytes(), headers={"content-type": "image/png"})
            assert r.status_code == 200, r.text
            return p, r.json()

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(one, tm.images))
        assert max(body["batch_size"] for _, body in results) > 1  # the interpreter really ran batches
        for p, body in results:
            got = {e["label"]: e["score"] for e in body["top_k"]}
            ref = want[str(p)]
            for i, lb in enumerate(labels):
                assert got[lb] == pytest.approx(float(ref[i]), abs=max(atol, 2e-6)), (p.name, fmt)
        agree = np.mean([body["top_k"][0]["label"] == labels[tm.keras_top1[str(p)]] for p, body in results])
        assert agree >= 0.9  # and it is still the model that was trained
        meta = c.get("/v2/models/" + path.stem).json()
        assert meta["platform"] == "tflite_litert" and meta["inputs"][0]["shape"] == [-1, 32, 32, 3]
