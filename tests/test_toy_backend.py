"""A backend is one file plus one table row: a toy NumPy backend written to a temporary folder and registered
with one BACKENDS row is picked up by the format table, `load`, `edgeproof run --backend`, `inspect` and the
parity evaluation, with no other change to edgeproof."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest

from edgeproof.cli.main import run_cli
from edgeproof.formats import BACKENDS, FORMATS, Backend
from edgeproof.runtime import load

TOY = textwrap.dedent('''
    """Flatten -> Gemm -> Softmax ONNX graphs, evaluated with NumPy (the whole backend)."""
    import numpy as np

    from edgeproof.contract import TensorSpec
    from edgeproof.runtime.backends.base import Backend


    class ToyBackend(Backend):
        name = "toy"

        def load(self):
            import onnx
            from onnx import numpy_helper

            g = onnx.load(str(self.path)).graph
            if [n.op_type for n in g.node] != ["Flatten", "Gemm", "Softmax"]:
                raise ValueError("the toy backend runs Flatten -> Gemm -> Softmax graphs only")
            self.w, self.b = (numpy_helper.to_array(t) for t in g.initializer)
            dims = [d.dim_value or None for d in g.input[0].type.tensor_type.shape.dim]
            self.input_spec = TensorSpec(name=g.input[0].name, shape=dims, dtype="float32")
            self.output_spec = TensorSpec(name=g.output[0].name, shape=[None, self.w.shape[1]], dtype="float32")
            self.batch_ok = True
            self.placement = {"accelerator": 0, "cpu": 3, "total": 3, "where": "cpu (toy NumPy)"}

        def run(self, x):
            z = x.reshape(len(x), -1) @ self.w + self.b
            e = np.exp(z - z.max(axis=1, keepdims=True))
            return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
''')


@pytest.fixture()
def toy(tmp_path, monkeypatch):
    pytest.importorskip("onnx")
    from _tiny_onnx import build_linear_onnx

    (tmp_path / "toy_numpy_backend.py").write_text(TOY)  # the one file
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(BACKENDS, "toy", Backend("toy", "toy_numpy_backend:ToyBackend", "onnx", "numpy",
                                                 "pip install numpy"))  # the one row
    path, reference = build_linear_onnx(tmp_path / "linear.onnx")
    return path, reference


def test_a_toy_backend_is_one_file_and_one_row(toy, tmp_path, capsys):
    from _tiny_onnx import random_batch

    path, reference = toy
    assert FORMATS["onnx-fp32"].backends[-1] == "toy" and "toy" in FORMATS["onnx-int8"].backends
    assert "toy" not in FORMATS["tflite-fp32"].backends
    x = random_batch(4)
    with load(path, backend="toy") as m:
        assert m.backend_name == "toy" and m.placement["where"] == "cpu (toy NumPy)"
        np.testing.assert_allclose(m.predict(x), reference(x), atol=1e-5)

    import cv2

    img = tmp_path / "img.png"
    cv2.imwrite(str(img), np.full((8, 8, 3), 200, np.uint8))
    assert run_cli(["run", str(path), str(img), "--backend", "toy", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])["summary"]
    assert summary["count"] == 1 and summary["model"]["backend"] == "toy"

    assert run_cli(["inspect", str(path), "--json"]) == 0
    assert '"toy"' in capsys.readouterr().out  # inspect tried it with the others


def test_parity_judges_an_artifact_on_the_toy_backend(toy):
    from _tiny_onnx import random_batch

    from edgeproof.parity.runner import evaluate

    path, reference = toy

    from types import SimpleNamespace

    x = random_batch(6, seed=3)

    class Batches:  # parity's images, already preprocessed, labelled with the reference's top-1
        images = SimpleNamespace(labels=reference(x).argmax(axis=1), classes=["class_0", "class_1", "class_2"])

        def get(self, pp):
            return x

    fmt = FORMATS["onnx-fp32"]
    row = evaluate(path, fmt, "toy", Batches(), reference(x), fmt.tolerance, listed=True)
    assert row.backend == "toy" and row.status == "pass", row.reason
