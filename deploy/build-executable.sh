#!/usr/bin/env bash
# A self-contained `edge-infer` for a PC without Python: a PyInstaller one-folder bundle
# (dist/edge-infer/edge-infer plus its _internal/ folder, the bundled model included), built
# in a fresh virtual environment holding only the runtime, so nothing else is frozen in.
#   bash deploy/build-executable.sh [OUT_DIR]     (default: dist/)
# Double-clicked (no arguments) it serves the upload page and opens the browser; with
# arguments it is the usual command line (classify, watch, serve, check-site, info, bench).
set -euo pipefail
cd "$(dirname "$0")/.."
out="$(realpath -m "${1:-dist}")"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q --disable-pip-version-check . "pyinstaller==6.22.3"
"$work/venv/bin/pyinstaller" --noconfirm --clean --log-level WARN \
    --onedir --name edge-infer \
    --distpath "$out" --workpath "$work/build" --specpath "$work" \
    --collect-data edge_infer \
    deploy/edge_infer_exe.py
du -sh "$out/edge-infer"
"$out/edge-infer/edge-infer" info | head -2
