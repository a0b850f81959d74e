"""The benchmark scripts run (in their tiny modes only: no timings are checked), and the table arithmetic
counts what the packs share."""
import os
import subprocess
import sys

from conftest import REPO

sys.path.insert(0, os.path.join(REPO, 'bench'))
import table_cost  # noqa: E402


def test_gpu_check_dry_mode_runs_every_step_on_the_cpu(tmp_path):
    """DRY=1: the KD step against the plain loop, the precisions, the packs (bench_pack.py --smoke), the
    compiled step (eager backend) and the epoch extrapolation (epoch_time.py --smoke), into one report."""
    env = dict(os.environ, DRY='1', OUT=str(tmp_path), PYTHON=sys.executable, OMP_NUM_THREADS='1')
    result = subprocess.run(['bash', os.path.join(REPO, 'bench', 'gpu_check.sh')], env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    report = (tmp_path / 'gpu_check.txt').read_text()
    for step in ('kd_vs_plain', 'kd_fp32', 'kd_bf16', 'packs', 'compiled_kd', 'compiled_pack', 'epochs'):
        assert f'== {step}:' in report, step
        assert (tmp_path / f'{step}.json').is_file(), step
    assert 'failed' not in report and 'stopped at' not in report, report
    assert 'pack of 4 (kd crd dkd simkd)' in report and 'pack of 8' in report and 'one after another' in report
    assert '240 epochs in' in report and 'speed-up' in report


def test_table_arithmetic_of_the_simkd_table():
    """33 runs of 240 epochs; with packs of 8, five processes whose teacher sees every image once an
    epoch (no member there reads pre-ReLU maps or another view), plus one test-set pass each."""
    rows = table_cost.main(['--scripts', 'run_simkd_table.sh'])
    one, pack = rows['run_simkd_table.sh']
    epoch = 240 * table_cost.TRAIN
    assert (one['runs'], one['processes'], pack['runs'], pack['processes']) == (33, 33, 33, 5)
    assert one['teacher_images'] == 33 * (epoch + table_cost.TEST)
    assert pack['teacher_images'] == 5 * (epoch + table_cost.TEST)
    assert one['student_flops'] == pack['student_flops']


def test_a_pack_counts_a_second_pass_for_pre_relu_maps_and_one_per_view():
    from distiller_zoo import TeacherRequest
    assert table_cost.passes([TeacherRequest(), TeacherRequest(True)]) == 1
    assert table_cost.passes([TeacherRequest(True, True)]) == 1
    assert table_cost.passes([TeacherRequest(), TeacherRequest(True, True)]) == 2
    assert table_cost.passes([TeacherRequest(views=('strong',)), TeacherRequest(True)]) == 2
