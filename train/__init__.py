"""Training: datasets, model registry and the training loop (TensorFlow is imported lazily)."""
