"""The Keras side of a local parity run (reference scores, their latency, the TF-decode half of the preprocessing
drift check), optionally in a short-lived child process.

Everything else parity does runs the TF-free runtime, so with `run_parity(keras_child=True)` the process that
loads LiteRT, OpenVINO, onnxruntime and OpenCV never imports TensorFlow: on the demo, the parity process
peaked at 1372 MiB with TensorFlow in it. The child gets the already preprocessed batch (the same array the
artifacts are fed), so the reference is computed on exactly the same input either way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeproof.contract import Preprocess


@dataclass
class KerasSide:
    reference: np.ndarray  # (N, C) class scores on the runtime-preprocessed batch
    latency_ms: float | None  # p50 of single-image calls
    tf_side: tuple | None  # parity.e2e.tf_side's result (None: no drift check asked)


def compute(model_path: Path, head: str, trust_model: bool, x: np.ndarray, paths: list[str] | None,
            pp: Preprocess, keras_model=None) -> KerasSide:
    """The Keras side here (keras_model: one already loaded, else it is loaded from model_path); paths: the
    images for the TF-decode half of the drift check (None: not asked)."""
    from edgeproof.parity import e2e, reference
    from edgeproof.parity.metrics import percentile_ms

    model = keras_model if keras_model is not None else reference.load_keras(model_path, head, trust_model)
    ref = reference.predict(model, x)
    latency = percentile_ms(reference.latency_samples(model, x), 50)
    tf = e2e.tf_side(model, paths, pp, x) if paths is not None else None
    return KerasSide(ref, latency, tf)


def compute_in_child(model_path: Path, head: str, trust_model: bool, x: np.ndarray, paths: list[str] | None,
                     pp: Preprocess) -> KerasSide:
    """compute() in a spawned process (edgeproof.child_call): TensorFlow and the model go away with it."""
    from edgeproof.child_call import call_in_child

    return call_in_child(compute, Path(model_path), head, trust_model, x, paths, pp,
                         name="edgeproof-parity-keras",
                         what="run 'edgeproof parity' without the demo to see why").value
