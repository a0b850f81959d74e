#!/usr/bin/env bash
# NORM's CIFAR-100 Tables 1 and 2 (seed 004): NORM, NORM with the plain FT (no identity shortcut), NORM+KD
# and NORM+CRD on the 13 teacher:student pairs of the CRD paper, and the tables' CE-only rows "Student (w/ 1
# plain FT)" and "Student (w/ 1 default FT)": the student with NORM's FT (sized N x the teacher's channels, so
# per pair) trained on the labels alone, -r 1 -a 0 -b 0 (NORM publishes no command for these rows; this is
# NORM's student script with its KD and NORM terms off, its logit normalisation kept; the teacher only sizes
# the FT and is not run in training). The vanilla "Student" rows are scripts/run_cifar_teachers.sh's. Needs
# the teachers of scripts/run_cifar_teachers.sh. NORM's recipe is RepDistiller's, the defaults: 240 epochs,
# batch 64, lr 0.05 (0.01 for MobileNetV2, ShuffleV1, ShuffleV2), x0.1 after epochs 150, 180, 210, weight
# decay 5e-4.
#
# Weights: the NORM README's -r 0.1 -a 0 -b 1.0 -s 8 (N = 8). NORM+KD adds -a 1: NORM does not publish its
# value, this is norm_kd's default. NORM+CRD weighs CRD by -c 2.5 (NORM's code; with the norm names -c means
# --ceta). The plain-FT runs are written under their own save root, a table of their own (under save/ they
# would be a row of their own too: their folder and report row carry plain_ft). Summarise with
#   python tools/report.py                            # NORM, NORM+KD, NORM+CRD, student w/ 1 default FT
#                                                     # (norm r=1, a=0, b=0); NORM reports the best epoch
#   python tools/report.py --save_root save_plain_ft  # NORM with the plain FT, student w/ 1 plain FT
# Cells of one teacher and trial train as packs (one teacher pass per batch; the plain-FT runs are
# members with their own --save_root); PACK=0: one run per cell.
set -euo pipefail
source "$(dirname "$0")/common.sh"

PAIRS_SAME="wrn_40_2:wrn_16_2 wrn_40_2:wrn_40_1 resnet56:resnet20 resnet110:resnet20 resnet110:resnet32 resnet32x4:resnet8x4 vgg13:vgg8"
PAIRS_CROSS="vgg13:MobileNetV2 ResNet50:MobileNetV2 ResNet50:vgg8 resnet32x4:ShuffleV1 resnet32x4:ShuffleV2 wrn_40_2:ShuffleV1"
PAIRS=${PAIRS:-"$PAIRS_SAME $PAIRS_CROSS"}
PLAIN_FT_ROOT=${PLAIN_FT_ROOT:-./save_plain_ft}

METHODS=(
    "norm -r 0.1 -a 0 -b 1.0 -s 8"
    "norm -r 0.1 -a 0 -b 1.0 -s 8 --plain_ft --save_root $PLAIN_FT_ROOT"
    "norm_kd -r 0.1 -a 1 -b 1.0 -s 8"
    "norm_crd -r 0.1 -a 0 -b 1.0 -s 8 -c 2.5"
    "norm -r 1 -a 0 -b 0 -s 8"                                    # student w/ 1 default FT, CE only
    "norm -r 1 -a 0 -b 0 -s 8 --plain_ft --save_root $PLAIN_FT_ROOT"  # student w/ 1 plain FT, CE only
)

pair_cells "${METHODS[@]}"
flush_packs
