"""Every bad input ends with one line naming the problem and the fix, exit status 2, no traceback,
and nothing under save/ changed."""
import hashlib
import os
import shutil

import pytest

from conftest import run_script, run_script_forked


def snapshot(root):
    """File -> content hash, for every file under root."""
    files = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            files[path] = hashlib.md5(open(path, 'rb').read()).hexdigest()
    return files


@pytest.fixture(scope='module')
def trained(tmp_path_factory, digits_teacher):
    """One finished 1-epoch digits teacher to point bad commands at (a copy of the session's)."""
    root = tmp_path_factory.mktemp('trained')
    shutil.copytree(digits_teacher, root / 'save')
    folder = root / 'save' / 'teachers' / 'models' / 'resnet8_vanilla_digits_trial_0'
    corrupt = root / 'corrupt.pth'
    corrupt.write_bytes(open(folder / 'resnet8_best.pth', 'rb').read()[:5000])  # truncated
    return root, folder, corrupt


DIGITS = ['--dataset', 'digits', '--epochs', '1']

CASES = {
    'unknown model': (['--model', 'resnet33', *DIGITS], "unknown model 'resnet33' for --model; did you mean"),
    'zero epochs': (['--model', 'resnet8', '--dataset', 'digits', '--epochs', '0'],
                    '--epochs must be a positive number'),
    'negative epochs': (['--model', 'resnet8', '--dataset', 'digits', '--epochs', '-3'],
                        '--epochs must be a positive number'),
    'falling decay epochs': (['--model', 'resnet8', *DIGITS, '--lr_decay_epochs', '210,150'],
                             '--lr_decay_epochs must be a comma-separated rising list'),
    'non-integer decay epochs': (['--model', 'resnet8', *DIGITS, '--lr_decay_epochs', '150,x'],
                                 '--lr_decay_epochs must be a comma-separated rising list'),
    'negative weight decay': (['--model', 'resnet8', *DIGITS, '--weight_decay', '-1'],
                              '--weight_decay cannot be negative'),
    'existing run': (['--model', 'resnet8', *DIGITS], 'already holds a run; continue it with --resume auto'),
    'resume finished run': (['--model', 'resnet8', *DIGITS, '--resume', 'auto'],
                            'already finished 1 of 1 epochs; nothing to resume'),
    'resume corrupt': (['--model', 'resnet8', *DIGITS, '--trial', '9', '--resume', '{corrupt}'],
                       'is corrupt or truncated'),
    'resume other architecture': (['--model', 'resnet20', *DIGITS, '--epochs', '2', '--resume',
                                   '{folder}/resnet8_last.pth'],
                                  'does not fit resnet20 (it looks like resnet8); pass the architecture it was trained '
                                  'with'),
    'resume missing file': (['--model', 'resnet8', *DIGITS, '--trial', '5', '--resume', '{root}/nope.pth'],
                            'does not exist'),
}


@pytest.mark.slow
@pytest.mark.parametrize('case', sorted(CASES))
def test_train_teacher_bad_input(case, trained):
    root, folder, corrupt = trained
    argv, expected = CASES[case]
    argv = [a.format(corrupt=corrupt, folder=folder, root=root) for a in argv]
    before = snapshot(root)
    result = run_script_forked('train_teacher.py', *argv, '--save_root', root / 'save', cwd=root)
    assert result.returncode == 2, result.stderr
    assert 'Traceback' not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith('error: ') and expected in lines[-1], result.stderr
    assert snapshot(root) == before


@pytest.mark.slow
def test_unwritable_save_folder(tmp_path):
    blocker = tmp_path / 'a_file'
    blocker.write_text('not a folder')
    result = run_script('train_teacher.py', '--model', 'resnet8', *DIGITS, '--save_root', blocker / 'save',
                        cwd=tmp_path)
    assert result.returncode == 2 and 'Traceback' not in result.stderr
    assert "cannot write to" in result.stderr and '--save_root' in result.stderr


@pytest.mark.slow
def test_missing_cifar_offline_names_the_folder(tmp_path):
    result = run_script('train_teacher.py', '--model', 'resnet8', '--epochs', '1', '--data_folder',
                        tmp_path / 'nodata', '--save_root', tmp_path / 'save', cwd=tmp_path)
    assert result.returncode == 2 and 'Traceback' not in result.stderr
    assert 'cifar-100-python' in result.stderr and str(tmp_path / 'nodata') in result.stderr
    assert not (tmp_path / 'save').exists()
