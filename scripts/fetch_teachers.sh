#!/usr/bin/env bash
# Fetch the published teachers (mdistiller's CIFAR-100 cifar_teachers.tar, torchvision's ImageNet ResNet-34/50),
# checksum-verified, into save/teachers/models/ where the table scripts look for them:
#   bash scripts/fetch_teachers.sh                  # both sets
#   bash scripts/fetch_teachers.sh cifar            # or: imagenet
#   bash scripts/fetch_teachers.sh --mirror DIR     # files downloaded by hand (same names) in DIR
# All flags: python tools/fetch_teachers.py --help
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
exec "$PYTHON" -m tools.fetch_teachers "$@"  # from the checkout: works with or without pip install -e .
