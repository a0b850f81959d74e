"""tools/eval.py and a teacher run on fake CIFAR-100 files, both through the command line."""
import json
import os

import pytest
import torch

from conftest import run_script, run_script_forked

pytestmark = pytest.mark.slow  # every test here runs a script's command line


def test_cifar_teacher_cli_then_eval_agree(tmp_path, fake_cifar):
    train = run_script('train_teacher.py', '--model', 'resnet8', '--epochs', '1', '--batch_size', '32',
                       '--data_folder', fake_cifar, '--save_root', tmp_path / 'save', cwd=tmp_path)
    assert train.returncode == 0, train.stderr
    assert 'teacher resnet8: last top-1' in train.stdout
    folder = tmp_path / 'save' / 'teachers' / 'models' / 'resnet8_vanilla'  # CIFAR-100 trial 0: short name
    metrics = json.load(open(folder / 'metrics.json'))
    assert metrics['status'] == 'finished' and metrics['epochs_done'] == 1
    checkpoint = torch.load(folder / 'resnet8_best.pth', weights_only=True)
    assert checkpoint['model']['fc.weight'].shape == (100, 64)

    # the architecture is parsed from the folder name, as RepDistiller does
    result = run_script('tools/eval.py', '--path', folder / 'resnet8_best.pth', '--data_folder', fake_cifar,
                        '--json', cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    evaluated = json.loads(result.stdout.strip().splitlines()[-1])
    assert evaluated['model'] == 'resnet8'
    assert evaluated['top1'] == metrics['best']['top1'] and evaluated['top5'] == metrics['best']['top5']


def test_eval_errors_are_one_line(tmp_path, fake_cifar):
    torch.save({'model': {'w': torch.zeros(2)}}, tmp_path / 'odd.pth')
    cases = [
        (['--path', tmp_path / 'missing.pth', '--model', 'resnet8'], 'does not exist'),
        (['--path', tmp_path / 'odd.pth'], 'cannot tell the architecture'),
        (['--path', tmp_path / 'odd.pth', '--model', 'resnet8'], 'does not fit resnet8'),
        (['--path', tmp_path / 'odd.pth', '--model', 'resnet9'], "unknown model 'resnet9'"),
        (['--path', tmp_path / 'odd.pth', '--model', 'ResNet18'], 'ImageNet architecture'),
    ]
    for argv, expected in cases:
        result = run_script_forked('tools/eval.py', *argv, '--data_folder', fake_cifar, cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        assert 'Traceback' not in result.stderr and expected in result.stderr, result.stderr


def test_list_models():
    result = run_script('tools/eval.py', '--list-models', cwd=os.getcwd())
    names = result.stdout.split()
    assert len(names) == 36 and 'resnet32x4' in names and 'ShuffleV2_0_5' in names and 'hcgnet_A2' in names
