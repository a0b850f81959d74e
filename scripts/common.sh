# Sourced by the experiment scripts. Edit the variables below, or set them in the environment:
#   TRIALS="0 1 2" GPU=0 bash scripts/run_cifar_distill.sh
#   DRY_RUN=1 bash scripts/run_cifar_distill.sh      # print the commands instead of running them
#   EXTRA="--epochs 1" bash scripts/run_cifar_distill.sh   # flags appended to every training command
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# The project's virtual environment (scripts/quickstart.sh makes it) when there is one, so the scripts work
# without activating it; PYTHON=... picks another interpreter.
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python; fi
fi
GPU=${GPU:-0}
TRIALS=${TRIALS:-0}
DATA=${DATA:-./data}
TEACHERS=${TEACHERS:-./save/teachers/models}

# Every command of the scripts is a training run; EXTRA's flags come last, so they override the script's own
# (argparse keeps the last value of a repeated flag). It is split on spaces: no quoting inside it.
run() {
    # shellcheck disable=SC2086
    set -- "$@" ${EXTRA:-}
    echo "$*"
    if [ -z "${DRY_RUN:-}" ]; then
        "$@"
    fi
}

# The teacher checkpoint train_teacher.py writes for a CIFAR-100 model with --trial 0.
teacher() {
    echo "$TEACHERS/$1_vanilla/$1_best.pth"
}
