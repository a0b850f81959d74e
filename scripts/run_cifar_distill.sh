#!/usr/bin/env bash
# RepDistiller's CIFAR-100 benchmark (CRD paper, Tables 1 and 2): every classic method on every pair,
# with the weights of RepDistiller's scripts/run_cifar_distill.sh (docs/methods.md, "Methods"). Needs the teachers
# of scripts/run_cifar_teachers.sh. Summarise with: python tools/report.py
# Cells of one teacher and trial train as packs (one teacher pass per batch); PACK=0: one run per cell.
set -euo pipefail
source "$(dirname "$0")/common.sh"

# teacher:student pairs. Table 1: same architecture family; Table 2: across families.
PAIRS_SAME="wrn_40_2:wrn_16_2 wrn_40_2:wrn_40_1 resnet56:resnet20 resnet110:resnet20 resnet110:resnet32 resnet32x4:resnet8x4 vgg13:vgg8"
PAIRS_CROSS="vgg13:MobileNetV2 ResNet50:MobileNetV2 ResNet50:vgg8 resnet32x4:ShuffleV1 resnet32x4:ShuffleV2 wrn_40_2:ShuffleV1"
PAIRS=${PAIRS:-"$PAIRS_SAME $PAIRS_CROSS"}

# --distill name and its -r -a -b weights, as RepDistiller's script
METHODS=(
    "kd -r 0.1 -a 0.9 -b 0"
    "hint -a 0 -b 100"
    "attention -a 0 -b 1000"
    "similarity -a 0 -b 3000"
    "correlation -a 0 -b 0.02"
    "vid -a 0 -b 1"
    "rkd -a 0 -b 1"
    "pkt -a 0 -b 30000"
    "abound -a 0 -b 1"
    "factor -a 0 -b 200"
    "fsp -a 0 -b 50"
    "nst -a 0 -b 50"
    "crd -a 0 -b 0.8"
    "crd -a 1 -b 0.8"
)

# FSP needs equal channel counts at every stage: RepDistiller's table marks the others N/A.
skip_cell() {  # <teacher> <student> <method spec>
    [[ $3 == fsp* ]] && ! [[ "$1:$2" =~ ^(resnet56:resnet20|resnet110:resnet20|resnet110:resnet32|resnet32x4:resnet8x4|vgg13:vgg8|wrn_40_2:wrn_16_2)$ ]]
}

pair_cells "${METHODS[@]}"
flush_packs
