#!/usr/bin/env bash
# Does edge-infer answer the same on an arm64 lab PC (Raspberry Pi 5 class)? Checked here under
# emulation: a Debian 12 arm64 root (mmdebstrap + qemu-user-static), the runtime installed in
# it from the README's line (aarch64 wheels of numpy, OpenCV, onnxruntime), then
# `edge-infer classify` on the test split and on the out-of-distribution set of
# `export.compare_decisions --make-ood-images`, compared with this machine's x86-64 answers.
#   bash deploy/arm64-check.sh [ROOT]          (as root; ROOT default /tmp/edge-arm64-root)
# Writes reports/arm64_check.json. Speed under emulation means nothing: none is reported.
set -euo pipefail
cd "$(dirname "$0")/.."
root="${1:-/tmp/edge-arm64-root}"
data="${ALL_PBS_DATA:-$(realpath ../shared/data/all-pbs)}"
py="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"  # with .[train]

if ! command -v qemu-aarch64-static >/dev/null || ! command -v mmdebstrap >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user-static binfmt-support mmdebstrap >/dev/null
fi
mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
update-binfmts --enable qemu-aarch64
if [ ! -x "$root/usr/bin/python3" ]; then
  mmdebstrap --arch=arm64 --variant=apt --include=python3,python3-venv,ca-certificates bookworm "$root"
fi
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"   # pip verifies the registry with it
mountpoint -q "$root/sys" || mount -t sysfs sysfs "$root/sys"   # onnxruntime reads the CPU list
# and NOT /proc: with the host's /proc/cpuinfo (x86-64) onnxruntime's CPU probe crashes under
# emulation (segmentation fault at import, seen here); without it, it reads /sys
mountpoint -q "$root/proc" && umount "$root/proc"
trap 'umount "$root/sys" 2>/dev/null || true' EXIT

# the project as a user downloads it, and the README's install line inside the root
rm -rf "$root/opt/edge-infer" && mkdir -p "$root/opt/edge-infer"
git ls-files -z | xargs -0 -I{} cp --parents {} "$root/opt/edge-infer/"
chroot "$root" /bin/sh -c 'cd /opt/edge-infer && python3 -m venv .venv && . .venv/bin/activate \
  && pip install -q --disable-pip-version-check -c constraints.txt . && uname -m'

# the images: the test split (as saved) and the out-of-distribution set
work="$root/data" && rm -rf "$work" && mkdir -p "$work/test"
"$py" - "$data" "$work/test" <<'EOF'
import shutil, sys
from pathlib import Path
from train.dataset import read_manifest, select
data, out = Path(sys.argv[1]), Path(sys.argv[2])
for r in select(read_manifest(), "test"):
    shutil.copy(data / r.path, out / Path(r.path).name)
EOF
"$py" -m export.compare_decisions --make-ood-images "$work/ood" --data "$data"

mkdir -p reports
for set in test ood; do
  chroot "$root" /bin/sh -c ". /opt/edge-infer/.venv/bin/activate && \
    edge-infer classify /data/$set --format jsonl" > "/tmp/arm64-$set.jsonl"
  "$py" -m edge_infer classify "$work/$set" --format jsonl > "/tmp/x86-$set.jsonl"
  "$py" -m export.compare_decisions "/tmp/x86-$set.jsonl" "/tmp/arm64-$set.jsonl" --by-name \
    --out "/tmp/arm64-$set.json" > /dev/null
done
ROOT="$root" "$py" - <<'EOF'
import json, os, platform, subprocess
sets = {s: json.load(open(f"/tmp/arm64-{s}.json")) for s in ("test", "ood")}
ver = subprocess.run(["chroot", os.environ["ROOT"], "/opt/edge-infer/.venv/bin/pip", "list",
                      "--format", "json"], capture_output=True, text=True).stdout
report = {
    "what": "edge-infer classify on arm64 (Debian 12 root under qemu-user-static) vs x86-64, "
            "the same files; statuses, labels, reasons equal; probabilities within 1e-4",
    "x86_64_host": platform.processor() or platform.machine(),
    "sets": sets,
    "arm64_packages": {p["name"]: p["version"] for p in json.loads(ver or "[]")
                       if p["name"] in ("numpy", "onnxruntime", "opencv-python-headless", "click")},
    "command": "bash deploy/arm64-check.sh",
}
ok = all(s["only_in_one"] == 0 and s["status_equal"] == s["label_equal"] == s["reason_equal"]
         == s["images"] and s["probability_max_abs_diff"] <= 1e-4 for s in sets.values())
report["all_answers_equal"] = ok
open("reports/arm64_check.json", "w").write(json.dumps(report, indent=2) + "\n")
print(json.dumps(report, indent=2))
raise SystemExit(0 if ok else 1)
EOF
