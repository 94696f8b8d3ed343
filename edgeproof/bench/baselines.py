"""The baselines timed in the same run as edgeproof: each backend's bare loop
(edgeproof.runtime.backends.bare_loop) and the Keras model itself.

TensorFlow is imported only by ``keras_baselines``, which the runner calls in its own subprocess
and only when a .keras model was given.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgeproof.runtime.backends.bare_loop import Baseline


def bare_baseline(backend: str, path: str | Path, threads: int | None, x: np.ndarray,
                  model=None) -> Baseline | None:
    """The bare loop for ``backend`` (its class's ``bare_loop``), or None when it has none (``model``: the
    edgeproof Model of the same file, whose settings the baseline mirrors where a library hides them)."""
    from edgeproof.formats import backend_class

    return backend_class(backend).bare_loop(path, threads, x, model)


def keras_baselines(path: str | Path, threads: int | None, make_input: Callable[[int, int, int], np.ndarray],
                    trust_model: bool = False) -> tuple[dict[str, Callable], dict, np.ndarray]:
    """Keras ``model(x)`` and ``model.predict(x)`` on a .keras model (imports TensorFlow here).

    ``make_input(height, width, channels)`` builds the benchmark batch once the model's input size is known.
    Returns the callables, facts (import and load seconds, versions) and the input. Call only in a
    process that may import TensorFlow.
    """
    from edgeproof.train.run_dir import load_keras_model
    from edgeproof.train.tf_quiet import import_tensorflow

    t0 = time.perf_counter()
    tf = import_tensorflow("the Keras baseline")
    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(int(threads))
        tf.config.threading.set_inter_op_parallelism_threads(1)
    import keras  # noqa: F401 - counted in the import time, not the load time

    import_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    model = load_keras_model(path, "the Keras baseline", trust_model)
    load_s = time.perf_counter() - t1
    shape = model.inputs[0].shape  # (None, H, W, 3)
    if len(shape) != 4 or shape[1] is None or shape[2] is None:
        from edgeproof.errors import UsageError

        raise UsageError(f"Keras model '{path}' has input shape {tuple(shape)}; the benchmark needs a fixed "
                         "(None, H, W, 3) image input")
    x = make_input(int(shape[1]), int(shape[2]), int(shape[3] or 3))
    xt = tf.constant(x)

    def call_model():
        return model(xt, training=False).numpy()

    def call_predict():
        return model.predict(x, batch_size=len(x), verbose=0)

    facts = {"import_s": import_s, "load_s": load_s, "tensorflow": tf.__version__, "keras": keras.__version__}
    return {"keras model(x)": call_model, "keras predict()": call_predict}, facts, x
