#!/usr/bin/env bash
# The ImageNet rows of the seeds' tables: ResNet34 -> ResNet18 and ResNet50 -> MobileNetV1 by KD, DKD, ReviewKD,
# SimKD, CRD, SRRL, NORM, MKL and NTCE-KD (NTCE-KD's table) and ND's KD++, DKD++, ReviewKD++ (ND's table 1.2),
# each with its ImageNet defaults (the run prints the weights it uses; SimKD's are the SimKD repo's command,
# -c 0 -d 0 -b 1); and NORM's Table 3 columns SSKD and ONE for ResNet34 -> ResNet18 (ResNet-18 alone for ONE).
# Recipe: the SimKD repo's ImageNet command (batch 256, 120 epochs, lr 0.1 x0.1 after 30, 60 and 90, weight decay
# 1e-4, 32 loader workers), one process per GPU of $GPUS, DALI decoding on the GPU. Summarise with tools/report.py.
# Per method on top of it: NTCE-KD doubles the epochs and the decay epochs and halves the weight decay (what the
# reference's NTCE.ISAUG switch does); SSKD's teacher SS head trains 30 epochs at lr 0.1, x0.1 after 10 and 20
# (torchdistill's ImageNet reproduction; the official SSKD code has no ImageNet recipe), its loss weights are the
# official code's; ONE trains with train_online_mcl.py --arch one_ResNet18 (3 branches owning layer3 and layer4).
#
#   GPUS=0,1,2,3 DALI=gpu PORT=23444 bash scripts/run_imagenet_tables.sh
#   NODES=2 NODE_RANK=0 MASTER=10.0.0.1 bash scripts/run_imagenet_tables.sh   # on each node, NODE_RANK 0 and 1
#   TRAIN_TEACHERS=1 ...       # also train the two teachers first (else put them where TEACHER_R34/_R50 point)
#   DALI= ...                  # read the folders with PIL instead of DALI
#   PACK=0 ...                 # one run per cell (default: the cells of one teacher and trial train as packs
#                                of up to PACK_MAX=8 students, one teacher pass per batch)
# ImageNet's train/<wnid>/*.JPEG and val/<wnid>/*.JPEG are under $IMAGENET_DATA. The ++ methods compute the
# teacher's class centres when they are missing; in a multi-process job compute them once beforehand, e.g.
#   python tools/nd_centers.py --path_t $TEACHER_R34 --dataset imagenet --data_folder $IMAGENET_DATA
set -euo pipefail
source "$(dirname "$0")/common.sh"

GPUS=${GPUS:-0,1,2,3}
DALI=${DALI-gpu}
PORT=${PORT:-23444}
NODES=${NODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER=${MASTER:-127.0.0.1}
IMAGENET_DATA=${IMAGENET_DATA:-./data/imagenet}
TEACHER_R34=${TEACHER_R34:-$TEACHERS/ResNet34_vanilla_imagenet_trial_0/ResNet34_best.pth}
TEACHER_R50=${TEACHER_R50:-$TEACHERS/ResNet50_vanilla_imagenet_trial_0/ResNet50_best.pth}

RECIPE="--dataset imagenet --data_folder $IMAGENET_DATA --batch_size 256 --epochs 120 --learning_rate 0.1 \
--lr_decay_epochs 30,60,90 --weight_decay 1e-4 --num_workers 32"
LAUNCH="--gpu_id $GPUS --multiprocessing-distributed --dist-url tcp://$MASTER:$PORT --world-size $NODES \
--rank $NODE_RANK${DALI:+ --dali $DALI}"

# --distill name and weights (empty: the method's ImageNet defaults for the pair), then after '|' flags that
# override the recipe (or carry values a pack member cannot: such a cell trains in a pack of its own)
METHODS=(
    "kd"
    "dkd"
    "reviewkd"
    "simkd -c 0 -d 0 -b 1"
    "crd"
    "srrl"
    "norm"
    "mkl"
    "ntce|--epochs 240 --lr_decay_epochs 60,120,180 --weight_decay 5e-5"
    "kd++"
    "dkd++"
    "reviewkd++"
)
# NORM's Table 3 compares SSKD (and ONE, below) on ResNet34 -> ResNet18 only
METHODS_R18=(
    "sskd|--init_epochs 30 --t_lr 0.1 --t_milestones 10 20"
)

if [ -n "${TRAIN_TEACHERS:-}" ] && [ "$TRAIN_TEACHERS" != 0 ]; then
    for t in ResNet34 ResNet50; do
        run $PYTHON train_teacher.py --model $t $RECIPE $LAUNCH --trial 0
    done
fi

for pair in "$TEACHER_R34:ResNet18" "$TEACHER_R50:MobileNetV1"; do
    path_t=${pair%:*}; s=${pair##*:}
    methods=("${METHODS[@]}")
    if [ "$s" = ResNet18 ]; then
        methods+=("${METHODS_R18[@]}")
    fi
    for entry in "${methods[@]}"; do
        method=${entry%%|*}
        override=""
        if [ "$method" != "$entry" ]; then
            override=${entry#*|}
        fi
        for trial in $TRIALS; do
            student_cell --path_t "$path_t" $RECIPE $override $LAUNCH --trial $trial -- $s $method
        done
    done
done
flush_packs

# ONE (online, no teacher): ResNet-18 with 3 branches, the same recipe
for trial in $TRIALS; do
    run $PYTHON train_online_mcl.py --arch one_ResNet18 $RECIPE $LAUNCH --trial $trial
done
