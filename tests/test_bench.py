"""The benchmark scripts run (in their tiny modes only: no timings are checked), and the table arithmetic
counts what the packs share."""
import os
import subprocess
import sys

import pytest

from conftest import REPO

sys.path.insert(0, os.path.join(REPO, 'bench'))
import table_cost  # noqa: E402


@pytest.mark.slow
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


def test_every_cifar_table_script_is_counted():
    names = [os.path.basename(p) for p in table_cost.table_scripts()]
    for script in ('run_cifar_distill.sh', 'run_mdistiller_dkd_reviewkd.sh', 'run_nd_table.sh',
                   'run_norm_tables.sh', 'run_ntce_tables.sh', 'run_simkd_table.sh'):
        assert script in names


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


def test_a_pack_counts_a_second_pass_for_both_kinds_of_maps_and_one_per_view():
    """The pack's own SharedTeacher, run on a counting stand-in: what a pack (or a single run) costs per image."""
    from distiller_zoo import TeacherRequest
    count = table_cost.images_per_image
    assert count([TeacherRequest(), TeacherRequest(True)]) == 1
    assert count([TeacherRequest(True, True)]) == 1
    assert count([TeacherRequest(), TeacherRequest(True, True)]) == 1  # logits-only members read the pre-ReLU pass
    assert count([TeacherRequest(True), TeacherRequest(True, True)]) == 2  # post- and pre-ReLU maps: two passes
    assert count([TeacherRequest(views=('strong',)), TeacherRequest(True)]) == 2
    assert count([TeacherRequest(True, view='rotations')]) == 4  # SSKD's four rotated views
    assert count([TeacherRequest(True, view='rotations'), TeacherRequest()]) == 5
    assert count([TeacherRequest(needed=False)]) == 0
    assert count([TeacherRequest(needed=False), TeacherRequest()]) == 1


def test_norms_ce_only_rows_cost_no_teacher_pass_but_the_test_set():
    """NORM's CE-only rows (-a 0 -b 0) never run the teacher in training; the other NORM rows do, once an image."""
    processes = [p for p in table_cost.commands(os.path.join(REPO, 'scripts', 'run_norm_tables.sh'), PACK='0')
                 if p.dataset == 'cifar100' and p.distill == 'norm']
    ce_only = [p for p in processes if p.alpha == 0 and p.beta == 0]
    distilled = [p for p in processes if p.beta > 0]
    assert ce_only and distilled
    for p in ce_only:
        assert table_cost.teacher_images(p) == table_cost.TEST
    for p in distilled:
        assert table_cost.teacher_images(p) == p.epochs * table_cost.TRAIN + table_cost.TEST


def test_a_students_training_images_count_the_views_it_learns_on():
    """KD's student learns on one view, NTCE-KD's on two (the strong one too), SSKD's on four rotations."""
    from types import SimpleNamespace

    def run(distill):
        return SimpleNamespace(distill=distill, gamma=1.0, alpha=1.0, beta=1.0, model_s='resnet8', epochs=1)
    one = table_cost.forward_flops('resnet8')
    for distill, views in (('kd', 1), ('ntce', 2), ('sskd', 4)):
        assert table_cost.student_flops(run(distill)) == one * (3 * table_cost.TRAIN * views + table_cost.TEST)
