"""Images: formats and decoding, the preprocessing spec, segmentation, tensors."""
