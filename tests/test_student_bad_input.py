"""train_student.py's bad inputs: one line naming the problem and the fix, exit 2, no traceback,
nothing under save/ changed."""
import os
import shutil

import pytest
import torch

from conftest import run_script_forked
from test_bad_input import snapshot


@pytest.fixture(scope='module')
def setup(tmp_path_factory, digits_teacher):
    root = tmp_path_factory.mktemp('student_bad')
    shutil.copytree(digits_teacher, root / 'save')  # the session's 1-epoch resnet8 digits teacher
    teacher = root / 'save' / 'teachers' / 'models' / 'resnet8_vanilla_digits_trial_0' / 'resnet8_best.pth'
    (root / 'corrupt_vanilla').mkdir()
    (root / 'corrupt_vanilla' / 'resnet8_best.pth').write_bytes(teacher.read_bytes()[:4000])
    (root / 'resnet20_vanilla').mkdir()
    torch.save({'model': torch.load(teacher, weights_only=True)['model']},
               root / 'resnet20_vanilla' / 'mislabelled.pth')  # a resnet8 under a resnet20 folder
    (root / 'notes_vanilla').mkdir()
    torch.save({'epoch': 3, 'history': [1, 2]}, root / 'notes_vanilla' / 'x.pth')
    return root, teacher


BASE = ['--dataset', 'digits', '--epochs', '1', '--model_s', 'resnet8']
CASES = {
    'no --path_t': ([], 'no teacher given; pass --path_t'),
    'missing teacher': (['--path_t', '{root}/resnet8_vanilla/nope.pth'], 'does not exist'),
    'teacher is a folder': (['--path_t', '{root}/resnet20_vanilla'],
                            "resnet20_vanilla' is a directory holding mislabelled.pth; pass the checkpoint file"),
    'corrupt teacher': (['--path_t', '{root}/corrupt_vanilla/resnet8_best.pth', '--model_t', 'resnet8'],
                        'is corrupt or truncated'),
    'not a classification checkpoint': (['--path_t', '{root}/notes_vanilla/x.pth', '--model_t', 'resnet8'],
                                        'holds no model weights'),
    'unparseable teacher name': (['--path_t', '{root}/corrupt_vanilla/resnet8_best.pth'],
                                 "cannot tell the teacher's architecture"),
    'teacher of another architecture': (['--path_t', '{root}/resnet20_vanilla/mislabelled.pth'],
                                        'does not fit resnet20 (it looks like resnet8)'),
    'unknown distill': (['--path_t', '{teacher}', '--distill', 'crdd'], "unknown --distill 'crdd' (did you mean crd?)"),
    'negative weight': (['--path_t', '{teacher}', '-b', '-1'], 'the loss weight -b cannot be negative'),
    'unknown student': (['--path_t', '{teacher}', '--model_s', 'resnet9'], "unknown model 'resnet9' for --model_s"),
    'hint layer out of range': (['--path_t', '{teacher}', '--distill', 'hint', '--hint_layer', '7'],
                                '--hint_layer 7 is out of range'),
    'nce_k too large': (['--path_t', '{teacher}', '--distill', 'crd', '--nce_k', '5000'], '--nce_k'),
}


@pytest.mark.slow
@pytest.mark.parametrize('case', sorted(CASES))
def test_train_student_bad_input(case, setup):
    root, teacher = setup
    argv = [a.format(root=root, teacher=teacher) for a in CASES[case][0]]
    before = snapshot(root)
    result = run_script_forked('train_student.py', *BASE, *argv, '--save_root', root / 'save', cwd=root)
    assert result.returncode == 2, result.stdout + result.stderr
    assert 'Traceback' not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith('error: ') and CASES[case][1] in last, result.stderr
    assert snapshot(root) == before
    assert not os.path.exists(root / 'save' / 'students')
