"""Training side (needs the `train` extra for TensorFlow): dataset, CNN, calibration, reports."""
