# Sourced by the experiment scripts. Edit the variables below, or set them in the environment:
#   TRIALS="0 1 2" GPU=0 bash scripts/run_cifar_distill.sh
#   DRY_RUN=1 bash scripts/run_cifar_distill.sh      # print the commands instead of running them
PYTHON=${PYTHON:-python}
GPU=${GPU:-0}
TRIALS=${TRIALS:-0}
DATA=${DATA:-./data}
TEACHERS=${TEACHERS:-./save/teachers/models}
cd "$(dirname "${BASH_SOURCE[0]}")/.."

run() {
    echo "$*"
    if [ -z "${DRY_RUN:-}" ]; then
        "$@"
    fi
}

# The teacher checkpoint train_teacher.py writes for a CIFAR-100 model with --trial 0.
teacher() {
    echo "$TEACHERS/$1_vanilla/$1_best.pth"
}
