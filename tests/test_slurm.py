"""A tiny packed table through a real single-node Slurm (tests/slurm_cluster.py starts it): SLURM=1 submits
one array task per pack, one task is sent SIGTERM mid-run and requeues itself, every task finishes, the
report reads every cell, and the weights equal those of the same table run locally (CPU, --deterministic).
Skipped, with the reason, where Slurm and munge are not installed (.ci/run installs them) or not as root."""
import glob
import re
import subprocess
import sys
import time

import pytest

import slurm_cluster
from conftest import REPO
from tiny_tables import assert_same_weights, last_weights, run_table, table_env

pytestmark = pytest.mark.slow


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

    # Slurm holds a requeued job back for a while (its BeginTime); let it start at once
    def state(task):
        return subprocess.run(['squeue', '-h', '-j', task, '-o', '%T'], env=slurm.env, capture_output=True,
                              text=True).stdout.strip()
    wait_for(lambda: state(f'{job}_0') == 'PENDING', 120, f'the requeue of {job}_0', slurm)
    subprocess.run(['scontrol', 'update', f'JobId={job}_0', 'StartTime=now'], env=slurm.env, check=True)

    def done():
        queue = subprocess.run(['squeue', '-h', '-j', job], env=slurm.env, capture_output=True, text=True)
        return queue.returncode == 0 and not queue.stdout.strip()
    wait_for(done, 240, f'job array {job} to finish', slurm)

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
