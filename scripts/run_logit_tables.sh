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
#   TTM and WTTM (Zheng and Yang, ICLR 2024; zkxufo/TTM, README's two tables = the paper's Tables 1-4, 13 pairs)
#       and WTTM+CRD: each pair with the paper's own gamma (--ttm_l) and beta (TTM_SET below, from its appendix
#       A.4, Tables 8 and 9); WTTM+CRD weighs WTTM by beta (-a) and CRD by 0.8 (-b; A.5), as the README's
#       command (crd --add wttm --ttm_l 0.2 -b 0.8 -a 4, its vgg13 -> vgg8 values). WTTM+ITRD: itrd --add wttm,
#       WTTM weighed by its beta (-a), ITRD by 1 (-b, itrd's default) with A.5's ITRD weights: --lambda_corr 2,
#       --lambda_mutual 1 (0 for ResNet50 -> MobileNetV2, ResNet50 -> vgg8 and wrn_40_2 -> ShuffleV1), --alpha_it
#       1.01 on the same-architecture pairs (Table 8's), 1.5 on the others (Table 9's).
#   RLD (zju-SWJ/RLD, configs/cifar100/rld, the LS pairs): rld's defaults (ALPHA 1, BETA 8, T 4, --same-t).
#       Its published numbers are as a later README quotes them (tools/published_top1.csv); the paper's per-pair
#       alpha and beta were not read: a sentence quoted from it says RLD "generally prefers larger" alpha than DKD's 1.
#
# METHODS (default: every row) picks rows by name: kd kd+ls ctkd ctkd+ls dkd dkd+ls mlkd mlkd+ls ttm wttm
# wttm+crd wttm+itrd rld. PAIRS (default: the union of the tables' pairs) narrows the pairs; a row runs only on the
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
METHODS=${METHODS:-"kd kd+ls ctkd ctkd+ls dkd dkd+ls mlkd mlkd+ls ttm wttm wttm+crd wttm+itrd rld"}

# pair -> gamma and beta of TTM, of WTTM, of WTTM+CRD and of WTTM+ITRD: the TTM paper's appendix A.4, Table 8 (same
# architecture) and Table 9 (different architectures); its markdown conversion runs Table 8's TTM and WTTM
# rows' labels together, but each column holds four (gamma, beta) in the order TTM, WTTM, WTTM+CRD, WTTM+ITRD
# (the README's vgg13 -> vgg8 commands are the first and the third).
declare -A TTM_SET=(
    [wrn_40_2:wrn_16_2]="0.1 101 0.1 4 0.1 4 0.3 6"
    [wrn_40_2:wrn_40_1]="0.1 76 0.1 3 0.1 2 0.4 0.08"
    [resnet56:resnet20]="0.3 7 0.3 1.5 0.3 0.6 0.5 5"
    [resnet110:resnet20]="0.2 8 0.2 2 0.2 1.4 0.3 1.5"
    [resnet110:resnet32]="0.1 33 0.1 1.5 0.2 1 0.3 0.015"
    [resnet32x4:resnet8x4]="0.1 100 0.1 3 0.2 4 0.1 1.5"
    [vgg13:vgg8]="0.1 45 0.1 2.25 0.2 4 0.1 0.5"
    [vgg13:MobileNetV2]="0.2 16 0.2 3 0.3 4.2 0.3 0.03"
    [ResNet50:MobileNetV2]="0.2 20 0.2 5 0.3 3 0.2 0.02"
    [ResNet50:vgg8]="0.1 70 0.1 2 0.1 3 0.1 1"
    [resnet32x4:ShuffleV1]="0.2 12 0.2 1.4 0.2 0.4 0.3 0.6"
    [resnet32x4:ShuffleV2]="0.4 40 0.4 16 0.4 12 0.4 0.8"
    [wrn_40_2:ShuffleV1]="0.3 8 0.3 3 0.2 0.16 0.1 0.2"
)

# row name -> its train_student.py method spec
declare -A SPEC=(
    [kd]="kd" [kd+ls]="kd --logit_stand"
    [ctkd]="ctkd" [ctkd+ls]="ctkd --logit_stand"
    [dkd]="dkd" [dkd+ls]="dkd --logit_stand"
    [mlkd]="mlkd" [mlkd+ls]="mlkd --logit_stand"
    [ttm]="ttm" [wttm]="wttm" [wttm+crd]="crd --add wttm -b 0.8"  # with TTM_SET's --ttm_l and weight
    [wttm+itrd]="itrd --add wttm -b 1 --lambda_corr 2"  # and the pair's --lambda_mutual and --alpha_it
    [rld]="rld"
)

for pair in $PAIRS; do
    t=${pair%%:*}; s=${pair##*:}
    for row in $METHODS; do
        [ -n "${SPEC[$row]+set}" ] || { echo "unknown row '$row' in METHODS" >&2; exit 2; }
        case $row in
            ttm|wttm|wttm+crd|wttm+itrd) table=$TTM_PAIRS ;;
            *) table=$LS_PAIRS ;;
        esac
        in_list "$pair" "$table" || continue
        recipe=() lr=() spec=${SPEC[$row]}
        if [[ $row == *ttm* ]]; then
            read -r g_ttm b_ttm g_wttm b_wttm g_crd b_crd g_itrd b_itrd <<< "${TTM_SET[$pair]}"
            case $row in
                ttm) spec+=" --ttm_l $g_ttm -b $b_ttm" ;;
                wttm) spec+=" --ttm_l $g_wttm -b $b_wttm" ;;
                wttm+crd) spec+=" --ttm_l $g_crd -a $b_crd" ;;
                wttm+itrd)
                    spec+=" --ttm_l $g_itrd -a $b_itrd"
                    case $pair in  # A.5: no mutual-information term on three pairs
                        ResNet50:MobileNetV2|ResNet50:vgg8|wrn_40_2:ShuffleV1) spec+=" --lambda_mutual 0" ;;
                        *) spec+=" --lambda_mutual 1" ;;
                    esac
                    case $pair in  # A.5: alpha_it 1.01 on the same-architecture pairs (Table 8), 1.5 else
                        wrn_40_2:wrn_16_2|wrn_40_2:wrn_40_1|resnet*:resnet*|vgg13:vgg8) spec+=" --alpha_it 1.01" ;;
                        *) spec+=" --alpha_it 1.5" ;;
                    esac ;;
            esac
        fi
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
                -- $s $spec "${lr[@]}"
        done
    done
done
flush_packs
