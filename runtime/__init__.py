"""The lightweight runtime: loads .tflite/.onnx artifacts and runs them without TensorFlow."""
