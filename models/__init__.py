"""The bundled default model (package data `edge_infer.bundled`)."""
