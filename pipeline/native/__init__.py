"""A native PyTorch model generated from the Keras file alone (config and weights, no TensorFlow, no ONNX)."""
