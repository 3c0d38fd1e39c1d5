"""How each artifact is run: a `.pt2` program (`pt2`), an ONNX graph under ONNX Runtime (`ort`), a
Keras model in the TensorFlow process (`keras`, which starts it), and the torch device (`device`).
Each imports its runtime only when called."""
