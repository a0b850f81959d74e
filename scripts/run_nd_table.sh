#!/usr/bin/env bash
# ND's CIFAR-100 table (seed 002, its README's table 1.1): KD++, DKD++, DIST++ and ReviewKD++ on its six
# teacher:student pairs. Needs the teachers of scripts/run_cifar_teachers.sh; each teacher's class centres
# are computed on first use and kept beside its checkpoint (or run tools/nd_centers.py first).
# Summarise with: python tools/report.py (ND reports the best epoch).
#
# ND's recipe: batch 128 (its scripts' 64 per GPU on two GPUs), 240 epochs, lr x0.1 after epochs 150, 180
# and 210, weight decay 5e-4, Nesterov SGD, lr 0.1; ND's scripts show 0.02 for the ShuffleV1/ShuffleV2 students and give
# no MobileNetV2 lr, which gets 0.02 here too (unverified). The KD-type term is warmed up over 20 epochs
# (--nd_warmup, the default). Weights are those of ND's train_cifar.sh, DIST++/train_dist.sh and
# ReviewKD++/train_reviewkd.sh; they are also the defaults of the four names, spelled out here.
# Cells of one teacher and trial train as packs (one teacher pass per batch); PACK=0: one run per cell.
set -euo pipefail
source "$(dirname "$0")/common.sh"

PAIRS=${PAIRS:-"resnet56:resnet20 resnet32x4:resnet8x4 wrn_40_2:wrn_40_1 ResNet50:MobileNetV2 resnet32x4:ShuffleV1 resnet32x4:ShuffleV2"}
RECIPE="--batch_size 128 --epochs 240 --lr_decay_epochs 150,180,210 --weight_decay 5e-4 --nesterov"

for pair in $PAIRS; do
    t=${pair%%:*}; s=${pair##*:}
    case $s in
        ShuffleV1|ShuffleV2|MobileNetV2) lr=0.02 ;;
        *) lr=0.1 ;;
    esac
    # KD++: kd nd | DKD++: alpha (TCKD) beta (NCKD) nd | DIST++: dist nd | ReviewKD++: review nd (CE 1 throughout)
    case $pair in
        resnet56:resnet20)    kd="1.0 2.0"; dkd="2.5 4.0 3.5"; dist="2.0 1.0"; review="1.2 1.0" ;;
        resnet32x4:resnet8x4) kd="3.5 2.0"; dkd="2.0 8.0 0.5"; dist="1.5 4.0"; review="8.0 1.0" ;;
        wrn_40_2:wrn_40_1)    kd="1.0 1.5"; dkd="1.0 6.0 1.0"; dist="2.5 3.0"; review="5.0 4.0" ;;
        ResNet50:MobileNetV2) kd="3.0 0.5"; dkd="0.5 8.0 1.0"; dist="7.0 1.0"; review="6.0 2.0" ;;
        resnet32x4:ShuffleV1) kd="2.5 1.5"; dkd="0.5 8.0 4.0"; dist="2.5 3.0"; review="7.0 1.0" ;;
        resnet32x4:ShuffleV2) kd="4.0 0.5"; dkd="0.5 6.0 0.5"; dist="3.0 4.0"; review="8.0 1.5" ;;
        *) echo "no ND weights for $pair" >&2; exit 1 ;;
    esac
    read -r kd_weight kd_nd <<< "$kd"
    read -r dkd_alpha dkd_beta dkd_nd <<< "$dkd"
    read -r dist_weight dist_nd <<< "$dist"
    read -r review_weight review_nd <<< "$review"
    METHODS=(
        "kd++ -r 1 -a $kd_weight -b 0 --nd_weight $kd_nd"
        "dkd++ -r 1 -a 0 -b 1 --dkd_alpha $dkd_alpha --dkd_beta $dkd_beta --nd_weight $dkd_nd"
        "dist++ -r 1 -a 0 -b $dist_weight --nd_weight $dist_nd"
        "reviewkd++ -r 1 -a 0 -b $review_weight --nd_weight $review_nd"
    )
    for method in "${METHODS[@]}"; do
        for trial in $TRIALS; do
            # the lr is the student's: a member flag, so that one teacher's students share a pack
            student_cell --path_t "$(teacher $t)" $RECIPE --trial $trial --gpu_id $GPU --data_folder $DATA \
                -- $s $method --learning_rate $lr
        done
    done
done
flush_packs
