#!/usr/bin/env bash
# mdistiller's CIFAR-100 benchmark of DKD (configs/cifar100/dkd/*.yaml, its README's 11 pairs) with
# ReviewKD, DIST and OFD on the same pairs, every method with its defaults (docs/methods.md, "Methods"). Needs the
# teachers of scripts/run_cifar_teachers.sh. Summarise with: python tools/report.py
#
# The configs' recipe is ours by default: 240 epochs, batch 64, lr 0.05 decayed at 150,180,210, weight
# decay 5e-4, lr 0.01 for the MobileNetV2 and ShuffleNet students. DKD's per-pair beta (8; 6 for the
# wrn_40_2 and vgg13 teachers' pairs; 2 for resnet56:resnet20 and resnet110:resnet32) is --distill dkd's
# default. ReviewKD uses mdistiller's 5.0 everywhere; dvlab-research/ReviewKD's own scripts use
# -b 8 for resnet32x4:ShuffleV2, -b 0.6 for resnet56:resnet20 and -b 1 for resnet110:resnet32.
# Cells of one teacher and trial train as packs (one teacher pass per batch); PACK=0: one run per cell.
set -euo pipefail
source "$(dirname "$0")/common.sh"

PAIRS_SAME="resnet56:resnet20 resnet110:resnet32 resnet32x4:resnet8x4 wrn_40_2:wrn_16_2 wrn_40_2:wrn_40_1 vgg13:vgg8"
PAIRS_CROSS="resnet32x4:ShuffleV1 wrn_40_2:ShuffleV1 vgg13:MobileNetV2 ResNet50:MobileNetV2 resnet32x4:ShuffleV2"
PAIRS=${PAIRS:-"$PAIRS_SAME $PAIRS_CROSS"}
METHODS=${METHODS:-"dkd reviewkd dist ofd"}

pair_cells $METHODS
flush_packs
