# Sourced by the experiment scripts. Every variable they read is described in docs/tables.md ("What the
# scripts read"); the usual ones:
#   TRIALS="0 1 2" GPU=0 bash scripts/run_cifar_distill.sh
#   DRY_RUN=1 bash scripts/run_cifar_distill.sh      # print the commands instead of running them
#   EXTRA="--epochs 1" bash scripts/run_cifar_distill.sh   # flags appended to every training command
#   SLURM=1 SBATCH_PARTITION=gpu bash scripts/run_cifar_distill.sh   # one Slurm job array, a task per command
# Running a script again finishes what it started: finished runs are skipped, interrupted ones resumed.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# The project's virtual environment (scripts/quickstart.sh makes it) when there is one, so the scripts work
# without activating it; PYTHON=... picks another interpreter.
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python; fi
fi
GPU=${GPU:-0}
TRIALS=${TRIALS:-0}  # one trial: the report's ± std stays empty; TRIALS="0 1 2" for the spread
DATA=${DATA:-./data}
TEACHERS=${TEACHERS:-./save/teachers/models}
RESUME=${RESUME:-1}
SLURM=${SLURM:-0}
SLURM_LOGS=${SLURM_LOGS:-./save/slurm}

# Every command of the scripts is a training run; EXTRA's flags come last, so they override the script's own
# (argparse keeps the last value of a repeated flag; in a pack they also end every member's flags, see
# _flush_pack). It is split on spaces: no quoting inside it. A command runs through tools/table_cell.py
# (RESUME=0: as printed, but for Slurm tasks), which skips it when its runs finished and adds --resume auto when one has a
# checkpoint; with SLURM=1 it becomes a task of the script's job array instead (submitted at the end).
run() {
    # shellcheck disable=SC2086
    set -- "$@" ${EXTRA:-}
    echo "$*"
    if [ "$RESUME" != 0 ] || [ "$SLURM" != 0 ]; then  # a requeued Slurm task must resume: always
        set -- "$1" -m tools.table_cell "${@:2}"
    fi
    if [ "$SLURM" != 0 ]; then
        printf '%q ' "$@" >> "$_SLURM_TASKS"
        echo >> "$_SLURM_TASKS"
    elif [ -z "${DRY_RUN:-}" ]; then
        "$@"
    fi
}

# SLURM=1: the commands are written to $SLURM_LOGS/<script>_<time>/tasks.txt, one per line, and submitted when
# the script ends (without an error) as one job array of scripts/slurm/table_task.sbatch, one task per line.
# sbatch reads its own SBATCH_* variables (SBATCH_PARTITION, SBATCH_TIMELIMIT, SBATCH_ACCOUNT, SBATCH_GPUS,
# SBATCH_QOS...); SBATCH_ARGS adds any other option; SLURM_ARRAY_LIMIT caps the tasks running at once.
if [ "$SLURM" != 0 ]; then
    if [ -z "${DRY_RUN:-}" ] && ! command -v sbatch > /dev/null; then
        echo "SLURM=$SLURM: sbatch is not on PATH; run this on a Slurm login node, or without SLURM" >&2
        exit 2
    fi
    _SLURM_DIR="$SLURM_LOGS/$(basename "$0" .sh)_$(date +%Y%m%d-%H%M%S)"
    mkdir -p "$_SLURM_DIR"
    _SLURM_TASKS="$_SLURM_DIR/tasks.txt"
    : > "$_SLURM_TASKS"
    trap '_submit_array $?' EXIT
fi

_submit_array() {
    [ "$1" = 0 ] || exit "$1"
    local count
    count=$(wc -l < "$_SLURM_TASKS")
    if [ "$count" = 0 ]; then
        echo "no command to submit"
        return
    fi
    # shellcheck disable=SC2086
    local submit=(sbatch --parsable --array="0-$((count - 1))${SLURM_ARRAY_LIMIT:+%$SLURM_ARRAY_LIMIT}"
                  --job-name="kdzoo_$(basename "$0" .sh)" --chdir="$PWD" --output="$_SLURM_DIR/%A_%a.log"
                  ${SBATCH_ARGS:-} scripts/slurm/table_task.sbatch "$_SLURM_TASKS")
    echo "${submit[*]}"
    [ -z "${DRY_RUN:-}" ] || return 0
    local job
    job=$("${submit[@]}") || exit 1
    echo "submitted job array $job: $count tasks (one line of $_SLURM_TASKS each), logs in $_SLURM_DIR/${job%%;*}_<task>.log"
}

# The teacher checkpoint train_teacher.py writes for a CIFAR-100 model with --trial 0.
teacher() {
    echo "$TEACHERS/$1_vanilla/$1_best.pth"
}

# Packed runs (docs/methods.md, "Packed runs"): a table script hands each of its cells to student_cell; cells that
# share everything but the student and the method (teacher, data, recipe, trial, launcher flags) are
# trained together as one train_student.py pack, one teacher pass per batch, and flush_packs (called at
# the script's end) runs what is left.
#   PACK=0        one train_student.py run per cell, as before packs
#   PACK_MAX=8    members per pack (0: no limit; a pack's step takes about K students' compute)
PACK=${PACK:-1}
PACK_MAX=${PACK_MAX:-8}
declare -A _PACK_SIZE=() _PACK_STUDENTS=() _PACK_METHODS=() _PACK_FIRST=()
_PACK_KEYS=()

# student_cell <shared train_student.py flags...> -- <student> <method> [the method's flags...]
student_cell() {
    local shared=()
    while [ "$1" != "--" ]; do shared+=("$1"); shift; done
    shift
    local student=$1
    shift
    if [ "$PACK" = 0 ]; then
        run $PYTHON train_student.py "${shared[@]}" --model_s "$student" --distill "$@"
        return
    fi
    local key member
    key=$(printf '%q ' "${shared[@]}")
    member=$(pack_member "$@")
    if [ -z "${_PACK_SIZE[$key]+set}" ]; then
        _PACK_KEYS+=("$key")
        _PACK_SIZE[$key]=0
    fi
    if [ "${_PACK_SIZE[$key]}" = 0 ]; then
        _PACK_STUDENTS[$key]=$student
        _PACK_METHODS[$key]=$member
        _PACK_FIRST[$key]=$(printf '%q ' "$student" "$@")
    else
        _PACK_STUDENTS[$key]+=",$student"
        _PACK_METHODS[$key]+=",$member"
    fi
    _PACK_SIZE[$key]=$(( ${_PACK_SIZE[$key]} + 1 ))
    if [ "$PACK_MAX" -gt 0 ] && [ "${_PACK_SIZE[$key]}" -ge "$PACK_MAX" ]; then
        _flush_pack "$key"
    fi
}

# pair_cells <method spec>...: a CIFAR-100 table's cells, each teacher:student pair of $PAIRS with each method
# spec ("crd -a 0 -b 0.8") and each trial of $TRIALS, the teacher's checkpoint from teacher(). A script that
# defines skip_cell <teacher> <student> <method spec> leaves out the cells for which it succeeds.
pair_cells() {
    local pair t s method trial
    for pair in $PAIRS; do
        t=${pair%%:*}; s=${pair##*:}
        for method in "$@"; do
            if declare -F skip_cell > /dev/null && skip_cell "$t" "$s" "$method"; then
                continue
            fi
            for trial in $TRIALS; do
                student_cell --path_t "$(teacher $t)" --trial $trial --gpu_id $GPU --data_folder $DATA -- $s $method
            done
        done
    done
}

# "crd -a 0 -b 0.8 --plain_ft" -> "crd:a=0:b=0.8:plain_ft", a member of train_student.py --distill
pack_member() {
    local options
    options=$(member_options refuse "$@") || return 1
    echo "$1$options"
}

# member_options <refuse|skip> <method> [flags...]: the flags as a member's ":key[=value]" options; a value
# holding ':' or ',' cannot be written there: 'refuse' fails with one line, 'skip' leaves that flag out
member_options() {
    local on_bad=$1 spec=$2 options=""
    shift 2
    while [ $# -gt 0 ]; do
        local key=${1#-}
        key=${key#-}
        if [[ $key != *=* ]] && [ $# -gt 1 ] && { [[ $2 != -* ]] || [[ $2 =~ ^-[0-9.] ]]; }; then
            key="$key=$2"
            shift
        fi
        shift
        if [[ $key == *[:,]* ]]; then
            [ "$on_bad" = skip ] && continue
            echo "cannot pack '$spec ... $key': a member's flag values cannot hold ':' or ','; run with PACK=0" >&2
            return 1
        fi
        options+=":$key"
    done
    echo "$options"
}

_flush_pack() {
    local key=$1
    [ "${_PACK_SIZE[$key]}" -gt 0 ] || return 0
    local shared cell students=${_PACK_STUDENTS[$key]}
    eval "shared=($key)"
    if [ "${_PACK_SIZE[$key]}" = 1 ]; then  # a pack of one is the plain run
        eval "cell=(${_PACK_FIRST[$key]})"
        run $PYTHON train_student.py "${shared[@]}" --model_s "${cell[0]}" --distill "${cell[@]:1}"
    else
        local list s same=1
        IFS=, read -ra list <<< "$students"
        for s in "${list[@]}"; do
            [ "$s" = "${list[0]}" ] || same=0
        done
        [ $same = 0 ] || students=${list[0]}  # one student for every member: named once
        # EXTRA's flags end every member's too (a member's own flags come after the shared line), except those
        # whose values a member cannot hold (':' or ','): these reach the shared line only
        local extra members
        # shellcheck disable=SC2086
        extra=$(member_options skip - ${EXTRA:-})
        members=${_PACK_METHODS[$key]//,/$extra,}$extra
        run $PYTHON train_student.py "${shared[@]}" --model_s "$students" --distill "$members"
    fi
    _PACK_SIZE[$key]=0
}

flush_packs() {
    local key
    for key in "${_PACK_KEYS[@]}"; do
        _flush_pack "$key"
    done
}

# in_list <word> <list>: whether the word is one of the list's (a table script's pairs that run a row)
in_list() {
    # shellcheck disable=SC2086
    [[ " $(echo $2) " == *" $1 "* ]]
}
