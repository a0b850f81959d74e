"""tools/report.py reads every kind of run the scripts write: one real, tiny run of each on the digits (a
teacher, students alone and packed, SSKD, L-MCL, MCL, ONE, a --baseline), and a row for every registered
method from records written by train_student's own parser and logger."""
import json
import shutil

import pytest

import train_online_mcl
import train_student
from conftest import small_digits_fixture
from distiller_zoo import DISTILLERS
from test_report import student_run, table
from tools import report

small_digits = small_digits_fixture(96, 40)
ONLINE = ['--dataset', 'digits', '--epochs', '1', '--batch_size', '16', '--deterministic']


@pytest.mark.slow
def test_one_run_of_each_kind_reads_back(tmp_path, digits_teacher, capsys):
    root = tmp_path / 'save'
    shutil.copytree(digits_teacher, root)  # teachers/models/resnet8_vanilla_digits_trial_0: a teacher run
    teacher = str(root / 'teachers' / 'models' / 'resnet8_vanilla_digits_trial_0' / 'resnet8_best.pth')
    student = ['--path_t', teacher, '--dataset', 'digits', '--epochs', '1', '--batch_size', '32',
               '--deterministic', '--save_root', str(root)]
    train_student.main([*student, '--model_s', 'resnet8', '--distill', 'kd'])
    train_student.main([*student, '--model_s', 'resnet8,resnet8', '--distill', 'dkd,dist'])  # a pack
    train_student.main([*student, '--model_s', 'resnet8', '--distill', 'sskd', '--init_epochs', '1',
                        '--t_milestones', '1'])
    for arch, flags in (('lmcl_resnet32_cifar', []), ('lmcl_resnet32_cifar', ['--no-meta']),
                        ('resnet32_cifar', ['--baseline']), ('one_resnet8', [])):
        train_online_mcl.main(['--arch', arch, *ONLINE, *flags, '--save_root', str(root)])
    capsys.readouterr()
    tables = report.main(['--save_root', str(root)])
    out, err = capsys.readouterr()
    assert err == '' and 'Not finished' not in out
    scratch = [t for t in tables if t.kind == 'teacher']
    assert len(scratch) == 1 and list(scratch[0].rows) == ['resnet8']
    students = [t for t in tables if t.kind == 'student']
    labels = {label for t in students for label in t.rows}
    assert labels == {'Teacher', 'kd', 'dkd', 'dist', 'sskd init_epochs=1 t_milestones=1'}, labels
    online = [t for t in tables if t.kind == 'online']
    rows = {label: [t.headers[c] for c in t.columns if t.rows[label].get(c)] for t in online for label in t.rows}
    assert rows['one'] == ['one_resnet8 ×3 (resnet8)']
    assert rows['lmcl'] == rows['mcl'] == ['lmcl_resnet32_cifar ×2 (resnet32)']
    baselines = [t for t in tables if t.kind == 'baseline']
    assert [list(t.rows) for t in baselines] == [['resnet32']]
    one = next(t for t in online if 'one' in t.rows)
    column = next(c for c in one.columns if one.rows['one'].get(c))
    metrics = json.load(open(root / 'online' / 'models' / 'one_resnet8_x3_one_digits_trial_0' / 'metrics.json'))
    assert [e.values['last'] for e in one.rows['one'][column]] == [metrics['last']['top1']]
    assert [e.values['best'] for e in one.rows['one'][column]] == [metrics['best']['top1']]


def test_every_registered_method_has_its_row(tmp_path, capsys):
    root = str(tmp_path)
    for i, name in enumerate(sorted(DISTILLERS)):
        student_run(root, [50.0, 50.0 + i / 10], '--distill', name)
    tables = report.main(['--save_root', root])
    students = table(tables, 'student', 'epochs=2')
    column = students.columns[0]
    for i, name in enumerate(sorted(DISTILLERS)):
        row = next(label for label in students.rows if label.split()[0] == name)
        assert [e.values['last'] for e in students.rows[row][column]] == [50.0 + i / 10], name
