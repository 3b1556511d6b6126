"""`python -m edge_infer ...` is `edge-infer ...`."""

from .cli import run

run()
