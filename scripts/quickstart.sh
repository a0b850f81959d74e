#!/usr/bin/env bash
# One command for a fresh machine: make .venv, install kdzoo with its runtime and test requirements, then run
# the main job on the built-in digits data (CPU, about two minutes on 2 cores): train a resnet20 teacher,
# distil a resnet8 student from it with KD, and print both accuracies.
# Afterwards `source .venv/bin/activate` makes `python` the venv's, so the README's commands run as written.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q -r requirements.txt -r requirements-test.txt
# kdzoo itself, editable: its packages import from anywhere in the venv (the scripts need no install).
.venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .
PY=.venv/bin/python

echo "== teacher: resnet20 on the built-in digits data =="
$PY train_teacher.py --model resnet20 --dataset digits --epochs 12 --lr_decay_epochs 8,11 \
    --deterministic --trial quickstart --overwrite
TEACHER=save/teachers/models/resnet20_vanilla_digits_trial_quickstart/resnet20_best.pth
$PY tools/eval.py --path "$TEACHER" --dataset digits

echo "== student: resnet8 distilled from it with KD =="
$PY train_student.py --path_t "$TEACHER" --model_s resnet8 --distill kd --dataset digits --epochs 12 \
    --lr_decay_epochs 8,11 --deterministic --trial quickstart --overwrite
echo "== done; run 'source .venv/bin/activate' to use this environment's python for the README's commands =="
