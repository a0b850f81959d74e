#!/usr/bin/env bash
# The two CIFAR-100 tables of the L-MCL README (seed 003): every homogeneous and heterogeneous pair
# trained by L-MCL, and every network of both tables alone (the "Baseline" column). The L-MCL recipe is
# train_online_mcl.py's default: 300 epochs, batch 128 (2 images per class), Nesterov SGD, cosine lr 0.1,
# weight decay 5e-4, alpha 0.1, gamma 1, beta 0.1, lam 1, tau 0.1, kd_T 3, meta-freq 50, times 2.
set -euo pipefail
source "$(dirname "$0")/common.sh"

for trial in $TRIALS; do
    # Homogeneous pairs: ResNet-32/56/110, WRN-16-2/40-2, ShuffleNetV2 0.5x/1x, HCGNet-A1/A2.
    for arch in lmcl_resnet32_cifar lmcl_resnet56_cifar lmcl_resnet110_cifar lmcl_wrn_16_2_cifar \
                lmcl_wrn_40_2_cifar lmcl_ShuffleNetV2_05x_cifar lmcl_ShuffleNetV2_1x_cifar \
                lmcl_hcgnet_A1_cifar lmcl_hcgnet_A2_cifar; do
        run $PYTHON train_online_mcl.py --arch $arch --number-net 2 --trial $trial --gpu_id $GPU --data_folder $DATA
    done
    # Heterogeneous pairs, in the table's order.
    for arch in lmcl_res32_res110_cifar lmcl_res56_res110_cifar lmcl_wrn_16_2_wrn_40_2_cifar \
                lmcl_wrn_40_2_wrn_28_4_cifar lmcl_res56_wrn_40_2_cifar lmcl_res110_wrn_28_4_cifar \
                lmcl_shufflev2_res110_cifar lmcl_shufflev2_wrn_40_2_cifar; do
        run $PYTHON train_online_mcl.py --arch $arch --trial $trial --gpu_id $GPU --data_folder $DATA
    done
    # Baselines (main_cifar_baseline.py): each network of both tables alone, cross-entropy only.
    for arch in resnet32_cifar resnet56_cifar resnet110_cifar wrn_16_2_cifar wrn_40_2_cifar wrn_28_4_cifar \
                ShuffleNetV2_05x_cifar ShuffleNetV2_1x_cifar hcgnet_A1_cifar hcgnet_A2_cifar; do
        run $PYTHON train_online_mcl.py --arch $arch --baseline --trial $trial --gpu_id $GPU --data_folder $DATA
    done
done
