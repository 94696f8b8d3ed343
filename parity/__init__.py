"""Parity: prove every artifact still matches the trained Keras model.

    from edgeproof.parity import compare, run_parity
    c = compare(keras_probs, tflite_probs, labels_true, FORMATS["tflite-int8"].tolerance)
    c.passed, c.failures, c.tensor.max_abs, c.task.top1_agreement
    report = run_parity("runs/demo")          # every artifact × backend, parity.json/.md + PNGs
    report.passed, report.failures

TensorFlow is imported only when the Keras reference or the TFLite triage runs.
"""

from __future__ import annotations

from edgeproof.parity.gate import Comparison, Failure, compare, override
from edgeproof.parity.session import ParityReport, run_parity

__all__ = ["Comparison", "Failure", "ParityReport", "compare", "override", "run_parity"]
