#!/usr/bin/env bash
# Teachers (and vanilla students) of every CIFAR-100 seed table, with RepDistiller's recipe
# (240 epochs, batch 64, lr 0.05 / 0.01 for MobileNet and ShuffleNet, decay at 150/180/210).
# Teachers use --trial 0, the folder that --path_t points at; students run each trial of $TRIALS.
set -euo pipefail
source "$(dirname "$0")/common.sh"

# Teachers of the SimKD, ND, NORM, NTCE-KD and RepDistiller tables; their published top-1 is in tools/published_top1.csv.
for model in resnet32x4 wrn_40_2 resnet56 resnet110 vgg13 ResNet50; do
    run $PYTHON train_teacher.py --model $model --trial 0 --gpu_id $GPU --data_folder $DATA
done

# The students' own baselines (the "Student" rows).
for trial in $TRIALS; do
    for model in resnet8x4 resnet20 resnet32 wrn_16_2 wrn_40_1 vgg8 MobileNetV2 ShuffleV1 ShuffleV2 ShuffleV2_1_5; do
        run $PYTHON train_teacher.py --model $model --trial student_$trial --gpu_id $GPU --data_folder $DATA
    done
done
