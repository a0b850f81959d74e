"""tools/report.py: metrics.json files of a sweep become the papers' table, mean ± std over trials."""
import json
import os

import pytest

from tools import report


def write_run(root, kind, name, args, last, best, status='finished', history=None):
    folder = os.path.join(root, kind, 'models', name)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, 'metrics.json'), 'w') as f:
        json.dump(dict(status=status, epochs_done=2, last=dict(top1=last), best=dict(top1=best), args=args,
                       history=history or [dict(epoch=1, val_top1=last - 1), dict(epoch=2, val_top1=last)]), f)


def test_sweep_becomes_a_table(tmp_path, capsys):
    root = str(tmp_path)
    pair = dict(dataset='cifar100', model_t='resnet32x4', model_s='resnet8x4', gamma=0.1, alpha=0.9, beta=0.0)
    for trial, (last, best) in enumerate([(73.0, 73.5), (74.0, 74.1), (75.0, 75.2)]):
        write_run(root, 'students', f'kd{trial}', dict(pair, distill='kd', trial=str(trial)), last, best)
    write_run(root, 'students', 'crd0', dict(pair, distill='crd', gamma=1.0, alpha=0.0, beta=0.8, trial='0'),
              75.5, 75.9)
    write_run(root, 'students', 'crd1', dict(pair, distill='crd', gamma=1.0, alpha=0.0, beta=0.8, trial='1'),
              70.0, 71.0, status='running')
    write_run(root, 'teachers', 't', dict(dataset='cifar100', model='resnet32x4', trial='0'), 79.4, 79.6)
    write_run(root, 'teachers', 's', dict(dataset='cifar100', model='resnet8x4', trial='0'), 72.5, 72.7)

    report.main(['--save_root', root, '--plots', str(tmp_path / 'curves')])
    out = capsys.readouterr().out
    last_table = out.split('## Top-1 (%), best epoch')[0]
    # mean of 73, 74, 75 is 74.00, sample std 1.00, over 3 trials
    assert '| kd (r=0.1, a=0.9, b=0) | 74.00 ± 1.00 (3) |' in last_table
    assert '| crd (r=1, a=0, b=0.8) | 75.50 |' in last_table  # the unfinished trial is left out
    assert '| Teacher | 79.40 |' in last_table and '| Student | 72.50 |' in last_table
    assert 'resnet32x4 → resnet8x4' in last_table
    best_table = out.split('## Top-1 (%), best epoch')[1]
    assert '| kd (r=0.1, a=0.9, b=0) | 74.27 ± 0.86 (3) |' in best_table
    assert 'running after 2 epochs' in out
    assert os.path.getsize(tmp_path / 'curves' / 'cifar100_resnet32x4_to_resnet8x4.png') > 1000


def test_empty_save_root_is_an_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        report.main(['--save_root', str(tmp_path)])
    assert stop.value.code == 2
    assert 'no runs' in capsys.readouterr().err
