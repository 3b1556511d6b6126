"""Keras -> ONNX exporter with a parity gate and an int8 variant (needs the `train` extra)."""
