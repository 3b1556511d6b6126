"""`python -m edge_infer ...` is `edge-infer ...`."""

from .cli import main

main(prog_name="edge-infer")
