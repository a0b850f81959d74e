# Sourced by the sbatch templates (scripts/slurm/*.sbatch): run a command so that a Slurm stop signal ends it
# cleanly and the task is requeued, to continue with --resume auto.
#
# requeueable <command...>: runs the command in the background and waits for it. A stop signal to the batch
# shell (SIGTERM on preemption or scancel, the signal of --signal=B:<sig>@<seconds> before the time limit) is
# passed to the command as SIGTERM: the training scripts then finish writing their epoch files and exit 143.
# A command that ends that way (or after the shell got such a signal) has the task requeued with
# `scontrol requeue`, at most MAX_REQUEUES times (default 20); other exit statuses are the task's own.
# An srun command's processes get the SIGTERM from `scancel --signal=TERM` (every step of the job, not the
# batch shell): srun itself, signalled, would kill its step with SIGKILL.
requeueable() {
    local child="" status signalled=""
    trap 'signalled=1; _pass_stop "$child" "$1"' TERM USR1 USR2 INT
    "$@" &
    child=$!
    [ -z "$signalled" ] || _pass_stop "$child" "$1"   # a signal that came before $! was known
    while :; do
        wait "$child"
        status=$?
        kill -0 "$child" 2>/dev/null || break   # a trapped signal ended the wait, not the command
    done
    trap - TERM USR1 USR2 INT
    if [ "$status" = 143 ] || [ -n "$signalled" ]; then
        local id="${SLURM_ARRAY_JOB_ID:+${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}}"
        id=${id:-$SLURM_JOB_ID}
        if [ "${SLURM_RESTART_COUNT:-0}" -lt "${MAX_REQUEUES:-20}" ]; then
            echo "== stopped (exit status $status); requeueing $id to continue with --resume auto"
            scontrol requeue "$id"
        else
            echo "== stopped (exit status $status); requeued ${SLURM_RESTART_COUNT} times already, not again"
        fi
    fi
    return "$status"
}

_pass_stop() {  # <child pid> <command>
    [ -n "$1" ] || return 0
    if [ "$(basename "$2")" = srun ]; then
        scancel --signal=TERM "$SLURM_JOB_ID"
    else
        kill -TERM "$1" 2>/dev/null
    fi
}
