#!/usr/bin/env bash
# The CIFAR-100 tables of the recent logit methods. Needs the teachers of scripts/run_cifar_teachers.sh.
# Summarise with: python tools/report.py (the numbers they target are in tools/published_top1.csv and
# docs/tables.md, "Logit methods").
#
#   LS (Sun et al., CVPR 2024; sunshangquan/logit-standardization-KD, README's two tables, 14 pairs): KD, CTKD,
#       DKD and MLKD, each without and with --logit_stand (the README's per-pair --base-temp/--kd-weight are
#       the modifier's defaults). KD, DKD, CTKD: 240 epochs, lr 0.05 (0.01 for the MobileNetV2 and
#       ShuffleNet students), as mdistiller's and CTKD's scripts. MLKD: LS's configs/cifar100/mlkd, 480 epochs
#       (960 for resnet32x4 -> ShuffleV2), lr 0.025 (0.01 for MobileNetV2 and ShuffleV2), lr x0.1 after
#       epochs 150, 180 and 210 whatever the length (the MLKD repository's own configs, behind the MLKD numbers LS
#       quotes, train its same-family pairs 240 epochs).
#   TTM and WTTM (Zheng and Yang, ICLR 2024; zkxufo/TTM, README's two tables, 13 pairs) and WTTM+CRD: every
#       pair with the README's only commands (ttm: --ttm_l 0.1 -b 45; crd --add wttm --ttm_l 0.2 -b 0.8 -a 4)
#       and wttm's defaults (--ttm_l 0.2 -b 4); the paper's per-pair values (its appendix) are not read here.
#   RLD (zju-SWJ/RLD, configs/cifar100/rld, the LS pairs): rld's defaults (ALPHA 1, BETA 8, T 4, --same-t).
#       No published number was read for it (tools/published_top1.csv says so).
#
# METHODS (default: every row) picks rows by name: kd kd+ls ctkd ctkd+ls dkd dkd+ls mlkd mlkd+ls ttm wttm
# wttm+crd rld. PAIRS (default: the union of the tables' pairs) narrows the pairs; a row runs only on the
# pairs of its own table. Cells of one teacher, recipe and trial train as packs (one teacher pass per
# batch); PACK=0: one run per cell.
set -euo pipefail
source "$(dirname "$0")/common.sh"

LS_PAIRS="resnet32x4:resnet8x4 vgg13:vgg8 wrn_40_2:wrn_40_1 wrn_40_2:wrn_16_2 resnet56:resnet20 resnet110:resnet32
resnet110:resnet20 resnet32x4:ShuffleV2 resnet32x4:wrn_16_2 resnet32x4:wrn_40_2 wrn_40_2:resnet8x4
wrn_40_2:MobileNetV2 vgg13:MobileNetV2 ResNet50:MobileNetV2"
TTM_PAIRS="wrn_40_2:wrn_16_2 wrn_40_2:wrn_40_1 resnet56:resnet20 resnet110:resnet20 resnet110:resnet32
resnet32x4:resnet8x4 vgg13:vgg8 vgg13:MobileNetV2 ResNet50:MobileNetV2 ResNet50:vgg8 resnet32x4:ShuffleV1
resnet32x4:ShuffleV2 wrn_40_2:ShuffleV1"
PAIRS=${PAIRS:-"$LS_PAIRS ResNet50:vgg8 resnet32x4:ShuffleV1 wrn_40_2:ShuffleV1"}
METHODS=${METHODS:-"kd kd+ls ctkd ctkd+ls dkd dkd+ls mlkd mlkd+ls ttm wttm wttm+crd rld"}

# row name -> its train_student.py method spec
declare -A SPEC=(
    [kd]="kd" [kd+ls]="kd --logit_stand"
    [ctkd]="ctkd" [ctkd+ls]="ctkd --logit_stand"
    [dkd]="dkd" [dkd+ls]="dkd --logit_stand"
    [mlkd]="mlkd" [mlkd+ls]="mlkd --logit_stand"
    [ttm]="ttm" [wttm]="wttm"
    [wttm+crd]="crd --add wttm --ttm_l 0.2 -b 0.8 -a 4"
    [rld]="rld"
)

for pair in $PAIRS; do
    t=${pair%%:*}; s=${pair##*:}
    for row in $METHODS; do
        [ -n "${SPEC[$row]+set}" ] || { echo "unknown row '$row' in METHODS" >&2; exit 2; }
        case $row in
            ttm|wttm|wttm+crd) table=$TTM_PAIRS ;;
            *) table=$LS_PAIRS ;;
        esac
        in_list "$pair" "$table" || continue
        recipe=() lr=()
        if [[ $row == mlkd* ]]; then
            epochs=480
            [ "$pair" != resnet32x4:ShuffleV2 ] || epochs=960
            recipe=(--epochs $epochs --lr_decay_epochs 150,180,210)
            case $s in
                MobileNetV2|ShuffleV1|ShuffleV2) ;;  # RepDistiller's (and the configs') lr 0.01
                *) lr=(--learning_rate 0.025) ;;
            esac
        fi
        for trial in $TRIALS; do
            # shellcheck disable=SC2086
            student_cell --path_t "$(teacher $t)" "${recipe[@]}" --trial $trial --gpu_id $GPU --data_folder $DATA \
                -- $s ${SPEC[$row]} "${lr[@]}"
        done
    done
done
flush_packs
