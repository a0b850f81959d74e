#!/usr/bin/env bash
# The CIFAR-100 rows the recent feature papers report on the RepDistiller pairs. Needs the teachers of
# scripts/run_cifar_teachers.sh. Summarise with: python tools/report.py (the numbers they target are in
# tools/published_top1.csv and docs/tables.md, "Feature methods").
#
#   ITRD (Miles et al., BMVC 2022; roymiles/ITRD, README's two tables, 13 pairs): the README's command on every
#       pair, -r 1 -b 1 --lambda_corr 2 --lambda_mutual 1 --alpha_it 1.01 (itrd's defaults but --alpha_it).
#   ICKD (Liu et al., ICCV 2021; ADLab-AutoDrive/ICKD, Cifar100/README.md, 7 pairs): "ICKD-C (w/o KL)", ickd's
#       defaults (-a 0 -b 2.5), and "ICKD-C", the same with KD (-a 1).
#   SDD (Wei et al., CVPR 2024; shicaiwei123/SDD-CVPR2024, cifar100.png in its root, 6 cross-architecture
#       pairs): KD, DKD, NKD and their SD- versions with sdd_kd/sdd_dkd/sdd_nkd's per-pair defaults. Its NKD
#       row is SDD's CIFAR port of NKD (all-class mask, T 1, gamma 1.5: --nkd_all_classes --nkd_T 1
#       --nkd_gamma 1.5; the port's DKD-style warm-up is not reproduced).
#   CAT-KD (Guo et al., CVPR 2023; GzyAftermath/CAT-KD, configs/cifar100/CAT_KD, 11 pairs) and FCFD (Liu et al.,
#       ICLR 2023; LiuDongyang6/FCFD, classification/experiments/cifar and the 10 pairs of classification/README.md):
#       catkd's and fcfd's per-pair defaults, which are those configs'; fcfd with --nesterov, as FCFD's train
#       scripts. CAT-KD's published values are the LS paper's quotes (Tables 1-2, 9 of the 11 pairs); FCFD has none
#       (tools/published_top1.csv says why).
# Every row trains the RepDistiller recipe (240 epochs, lr 0.05, 0.01 for the MobileNetV2 and ShuffleNet
# students, as the official codes). No CIFAR-100 number of SRD, FCFD or MGD, nor CAT-KD's own, could be read
# here: SRD and MGD have no row, FCFD's rows have no published values. CAT-KD's and FCFD's CIFAR-100 tables are in
# their papers only (GzyAftermath/CAT-KD's README and LiuDongyang6/FCFD's classification/README.md give commands,
# no results), and the stored copies of the papers reachable here show their first pages, not the tables. SRD's
# authors publish no CIFAR code or config (roymiles/Simple-Recipe-Distillation: ImageNet and DeiT only); MGD
# reports none.
#
# METHODS (default: every row) picks rows by name: itrd ickd ickd+kd kd dkd nkd sdd_kd sdd_dkd sdd_nkd
# catkd fcfd.
# PAIRS (default: the union of the tables' pairs) narrows the pairs; a row runs only on the pairs of its own
# table. Cells of one teacher and trial train as packs (one teacher pass per batch); PACK=0: one run per cell.
set -euo pipefail
source "$(dirname "$0")/common.sh"

ITRD_PAIRS="wrn_40_2:wrn_16_2 wrn_40_2:wrn_40_1 resnet56:resnet20 resnet110:resnet20 resnet110:resnet32
resnet32x4:resnet8x4 vgg13:vgg8 vgg13:MobileNetV2 ResNet50:MobileNetV2 ResNet50:vgg8 resnet32x4:ShuffleV1
resnet32x4:ShuffleV2 wrn_40_2:ShuffleV1"
ICKD_PAIRS="wrn_40_2:wrn_16_2 wrn_40_2:wrn_40_1 resnet56:resnet20 resnet110:resnet20 resnet110:resnet32
resnet32x4:resnet8x4 vgg13:vgg8"
SDD_PAIRS="resnet32x4:ShuffleV1 wrn_40_2:ShuffleV1 ResNet50:MobileNetV2 vgg13:MobileNetV2 resnet32x4:ShuffleV2
ResNet50:vgg8"
CATKD_PAIRS="resnet56:resnet20 resnet110:resnet32 resnet32x4:resnet8x4 resnet32x4:ShuffleV1 resnet32x4:ShuffleV2
ResNet50:MobileNetV2 vgg13:MobileNetV2 vgg13:vgg8 wrn_40_2:ShuffleV1 wrn_40_2:wrn_16_2 wrn_40_2:wrn_40_1"
FCFD_PAIRS="resnet32x4:resnet8x4 resnet56:resnet20 wrn_40_2:wrn_16_2 wrn_40_2:wrn_40_1 vgg13:vgg8 resnet32x4:ShuffleV1
wrn_40_2:ShuffleV1 vgg13:MobileNetV2 ResNet50:MobileNetV2 resnet32x4:ShuffleV2"
PAIRS=${PAIRS:-"$ITRD_PAIRS"}
METHODS=${METHODS:-"itrd ickd ickd+kd kd dkd nkd sdd_kd sdd_dkd sdd_nkd catkd fcfd"}

# row name -> its train_student.py method spec
declare -A SPEC=(
    [itrd]="itrd -r 1 -b 1 --lambda_corr 2 --lambda_mutual 1 --alpha_it 1.01"
    [ickd]="ickd" [ickd+kd]="ickd -a 1"
    [kd]="kd" [dkd]="dkd" [nkd]="nkd --nkd_all_classes --nkd_T 1 --nkd_gamma 1.5"
    [sdd_kd]="sdd_kd" [sdd_dkd]="sdd_dkd" [sdd_nkd]="sdd_nkd"
    [catkd]="catkd" [fcfd]="fcfd"
)

for pair in $PAIRS; do
    t=${pair%%:*}; s=${pair##*:}
    for row in $METHODS; do
        [ -n "${SPEC[$row]+set}" ] || { echo "unknown row '$row' in METHODS" >&2; exit 2; }
        case $row in
            itrd) table=$ITRD_PAIRS ;;
            ickd|ickd+kd) table=$ICKD_PAIRS ;;
            catkd) table=$CATKD_PAIRS ;;
            fcfd) table=$FCFD_PAIRS ;;
            *) table=$SDD_PAIRS ;;
        esac
        in_list "$pair" "$table" || continue
        recipe=()
        [ "$row" != fcfd ] || recipe=(--nesterov)  # FCFD's cifar/main.py: SGD with Nesterov momentum
        for trial in $TRIALS; do
            # shellcheck disable=SC2086
            student_cell --path_t "$(teacher $t)" "${recipe[@]}" --trial $trial --gpu_id $GPU --data_folder $DATA \
                -- $s ${SPEC[$row]}
        done
    done
done
flush_packs
