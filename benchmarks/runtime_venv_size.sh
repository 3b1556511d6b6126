#!/usr/bin/env bash
# Size on disk of a fresh virtual environment holding only the runtime (no extras).
#   bash benchmarks/runtime_venv_size.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install -q --upgrade pip >/dev/null
"$tmp/venv/bin/pip" install -q "$root" >/dev/null
echo "packages: $("$tmp/venv/bin/pip" freeze | tr '\n' ' ')"
echo "venv size: $(du -sm "$tmp/venv" | cut -f1) MB"
start=$(date +%s.%N)
"$tmp/venv/bin/python" -c "import edge_infer"
end=$(date +%s.%N)
echo "import edge_infer (incl. interpreter start): $(echo "$end - $start" | bc) s"
