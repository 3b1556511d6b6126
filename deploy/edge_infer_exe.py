"""The entry point PyInstaller freezes (deploy/build-executable.sh): `edge-infer` itself."""

from edge_infer.cli import run

run()
