"""Every format in the table, through every TF-free backend that reads it, against the trained Keras model.

Uses the shared `tiny_run` / `tiny_artifacts` fixtures (train + convert engineers' code). The Keras
reference sees the same OpenCV-decoded pixels as the runtime, so this measures conversion and
runtime drift only: top-1 agreement must meet the format's tolerance (fp32/fp16 100 %, int8 >= 99 %).
"""

from __future__ import annotations

import numpy as np
import pytest

from edgeproof.formats import BACKENDS, FORMATS, artifact_filename
from edgeproof.runtime import load
from edgeproof.runtime.preprocess import load_batch

OWN_TESTS = ("openvino",)  # tests/test_openvino.py (a fake Core covers the devices this host lacks)
RUNTIME_BACKENDS = tuple(b for b in BACKENDS if b not in OWN_TESTS)
CASES = [(f.name, b) for f in FORMATS.values() for b in f.backends if b in RUNTIME_BACKENDS]


@pytest.fixture(scope="module")
def reference(tiny_run):
    import keras

    from edgeproof.train.run_dir import load_run

    run = load_run(tiny_run)
    paths = [p for p, _ in run.split("test")]
    x, _, skipped = load_batch(paths, run.preprocess)
    assert not skipped
    probs = keras.models.load_model(run.model_path, compile=False).predict(x, verbose=0)
    return run, x, probs


@pytest.mark.slow
@pytest.mark.parametrize("fmt,backend", CASES, ids=[f"{f}-{b}" for f, b in CASES])
def test_artifact_top1_agrees_with_keras(tiny_artifacts, reference, fmt, backend):
    run, x, ref = reference
    path = tiny_artifacts / artifact_filename(FORMATS[fmt])
    with load(path, backend=backend) as m:
        assert m.format == fmt and m.labels == run.labels
        assert (m.preprocess.height, m.preprocess.width) == (run.preprocess.height, run.preprocess.width)
        p = m.predict(x)
    assert p.shape == ref.shape and p.dtype == np.float32
    agree = float(np.mean(p.argmax(1) == ref.argmax(1)))
    assert agree >= FORMATS[fmt].tolerance.min_top1_agreement, f"{fmt}/{backend}: top-1 agreement {agree:.3f}"
    tol = FORMATS[fmt].tolerance.max_abs
    if tol is not None:
        assert float(np.abs(p - ref).max()) <= tol * 10  # tensor gate lives in parity; here a sanity bound


def test_every_format_has_a_runtime_case():
    assert {f for f, _ in CASES} == set(FORMATS)
