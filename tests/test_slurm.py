"""A tiny packed table through a real single-node Slurm (tests/slurm_cluster.py starts it): SLURM=1 submits
one array task per pack, one task is sent SIGTERM mid-run and requeues itself, every task finishes, the
report reads every cell, and the weights equal those of the same table run locally (CPU, --deterministic).
Skipped, with the reason, where Slurm and munge are not installed (.ci/run installs them) or not as root."""
import datetime
import glob
import re
import subprocess
import sys
import time

import pytest

import slurm_cluster
from conftest import REPO
from tiny_tables import assert_same_weights, last_weights, run_table, table_env

# one worker starts one Slurm for both tests (`-n 2 --dist loadgroup`, the README's test command)
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group('slurm')]


@pytest.fixture(scope='module')
def slurm():
    why = slurm_cluster.why_not()
    if why is not None:
        pytest.skip(why)
    cluster = slurm_cluster.Cluster()
    try:
        yield cluster.start()
    finally:
        cluster.stop()


def wait_for(ready, timeout, what, cluster):
    end = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > end:
            raise AssertionError(f"{what} did not happen in {timeout} s\n{cluster.logs()}")
        time.sleep(0.05)


def queued(slurm, job):
    """The states of the job's tasks still in the queue. A requeued task, which Slurm holds back a while (its
    BeginTime), is let start two seconds from now: not at once, because slurmd refuses a job credential made in
    the same second as the one it revoked when the task stopped ("Job credential revoked"), and the task would
    end without running."""
    lines = subprocess.run(['squeue', '-h', '-j', job, '-o', '%i %T %S'], env=slurm.env, capture_output=True,
                           text=True, check=True).stdout.split('\n')
    states = [line.split() for line in lines if line.strip()]
    for task, state, start in states:
        if state == 'PENDING' and _later_than(start, seconds=5):
            subprocess.run(['scontrol', 'update', f'JobId={task}', 'StartTime=now+2'], env=slurm.env,
                           capture_output=True)
    return [(task, state) for task, state, _ in states]


def _later_than(start, seconds):
    """Whether squeue's start time (local, ISO; 'N/A' where Slurm has none yet) is more than `seconds` away."""
    try:
        when = datetime.datetime.fromisoformat(start)
    except ValueError:
        return False
    return when > datetime.datetime.now() + datetime.timedelta(seconds=seconds)


def test_table_through_slurm_requeued_after_sigterm(slurm, tmp_path, digits_teacher):
    local, cluster_save, logs = tmp_path / 'local', tmp_path / 'slurm_save', tmp_path / 'logs'
    run_table(table_env(tmp_path, digits_teacher, local))

    env = dict(table_env(tmp_path, digits_teacher, cluster_save), SLURM_CONF=slurm.env['SLURM_CONF'], SLURM='1',
               SLURM_LOGS=str(logs), TINY_EPOCH_PAUSE='1.5', SBATCH_ARGS='--cpus-per-task 1')
    out = run_table(env)
    job = re.search(r'submitted job array (\d+): 2 tasks', out).group(1)
    task_log = glob.glob(str(logs / 'run_mdistiller_dkd_reviewkd_*'))[0] + f'/{job}_0.log'

    # task 0 (trial 0's pack) has written its first epoch: stop it the way a preemption does
    wait_for(lambda: glob.glob(str(cluster_save / 'students' / 'models' / '*_0' / 'resnet8_last.pth')), 180,
             'a first checkpoint of task 0', slurm)
    subprocess.run(['scancel', '--signal=TERM', '--full', f'{job}_0'], env=slurm.env, check=True)

    wait_for(lambda: not queued(slurm, job), 240, f'job array {job} to finish', slurm)

    log = open(task_log).read()
    assert 'interrupted by SIGTERM' in log and f'requeueing {job}_0' in log, log
    # the task starts again and resumes its pack (a member stopped before its first epoch's end starts afresh)
    assert '(start 2)' in log and re.search(r'resuming \([12] interrupted, 0 finished', log), log
    assert log.rstrip().endswith('exit status 0'), log
    assert open(task_log.replace('_0.log', '_1.log')).read().rstrip().endswith('exit status 0')

    report = subprocess.run([sys.executable, 'tools/report.py', '--save_root', str(cluster_save)], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stderr
    assert 'unfinished' not in report.stdout.lower() + report.stderr.lower(), report.stdout
    rows = [line for line in report.stdout.splitlines() if line.startswith('| kd') or line.startswith('| dist')]
    assert len(rows) == 4 and all('(2)' in row for row in rows), report.stdout  # last and best epoch tables

    assert_same_weights(last_weights(local), last_weights(cluster_save))
    assert len(last_weights(cluster_save)) == 4


def test_srun_step_gets_the_stop_signal_and_the_job_requeues(slurm, tmp_path):
    """requeueable around srun (the multi-node template's torchrun): a SIGTERM to the batch shell reaches the
    step's processes as SIGTERM (srun itself would SIGKILL them), and the job starts again."""
    batch = tmp_path / 'step.sbatch'
    batch.write_text('#!/usr/bin/env bash\n#SBATCH --requeue\n#SBATCH --open-mode=append\n'
                     'source scripts/slurm/requeue.sh\n'
                     'if [ "${SLURM_RESTART_COUNT:-0}" -ge 1 ]; then echo started again; exit 0; fi\n'
                     'requeueable srun sh -c \'trap "echo step got TERM; exit 143" TERM; echo step started; '
                     'while :; do sleep 0.1; done\'\n')
    out = tmp_path / 'step.log'
    job = subprocess.run(['sbatch', '--parsable', f'--chdir={REPO}', '-o', str(out), str(batch)], env=slurm.env,
                         capture_output=True, text=True, check=True).stdout.strip()
    wait_for(lambda: out.exists() and 'step started' in out.read_text(), 60, 'the step to start', slurm)
    subprocess.run(['scancel', '--signal=TERM', '--batch', job], env=slurm.env, check=True)

    wait_for(lambda: not queued(slurm, job), 120, f'job {job} to finish', slurm)
    log = out.read_text()
    assert 'step got TERM' in log and 'exit status 143); requeueing' in log and 'started again' in log, log
