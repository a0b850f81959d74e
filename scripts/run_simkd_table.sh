#!/usr/bin/env bash
# The SimKD repo's CIFAR-100 table (its README): teacher resnet32x4, students resnet8x4, vgg8 and
# ShuffleV2_1_5; the baselines with the repo's weights (CE and KD fixed at -c 1 -d 1, FitNet on the repo's
# --hint_layer 1), SimKD with -c 0 -d 0 -b 1 at f = 8, 4, 2. These are the commands of the repo's
# scripts/run_distill.sh, run on every student. Needs the teacher and the "Student" rows of
# scripts/run_cifar_teachers.sh. Summarise with: python tools/report.py
#
# IMAGENET=1 adds the repo's ImageNet command (SimKD, ResNet50 -> ResNet18), with ImageNet's train/ and
# val/ under $IMAGENET_DATA and the teacher at $IMAGENET_TEACHER. The repo runs it on four GPUs with
# --multiprocessing-distributed --dist-url tcp://127.0.0.1:23344 --dali gpu; put such launcher flags in
# IMAGENET_LAUNCH (empty: one process on the first GPU of $IMAGENET_GPUS).
# Cells of one teacher and trial train as packs (one teacher pass per batch); PACK=0: one run per cell.
set -euo pipefail
source "$(dirname "$0")/common.sh"

STUDENTS=${STUDENTS:-"resnet8x4 vgg8 ShuffleV2_1_5"}
IMAGENET_DATA=${IMAGENET_DATA:-./data/imagenet}
IMAGENET_TEACHER=${IMAGENET_TEACHER:-$TEACHERS/ResNet50_vanilla_imagenet_trial_0/ResNet50_best.pth}
IMAGENET_GPUS=${IMAGENET_GPUS:-0,1,2,3}
IMAGENET_LAUNCH=${IMAGENET_LAUNCH:-}

# --distill name and its weights, as the SimKD repo's scripts/run_distill.sh
METHODS=(
    "kd -c 1 -d 1 -b 0"
    "hint -c 1 -d 1 -b 100 --hint_layer 1"
    "attention -c 1 -d 1 -b 1000"
    "similarity -c 1 -d 1 -b 3000"
    "vid -c 1 -d 1 -b 1"
    "crd -c 1 -d 1 -b 0.8"
    "semckd -c 1 -d 1 -b 400"
    "srrl -c 1 -d 1 -b 1"
    "simkd -c 0 -d 0 -b 1 -f 8"
    "simkd -c 0 -d 0 -b 1 -f 4"
    "simkd -c 0 -d 0 -b 1 -f 2"
)

for s in $STUDENTS; do
    for method in "${METHODS[@]}"; do
        for trial in $TRIALS; do
            # the run folder names f where it differs from the default 2 (..._b:1_f:8_f8_0), so f = 8, 4, 2
            # never collide; the factor also goes into --trial (f8_0), as it did before folders named
            # method flags, so that tables begun then resume into the same folders
            own=()
            [[ $method == simkd* ]] && own=(--trial "f${method##* }_$trial")
            student_cell --path_t "$(teacher resnet32x4)" --trial $trial --gpu_id $GPU --data_folder $DATA \
                -- $s $method "${own[@]}"
        done
    done
done

if [ -n "${IMAGENET:-}" ] && [ "$IMAGENET" != 0 ]; then
    for trial in $TRIALS; do
        student_cell --path_t "$IMAGENET_TEACHER" --batch_size 256 --epochs 120 --dataset imagenet \
            --learning_rate 0.1 --lr_decay_epochs 30,60,90 --weight_decay 1e-4 --num_workers 32 \
            --gpu_id $IMAGENET_GPUS $IMAGENET_LAUNCH --trial $trial --data_folder $IMAGENET_DATA \
            -- ResNet18 simkd -c 0 -d 0 -b 1
    done
fi
flush_packs
