"""edgeproof: train a CNN, convert it for the edge, run it without TensorFlow, prove parity."""

__version__ = "0.1.0"
