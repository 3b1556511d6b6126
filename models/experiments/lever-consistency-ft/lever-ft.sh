#!/bin/bash
# Lever screen (issue 29): the shipped run (3.2) fine-tuned 12 epochs with and without the
# consistency loss, same recipe, seed, lr; then each one's chain and validation shift suite.
set -euo pipefail
cd /work/lever-wt
source /work/main/.venv/bin/activate
INIT=/work/main/models/run/model.keras
for NAME in ft-plain ft-cons6; do
  R=runs/$NAME
  EXTRA=""
  [ $NAME = ft-cons6 ] && EXTRA="--consistency 6"
  set -x
  python -m train --recipe recipes/all-pbs-cnn-3.toml --seed 2 --epochs 12 --patience 12 \
    --lr 0.0005 --init-weights $INIT $EXTRA --out $R
  python -m train.uncertain_threshold --run $R --target 0.025 --benign-safety
  python -m export --run $R --out $R/rc1.onnx --version $NAME-rc1
  python -m train.scale_fit --run $R --model $R/rc1.onnx
  python -m export --run $R --out $R/$NAME.onnx --version $NAME
  mkdir -p $R/reports
  python -m train.shift_eval --model $R/$NAME.onnx --split val --out $R/reports/shift_eval_val.json
  set +x
done
echo LEVER DONE
